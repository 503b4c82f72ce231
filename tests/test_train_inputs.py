"""`pielab train` never trains on nonsense, never overwrites a user's files, never resumes onto something else.

Every input of issue 15 runs the console script in a subprocess. The data is a tiny synthetic CIFAR-10
``.npz`` (120 training and 40 test images) and the model a width-4 ResNet-10, so a training run takes a
few seconds. Each test asserts what the user sees: exit code 2, one ``pielab: error:`` line, no traceback,
and what is (not) on disk afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest


def tiny_cifar(path: Path, seed: int) -> Path:
    """A CIFAR-10 ``.npz`` in the cifar10_subset.npz layout: 12 train and 4 test images per class."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8),
             y_train=np.repeat(np.arange(10), 12), x_test=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             y_test=np.repeat(np.arange(10), 4))
    return path


SMALL = ["--set", "model.width=4", "--set", "model.depth=10", "--set", "train.epochs=1", "--set",
         "train.batch_size=32", "--set", "train.threads=1", "--set", "data.val_size=20", "--set", "data.augment=false"]


@pytest.fixture
def env(tmp_path):
    """The test's own data cache (so "nothing prepared" can be checked), PYTHONPATH kept for the worktree's code."""
    e = dict(os.environ)
    e["PIELAB_CACHE_DIR"] = str(tmp_path / "cache")
    e.pop("PIELAB_DATA_DIR", None)
    e.pop("PIELAB_CACHE_LOCK_TIMEOUT", None)
    return e


@pytest.fixture
def data_a(tmp_path) -> Path:
    return tiny_cifar(tmp_path / "a" / "cifar10.npz", seed=1)


def run(pielab_exe, *args, env, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*pielab_exe, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pielab: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def cache_entries(env) -> list[str]:
    root = Path(env["PIELAB_CACHE_DIR"])
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


# --------------------------------------------------------------------------- 1. values that make no sense

OUT_OF_RANGE = {
    "grad_clip -1 (trained uphill)": ("train.grad_clip=-1", "train.grad_clip", "> 0, or null"),
    "grad_clip 0 (never stepped)": ("train.grad_clip=0", "train.grad_clip", "> 0, or null"),
    "lr nan": ("train.lr=nan", "train.lr: must be a finite number, got nan", "> 0"),
    "lr inf": ("train.lr=inf", "train.lr: must be a finite number, got inf", "> 0"),
    "lr .inf (YAML)": ("train.lr=.inf", "train.lr: must be a finite number", "> 0"),
    "weight_decay nan": ("train.weight_decay=nan", "train.weight_decay: must be a finite number", ">= 0"),
    "seed 2**64": ("train.seed=18446744073709551616", "train.seed", "0 .. 4294967295"),
    "split_seed 2**64 (was seed 0)": ("data.split_seed=18446744073709551616", "data.split_seed", "0 .. 4294967295"),
    "negative seed": ("train.seed=-1", "train.seed", "0 .. 4294967295"),
    "threads past a C int": ("train.threads=1099511627776", "train.threads", "1 .. 2147483647"),
    "momentum nan": ("train.momentum=nan", "train.momentum", ">= 0 and < 1"),
    "model width past a C int": ("model.width=99999999999", "model.width", "0 .. 2147483647"),
    "model dropout nan": ("model.dropout=nan", "model.dropout: must be a finite number", "valid:"),
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE), ids=list(OUT_OF_RANGE))
def test_out_of_range_values_are_refused_before_anything(pielab_exe, env, data_a, tmp_path, case):
    setting, key_fragment, range_fragment = OUT_OF_RANGE[case]
    out = tmp_path / "run"
    proc = run(pielab_exe, "train", "myresnet34", *SMALL, "--set", f"data.path={data_a}", "--set", setting,
               "--out", str(out), env=env)
    line = one_line_error(proc, key_fragment, range_fragment)
    assert f"--set {setting.split('=')[0]}" in line
    assert not out.exists()
    assert cache_entries(env) == []  # refused before the data was prepared


