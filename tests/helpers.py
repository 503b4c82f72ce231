"""Plain helpers shared by the test files (fixtures live in conftest.py).

A test file imports what it needs from here, never from another test file: importing a test module
runs its module-level code a second time under another name and makes one test file's edits break
another (tests/test_layout_rules.py enforces this). benchmarks/storage.py and benchmarks/soak.py
build their sweep from ``tiny_spec`` too.

Most helpers read a sweep folder as ``pielab sweep --out DIR`` writes it: ``trials/<id>/result.json``,
``trials/<id>/metrics.csv`` and Tune's per-trial journal ``tune/<id>/epochs.log`` (every start with the
checkpoint it resumed from, every epoch trained as it goes to Tune's report).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# The local address of a socket on loopback, as ``ss`` prints it (IPv4, IPv6, IPv4-mapped IPv6).
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::1\]|\[::ffff:127\.\d+\.\d+\.\d+\]):\d+$")


# --------------------------------------------------------------------------- a sweep to run


def tiny_spec(cifar_path: str | None, *, name: str, num_trials: int = 3, epochs: int = 3, max_failures: int = 2,
              **over) -> dict:
    """A sweep spec whose trials take about a second an epoch on one CPU: a width-4 ResNet-10 on 200
    CIFAR-10 images, random search over the learning rate, FIFO, two trials at a time, W&B off.

    ``cifar_path`` None leaves ``data.path`` out (the data comes from ``PIELAB_DATA_DIR`` or ``--set``).
    Keyword arguments replace whole top-level keys of the spec."""
    spec = {
        "name": name,
        "base": {
            "model": {"name": "myresnet34", "width": 4, "depth": 10},
            "data": {"path": cifar_path, "train_size": 200, "val_size": 100, "test_size": 100},
            "train": {"epochs": epochs, "batch_size": 50, "device": "cpu", "threads": 1},
        },
        "space": {"parameters": {"train.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True}}},
        "search": {"algorithm": "random", "seed": 0},
        "scheduler": {"name": "fifo"},
        "num_trials": num_trials,
        "max_concurrent": 2,
        "max_failures": max_failures,
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"wandb": False},
    }
    if cifar_path is None:
        del spec["base"]["data"]["path"]
    spec.update(over)
    return spec


def sweep_env(root: Path, **extra: str) -> dict[str, str]:
    """This process's environment (PYTHONPATH included: the checkout under test runs) with HOME at
    ``root/home`` and no injected faults, then ``extra``."""
    env = dict(os.environ)
    env["HOME"] = str(root / "home")  # Ray's auth token and anything else written under HOME
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    env.pop("PIELAB_FAULTS", None)
    env.update(extra)
    return env


def start_sweep(cmd: list[str], spec: dict, root: Path, *, env: dict[str, str] | None = None,
                args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, Path]:
    """``cmd sweep root/spec.yaml --out root/sweep *args`` started; (the process, the sweep folder)."""
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = root / "sweep"
    proc = subprocess.Popen([*cmd, "sweep", str(spec_path), "--out", str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or sweep_env(root))
    return proc, out


def run_sweep(cmd: list[str], spec: dict, root: Path, *, env: dict[str, str] | None = None,
              timeout: float = 900) -> SimpleNamespace:
    """``start_sweep`` run to its end: ``dir``, ``rc``, ``stdout``, ``stderr``."""
    proc, out = start_sweep(cmd, spec, root, env=env)
    stdout, stderr = proc.communicate(timeout=timeout)
    return SimpleNamespace(dir=out, rc=proc.returncode, stdout=stdout, stderr=stderr)


def ok(sweep) -> str:
    """The tails of a finished sweep's output, for an assertion message."""
    return sweep.stdout[-3000:] + sweep.stderr[-3000:]


def run_cli(cmd: list[str], *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)


