"""Shared fixtures. Every test session writes only under its own temporary folder: Ray, W&B, HF datasets,
matplotlib and the pielab data cache are pointed there before anything imports them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Before the first import of helpers: its asserts then report their operands as a test file's do.
pytest.register_assert_rewrite("helpers")

from helpers import REPO  # noqa: E402

SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="pielab-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    env = {
        "PIELAB_CACHE_DIR": _SESSION_TMP / "cache",  # shared by every test: a cache built once is reused
        "WANDB_DIR": _SESSION_TMP / "wandb",
        "WANDB_CACHE_DIR": _SESSION_TMP / "wandb-cache",
        "WANDB_CONFIG_DIR": _SESSION_TMP / "wandb-config",
        "WANDB_DATA_DIR": _SESSION_TMP / "wandb-data",
        "MPLCONFIGDIR": _SESSION_TMP / "mpl",
        "HF_HOME": _SESSION_TMP / "hf",
        "TORCH_HOME": _SESSION_TMP / "torch",
        "RAY_TMPDIR": _SESSION_TMP / "ray",
    }
    for key, value in env.items():
        Path(value).mkdir(parents=True, exist_ok=True)
        os.environ[key] = str(value)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("PIELAB_DATA_DIR", None)  # tests name their data explicitly


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


# Tests that kill or signal processes (a driver's kill -9, Ctrl-C, SIGTERM, a lost node, a Slurm time limit)
# run one at a time, in one xdist group; every other test spreads over both workers (`-n 2 --dist loadgroup`
# in pyproject.toml). Under two workers, two such tests at once raced each other's timing. The rule reads
# the test files, so a new test of that kind joins the group with no list to keep: a test is in it when its
# own code sends a signal, or names a function or fixture of its module that does, or uses a helper module
# of tests/ that does (the Slurm cluster, the S3 server).
INTERRUPTS = re.compile(r"SIGKILL|SIGINT|SIGTERM|SIGUSR1|os\.kill\(|send_signal\(|\.kill\(\)|killpg")
INTERRUPT_GROUP = "interrupts"
_TOP_LEVEL_DEF = re.compile(r"^(?:async\s+)?def\s+(\w+)", re.M)


def top_level_blocks(text: str) -> dict[str, str]:
    """``{name: source}`` of a module's top-level functions, each from its ``def`` to the next one."""
    found = list(_TOP_LEVEL_DEF.finditer(text))
    return {m.group(1): text[m.start():(found[i + 1].start() if i + 1 < len(found) else len(text))]
            for i, m in enumerate(found)}


def interrupting_tests(folder: Path) -> set[tuple[str, str]]:
    """``(module stem, test function name)`` of every test in ``folder`` that belongs to the interrupts group."""
    sources = {path.stem: path.read_text() for path in folder.glob("*.py")}
    helpers = {stem for stem, text in sources.items() if not stem.startswith("test_") and INTERRUPTS.search(text)}
    grouped = set()
    for stem, text in sources.items():
        if not stem.startswith("test_"):
            continue
        blocks = top_level_blocks(text)
        imported = {h for h in helpers if re.search(rf"^\s*(?:from|import)\s+{re.escape(h)}\b", text, re.M)}
        senders = {name for name, block in blocks.items() if INTERRUPTS.search(block)}
        names = senders | imported
        for name, block in blocks.items():
            if name.startswith("test_") and (name in senders or any(
                    re.search(rf"\b{re.escape(other)}\b", block) for other in names - {name})):
                grouped.add((stem, name))
    return grouped


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every other test is its own unit, for the balance: grouped by module, the suite took 29.5 minutes on two
    # workers against 28 (a module-scoped fixture may then run on both workers; that cost less).
    grouped = interrupting_tests(Path(__file__).parent)
    for item in items:
        if (item.path.stem, getattr(item, "originalname", item.name)) in grouped:
            item.add_marker(pytest.mark.xdist_group(INTERRUPT_GROUP))


@contextlib.contextmanager
def _turn(item: pytest.Item):
    """Run ``item`` (setup, call, teardown) alone when it is marked ``exclusive``, else beside the other worker's
    tests: a reader-writer lock on two files shared by this run's workers. An exclusive test first takes the
    turnstile, so the other worker starts no new test, then waits for its current one to end."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:  # one process: every test runs alone anyway
        yield
        return
    base = Path(tempfile.gettempdir()) / f"pielab-tests-{run}"
    exclusive = item.get_closest_marker("exclusive") is not None
    with open(f"{base}.turnstile", "a") as turnstile, open(f"{base}.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if exclusive:
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    # Around the whole protocol, so that a module-scoped fixture (often a sweep) set up for the other worker's
    # next test is also held back while an exclusive test runs.
    with _turn(item):
        yield


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real CIFAR-10 and IMDB files shipped beside the repo (see ../shared/data/PROVENANCE.md)."""
    for name in ("cifar10_subset.npz", "imdb.parquet"):
        if not (SHARED_DATA / name).is_file():
            raise FileNotFoundError(f"test data missing: {SHARED_DATA / name} (the repo expects ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar_path(shared_data_dir: Path) -> str:
    return str(shared_data_dir / "cifar10_subset.npz")


@pytest.fixture(scope="session")
def imdb_path(shared_data_dir: Path) -> str:
    return str(shared_data_dir / "imdb.parquet")


@pytest.fixture
def one_thread():
    """Torch on one thread while the test runs, the former count restored after: tests share a few cores."""
    import torch  # here, not at the top: most test files never load torch in this process

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pielab_exe() -> list[str]:
    """The console script of the venv running the tests."""
    exe = Path(sys.executable).with_name("pielab")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pielab.cli"]