def test_search_space_bounds_use_the_same_ranges(pielab_exe, env, data_a, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n"
                     "  train.lr: {type: float, low: -1, high: 1.0e-2}\n"
                     "  train.seed: {type: int, low: 0, high: 18446744073709551616}\n"
                     "  train.grad_clip: {type: float, low: 0.0, high: 1.0}\n")
    spec = tmp_path / "sweep.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: ranges
        base:
          model: {{name: myresnet34, width: 4, depth: 10}}
          data: {{path: {data_a}}}
        space: space.yaml
        num_trials: 2
        tracking: {{wandb: false}}
        """))
    proc = run(pielab_exe, "sweep", str(spec), "--out", str(tmp_path / "sweep"), env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any(ln.startswith(f"pielab: error: {space}:2: train.lr: low -1") and "> 0" in ln for ln in lines), lines
    assert any(ln.startswith(f"pielab: error: {space}:3: train.seed: high 18446744073709551616")
               and "0 .. 4294967295" in ln for ln in lines), lines
    assert any(ln.startswith(f"pielab: error: {space}:4: train.grad_clip: low 0") for ln in lines), lines
    assert not (tmp_path / "sweep").exists()


# --------------------------------------------------------------------------- 2. 1e-3 in a YAML file


def test_exponent_numbers_in_a_file_mean_what_they_mean_on_the_command_line(pielab_exe, env, data_a, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {{name: myresnet34, width: 4, depth: 10}}\ndata: {{path: {data_a}}}\n"
                   "train:\n  lr: 1e-3\n  weight_decay: -2e-4\n")
    from_file = one_line_error(run(pielab_exe, "train", str(bad), "--out", str(tmp_path / "x"), env=env))
    assert from_file.startswith(f"pielab: error: {bad}:5: train.weight_decay: must be >= 0, got -0.0002"), from_file
    from_set = one_line_error(run(pielab_exe, "train", "myresnet34", "--set", "train.weight_decay=-2e-4",
                                  "--out", str(tmp_path / "x"), env=env))
    assert from_set.startswith("pielab: error: --set train.weight_decay: must be >= 0, got -0.0002"), from_set

    good = tmp_path / "good.yaml"
    good.write_text(f"model: {{name: myresnet34, width: 4, depth: 10}}\ndata: {{path: {data_a}, val_size: 20}}\n"
                    "train: {lr: 1e-3, weight_decay: 1E-5, epochs: 1, batch_size: 32, threads: 1}\n")
    out = tmp_path / "run"
    proc = run(pielab_exe, "train", str(good), "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert saved["lr"] == 1e-3 and saved["weight_decay"] == 1e-5


# --------------------------------------------------------------------------- 3. resume


@pytest.fixture
def finished_run(pielab_exe, env, data_a, tmp_path) -> Path:
    """A 1-epoch run on data found through PIELAB_DATA_DIR (no data.path in its config)."""
    out = tmp_path / "run"
    proc = run(pielab_exe, "train", "myresnet34", *SMALL, "--out", str(out),
               env={**env, "PIELAB_DATA_DIR": str(data_a.parent)})
    assert proc.returncode == 0, proc.stderr
    return out


def interrupted(run_dir: Path) -> None:
    """Make a finished 1-epoch run look like a 2-epoch run stopped after its first epoch."""
    import torch

    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["config"]["train"]["epochs"] = 2
    torch.save(state, run_dir / "checkpoint.pt")


def test_resume_of_a_weights_only_checkpoint_is_one_line(pielab_exe, env, finished_run, data_a):
    shutil.copy(finished_run / "best.pt", finished_run / "checkpoint.pt")
    one_line_error(run(pielab_exe, "train", "--resume", str(finished_run),
                       env={**env, "PIELAB_DATA_DIR": str(data_a.parent)}),
                   "checkpoint.pt cannot be resumed", "weights only")


def test_resume_with_out_is_refused(pielab_exe, env, finished_run, tmp_path, data_a):
    interrupted(finished_run)
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    other = tmp_path / "other"
    one_line_error(run(pielab_exe, "train", "--resume", str(finished_run), "--out", str(other),
                       env={**env, "PIELAB_DATA_DIR": str(data_a.parent)}),
                   "drop --out")
    assert not other.exists()
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before


def test_resume_on_other_data_is_refused_and_on_the_same_data_continues(pielab_exe, env, finished_run, tmp_path,
                                                                          data_a):
    interrupted(finished_run)
    data_b = tiny_cifar(tmp_path / "b" / "cifar10.npz", seed=2)
    before = (finished_run / "checkpoint.pt").read_bytes()
    one_line_error(run(pielab_exe, "train", "--resume", str(finished_run),
                       env={**env, "PIELAB_DATA_DIR": str(data_b.parent)}),
                   "trained on CIFAR-10 file", str(data_a), str(data_b), "resume with the same data")
    assert (finished_run / "checkpoint.pt").read_bytes() == before

    proc = run(pielab_exe, "train", "--resume", str(finished_run), env={**env, "PIELAB_DATA_DIR": str(data_a.parent)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Epoch 2/2 ")


def test_resume_of_a_checkpoint_that_does_not_fit_its_model_is_one_line(pielab_exe, env, finished_run, data_a):
    import torch

    state = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    state["config"]["model"]["width"] = 8  # weights of a width-4 network
    state["config"]["train"]["epochs"] = 2
    torch.save(state, finished_run / "checkpoint.pt")
    one_line_error(run(pielab_exe, "train", "--resume", str(finished_run),
                       env={**env, "PIELAB_DATA_DIR": str(data_a.parent)}),
                   "cannot be resumed", "does not fit the model")


# --------------------------------------------------------------------------- 4. a user's files


def test_out_folder_that_is_not_empty_is_refused_unless_overwrite(pielab_exe, env, data_a, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "metrics.csv").write_text("my,metrics\n")
    (out / "summary.json").write_text('{"a finished run": "whose checkpoint.pt was deleted"}')
    args = ["train", "myresnet34", *SMALL, "--set", f"data.path={data_a}", "--out", str(out)]
    one_line_error(run(pielab_exe, *args, env=env), f"--out {out} is not empty", "--overwrite")
    assert (out / "metrics.csv").read_text() == "my,metrics\n" and sorted(os.listdir(out)) == [
        "metrics.csv", "notes.txt", "summary.json"]

    proc = run(pielab_exe, *args, "--overwrite", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (out / "notes.txt").read_text() == "my notes"  # not pielab's: kept
    assert (out / "metrics.csv").read_text().startswith("epoch,")
    assert (out / "checkpoint.pt").is_file()


def test_the_config_being_read_is_never_written_over(pielab_exe, env, data_a, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    text = (f"model: {{name: myresnet34, width: 4, depth: 10}}\ndata: {{path: {data_a}, val_size: 20}}\n"
            "train: {epochs: 1, batch_size: 32, threads: 1}\n")
    (work / "config.yaml").write_text(text)
    for extra in ([], ["--overwrite"]):
        one_line_error(run(pielab_exe, "train", "config.yaml", "--out", ".", *extra, env=env, cwd=work),
                       "the config being read")
        assert (work / "config.yaml").read_text() == text
        assert os.listdir(work) == ["config.yaml"]


# --------------------------------------------------------------------------- 5. waiting on the cache lock

HOLDER = """
import sys, time
from pielab.config import DataConfig
from pielab.data import TASKS, cache
cfg = DataConfig(path=sys.argv[1])
task = TASKS["cifar10"]
_, entry = task._locate(cfg, cache.cache_root(None))
def build(out):
    print("holding", flush=True)
    time.sleep(600)