def one_line_config_error(load: Callable[[Path], object], path: Path) -> str:
    """The message of the ConfigError that ``load(path)`` raises, asserted to be one line (one problem).
    Fails the test when ``load`` raises none."""
    from pielab.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        load(path)
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def assert_one_line_error(proc, fragment: str) -> str:
    """Exit 2, no traceback, one ``pielab: error:`` line on stderr holding ``fragment``; returns the line."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], err[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pielab: error: "), err[-3000:]
    assert fragment in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- reading a sweep folder


def results(sweep_dir: Path) -> dict[str, dict]:
    """Trial id -> its result.json, for every trial with one."""
    return {p.parent.name: json.loads(p.read_text()) for p in (sweep_dir / "trials").glob("*/result.json")}


def journal(sweep_dir: Path, trial_id: str) -> list[str]:
    """The lines of a trial's journal; [] before it has one."""
    path = sweep_dir / "tune" / trial_id / "epochs.log"
    return path.read_text().splitlines() if path.exists() else []


def epochs_trained(lines: list[str]) -> list[int]:
    """The epochs a journal reports, in order (an epoch trained twice shows twice)."""
    return [int(line.split()[1]) for line in lines if line.startswith("epoch ")]


# The epochs a restart may list again in its journal: the one in flight at the interruption (listed as it
# went to its report, perhaps never saved) and one more when Tune's restored experiment snapshot lags its
# newest checkpoint by one (RELIABILITY.md 3a). Where the driver survives (a lost node), only the first.
REDONE_PER_RESTART = 2


def starts(lines: list[str]) -> list[int]:
    """The checkpointed epoch each (re)start resumed after (0: from scratch)."""
    return [int(line.split("after_epoch=")[1].split()[0]) for line in lines if line.startswith("start ")]


def metrics_epochs(sweep_dir: Path, trial_id: str) -> list[int]:
    """The epochs in a trial's metrics.csv. Raises OSError before the file exists."""
    path = sweep_dir / "trials" / trial_id / "metrics.csv"
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:]]


def metrics_epochs_safe(sweep_dir: Path, trial_id: str) -> list[int]:
    """``metrics_epochs`` of a folder a running sweep writes: [] while the file is missing or half-written."""
    try:
        return metrics_epochs(sweep_dir, trial_id)
    except (OSError, ValueError, IndexError):
        return []


def snapshot(sweep_dir: Path) -> dict[str, dict]:
    """Per trial: result.json, its journal and metrics.csv text, as they are now."""
    out = {}
    for tid, res in results(sweep_dir).items():
        metrics = sweep_dir / "trials" / tid / "metrics.csv"
        out[tid] = {"result": res, "journal": journal(sweep_dir, tid),
                    "metrics": metrics.read_text() if metrics.exists() else ""}
    return out


# --------------------------------------------------------------------------- waiting