cache.get_or_build(entry, build, task.label)
"""


def test_waiting_on_a_stopped_cache_builder_says_so_and_gives_up(pielab_exe, env, data_a, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_a)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        os.kill(holder.pid, signal.SIGSTOP)  # Ctrl-Z: it holds the lock and will never finish
        out = tmp_path / "run"
        start = time.monotonic()
        proc = run(pielab_exe, "train", "myresnet34", *SMALL, "--set", f"data.path={data_a}", "--out", str(out),
                   env={**env, "PIELAB_CACHE_LOCK_TIMEOUT": "3"}, timeout=120)
        assert time.monotonic() - start < 90
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 2, lines
        assert lines[0].startswith(f"pielab: waiting for another process (pid {holder.pid} on "
                                   f"{socket.gethostname()}, stopped: `kill -CONT {holder.pid}` resumes it) "
                                   "to finish building the CIFAR-10 cache "), lines[0]
        assert lines[0].endswith("giving up after 3 s (PIELAB_CACHE_LOCK_TIMEOUT)"), lines[0]
        assert lines[1].startswith(f"pielab: error: gave up after 3 s waiting for another process (pid {holder.pid} "), lines[1]
        assert not out.exists()
    finally:
        holder.kill()  # SIGKILL ends a stopped process too
        holder.wait(timeout=30)


# --------------------------------------------------------------------------- 6. the general rule


def test_a_run_that_fails_in_its_first_epoch_leaves_no_folder(pielab_exe, env, data_a, tmp_path):
    out = tmp_path / "run"
    proc = run(pielab_exe, "train", "myresnet34", *SMALL, "--set", f"data.path={data_a}", "--set", "train.lr=1e30",
               "--out", str(out), env=env)
    one_line_error(proc, "non-finite training loss")
    assert not out.exists()


def test_a_model_too_big_for_memory_is_one_line(pielab_exe, env, data_a, tmp_path):
    out = tmp_path / "run"
    proc = run(pielab_exe, "train", "myresnet34", *SMALL, "--set", f"data.path={data_a}",
               "--set", "model.width=1048576", "--out", str(out), env=env)
    one_line_error(proc, "does not fit in memory", "model.width")
    assert not out.exists()


def test_bad_lock_timeout_is_one_line(pielab_exe, env, data_a, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_a)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        proc = run(pielab_exe, "train", "myresnet34", *SMALL, "--set", f"data.path={data_a}", "--out",
                   str(tmp_path / "run"), env={**env, "PIELAB_CACHE_LOCK_TIMEOUT": "soon"})
        one_line_error(proc, "PIELAB_CACHE_LOCK_TIMEOUT=soon")
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_readme_gives_each_numeric_key_the_range_that_is_checked():
    """The README's configuration table and the checks are one definition: each row shows valid_range()."""
    import typing

    from pielab.config import SECTIONS
    from pielab.yamlfile import valid_range

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| `")}
    checked = 0
    for section, cls in SECTIONS.items():
        for key, tp in typing.get_type_hints(cls, include_extras=True).items():
            allowed = valid_range(tp)
            if allowed is None:
                continue
            row = rows.get(f"`{section}.{key}`")
            assert row is not None, f"README has no row for {section}.{key}"
            assert f"| {allowed}" in row, (f"{section}.{key}", allowed, row)
            checked += 1
    assert checked >= 15