def poll_until(predicate: Callable[[], object], timeout: float, *, proc: subprocess.Popen | None = None,
               what: str = "", interval: float = 0.2) -> bool:
    """Call ``predicate`` every ``interval`` s until it is true (returns True) or ``timeout`` s pass
    (returns False). With ``proc``, an AssertionError with its output as soon as it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None:
            assert proc.poll() is None, f"the sweep ended before {what}: " + "".join(proc.communicate())[-3000:]
        time.sleep(interval)
    return False


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300, what: str = "") -> None:
    """Wait while ``proc`` runs until ``predicate()`` is true. AssertionError when ``proc`` ends first or
    after ``timeout`` s."""
    if not poll_until(predicate, timeout, proc=proc, what=what):
        raise AssertionError(f"timed out waiting for {what}")


def wait_for_another_epoch(sweep_dir: Path, proc: subprocess.Popen, what: str) -> None:
    """Wait until the sweep ``proc`` runs has recorded one more epoch (any trial) than it had at the call."""
    rows = lambda: sum(len(metrics_epochs_safe(sweep_dir, t)) for t in results(sweep_dir))  # noqa: E731
    start_rows = rows()
    wait_for(lambda: rows() > start_rows, proc, what=what)


# --------------------------------------------------------------------------- processes and sockets


def process_tree(root_pid: int) -> set[int]:
    """``root_pid`` and its descendants, from /proc (parent pid is field 4 of /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_sockets(pids: set[int]) -> set[tuple[str, str, str]]:
    """(kind, address, process name) for every TCP listener (its local address) and TCP connection
    (both ends) owned by a process in ``pids``."""
    out = set()
    for kind, flags in (("listen", "-tlnpH"), ("conn", "-tnpH")):
        text = subprocess.run(["ss", flags], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
            if not owners & pids:
                continue
            parts = line.split()
            name = re.search(r'\(\("([^"]+)"', line)
            ends = (parts[3],) if kind == "listen" else (parts[3], parts[4])
            for address in ends:
                out.add((kind, address, name.group(1) if name else "?"))
    return out


def lease_racer(setup: str, acquire: str) -> str:
    """The program (for ``python -c``) of a driver racing others for a lease.

    argv: WHERE GO MARKS OTHERS (``where`` in the program: the lease's folder or database URL). It runs
    the statements ``setup``, spins until the time GO (so that every racer tries at the same instant),
    runs the one statement ``acquire``, which must leave the held lease in ``lease``, prints ``holder``
    and holds it until OTHERS racers have left their mark in the folder MARKS. Refused (``LeaseHeld``),
    it prints ``refused``, leaves its mark and exits 3."""
    return textwrap.dedent("""
        import os, sys, time
        from pathlib import Path
        from pielab.folder.lease import LeaseHeld
        where, go, marks, others = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
        {setup}
        while time.time() < go:
            pass
        try:
            {acquire}
        except LeaseHeld:
            print("refused", flush=True)
            (marks / f"refused-{{os.getpid()}}").touch()
            sys.exit(3)
        print("holder", flush=True)
        # Hold until every other racer has tried: on a loaded machine a late starter would otherwise find
        # the lease already released and (rightly) take it.
        deadline = time.time() + 100
        while len(list(marks.iterdir())) < others and time.time() < deadline:
            time.sleep(0.1)
        lease.release()
    """).format(setup=setup, acquire=acquire)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): a server that does not answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- a trial's checkpoints


def check_resume_past_a_deleted_checkpoint(fs, trial: str) -> None:
    """RELIABILITY.md 9b on ``fs`` (a pyarrow filesystem) under the folder ``trial``: Tune restores
    checkpoint_000001, which it had deleted before the kill; checkpoint_000002 lost its state file (a
    copy cut short), checkpoint_000003 is whole. The trainable resumes from 000003, leaves a present
    checkpoint alone, a present but corrupt one still fails the trial; with nothing later it takes the
    newest earlier one, with nothing whole at all it trains from scratch."""
    import io

    import torch
    from ray import tune

    from pielab.errors import PielabError
    from pielab.sweep.trainable import STATE_FILE, _load_state, _surviving

    def put(path: str, data: bytes) -> None:
        fs.create_dir(path.rsplit("/", 1)[0])  # a local filesystem makes no parents on its own
        with fs.open_output_stream(path) as f:
            f.write(data)

    def state(epoch: int) -> bytes:
        buf = io.BytesIO()
        torch.save({"epoch": epoch}, buf)
        return buf.getvalue()

    put(f"{trial}/checkpoint_000002/other.txt", b"x")  # a folder without the state file
    put(f"{trial}/checkpoint_000003/{STATE_FILE}", state(3))
    put(f"{trial}/checkpoint_000010/{STATE_FILE}", state(10))
    gone = tune.Checkpoint(path=f"{trial}/checkpoint_000001", filesystem=fs)
    chosen = _surviving(gone)
    assert chosen.path.rstrip("/").endswith("checkpoint_000003"), chosen.path  # the oldest later whole one
    assert _load_state(chosen) == {"epoch": 3}
    present = tune.Checkpoint(path=f"{trial}/checkpoint_000010", filesystem=fs)
    assert _surviving(present) is present
    put(f"{trial}/checkpoint_000011/{STATE_FILE}", b"not a torch file")
    corrupt = tune.Checkpoint(path=f"{trial}/checkpoint_000011", filesystem=fs)
    assert _surviving(corrupt) is corrupt
    with pytest.raises(PielabError, match="checkpoint_000011 is not a readable pielab trial state"):
        _load_state(corrupt)
    past = tune.Checkpoint(path=f"{trial}/checkpoint_000012", filesystem=fs)  # nothing later: the newest earlier
    assert _surviving(past).path.rstrip("/").endswith("checkpoint_000011")  # (corrupt: it fails as above)
    alone = f"{trial}-alone"
    put(f"{alone}/checkpoint_000000/other.txt", b"x")  # the trial's only folder holds no state
    assert _surviving(tune.Checkpoint(path=f"{alone}/checkpoint_000001", filesystem=fs)) is None  # from scratch
