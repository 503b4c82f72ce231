"""Reliability: what a sweep survives. Each test runs a real (tiny) `pielab sweep` in a subprocess and
checks the sweep folder, Tune's per-trial journal (``tune/<trial>/epochs.log``: every start with the
checkpoint it resumed from, every epoch reported) and the Optuna study.

Faults are injected with ``PIELAB_FAULTS`` (pielab/sweep/faults.py; off unless the variable is set).
The scenarios and how often each was run are in RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from pielab.sweep.folder import load_records

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- helpers


def tiny_spec(cifar_path: str, *, name: str, num_trials: int = 3, epochs: int = 3, max_failures: int = 2,
              **over) -> dict:
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
    spec.update(over)
    return spec


def sweep_env(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["HOME"] = str(root / "home")  # Ray's auth token and anything else written under HOME
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    env.pop("PIELAB_FAULTS", None)
    env.update(extra)
    return env


def start_sweep(cmd: list[str], spec: dict, root: Path, *, env: dict[str, str] | None = None,
                args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, Path]:
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = root / "sweep"
    proc = subprocess.Popen([*cmd, "sweep", str(spec_path), "--out", str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or sweep_env(root))
    return proc, out


def run_sweep(cmd: list[str], spec: dict, root: Path, *, env: dict[str, str] | None = None,
              timeout: float = 900) -> SimpleNamespace:
    proc, out = start_sweep(cmd, spec, root, env=env)
    stdout, stderr = proc.communicate(timeout=timeout)
    return SimpleNamespace(dir=out, rc=proc.returncode, stdout=stdout, stderr=stderr)


def journal(sweep_dir: Path, trial_id: str) -> list[str]:
    path = sweep_dir / "tune" / trial_id / "epochs.log"
    return path.read_text().splitlines() if path.exists() else []


def epochs_trained(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("epoch ")]


def starts(lines: list[str]) -> list[int]:
    """The checkpointed epoch each (re)start resumed after (0: from scratch)."""
    return [int(line.split("after_epoch=")[1].split()[0]) for line in lines if line.startswith("start ")]


def metrics_epochs(sweep_dir: Path, trial_id: str) -> list[int]:
    path = sweep_dir / "trials" / trial_id / "metrics.csv"
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:]]


def assert_resumed_from_checkpoint(sweep_dir: Path, trial_id: str, planned: int) -> None:
    """Every restart resumed after the last checkpointed epoch: nothing before it trained twice, at most
    the one epoch in flight redone, and the trial ends with every epoch once in metrics.csv."""
    lines = journal(sweep_dir, trial_id)
    trained = epochs_trained(lines)
    assert starts(lines)[0] == 0, lines
    done: list[int] = []
    for line in lines:
        if line.startswith("start "):
            after = int(line.split("after_epoch=")[1].split()[0])
            assert after == (done[-1] if done else 0), (trial_id, lines)  # resumed from the LAST checkpoint
        elif line.startswith("epoch "):
            done.append(int(line.split()[1]))
    assert len(trained) == len(set(trained)), (trial_id, lines)  # no epoch reported twice
    assert sorted(trained) == list(range(1, max(trained) + 1)), (trial_id, lines)
    assert metrics_epochs(sweep_dir, trial_id) == list(range(1, planned + 1))


def study_of(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def results(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (sweep_dir / "trials").glob("*/result.json")}


def ok(sweep) -> str:
    return sweep.stdout[-3000:] + sweep.stderr[-3000:]


# --------------------------------------------------------------------------- 1. trial crash: retried


@pytest.mark.slow
def test_crashed_trials_retry_from_their_last_checkpoint(tmp_path, cifar_path, pielab_exe):
    """A trial that raises, one that runs out of memory and one whose worker process is SIGKILLed,
    each at epoch 2 of 3, are retried from their epoch-1 checkpoint and complete; the others too."""
    spec = tiny_spec(cifar_path, name="crash-retry", num_trials=4, max_failures=2)
    env = sweep_env(tmp_path, PIELAB_FAULTS="raise@epoch=2;oom@epoch=2;kill@epoch=2")
    sweep = run_sweep(pielab_exe, spec, tmp_path, env=env)
    assert sweep.rc == 0, ok(sweep)
    res = results(sweep.dir)
    assert len(res) == 4 and all(r["state"] == "completed" for r in res.values()), res
    claims = {p.name.split("-")[1].split(".")[0]: p.read_text() for p in (sweep.dir / "tune" / "faults").glob("*.claim")}
    assert sorted(claims) == ["kill", "oom", "raise"] and len(set(claims.values())) == 3, claims
    for kind, tid in claims.items():
        assert res[tid]["retries"] == 1, (kind, res[tid])
        assert starts(journal(sweep.dir, tid)) == [0, 1], (kind, journal(sweep.dir, tid))
        assert_resumed_from_checkpoint(sweep.dir, tid, 3)
    for tid in set(res) - set(claims.values()):
        assert res[tid]["retries"] == 0 and starts(journal(sweep.dir, tid)) == [0]
        assert_resumed_from_checkpoint(sweep.dir, tid, 3)
    study = study_of(sweep.dir)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 4
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in study.trials)


# --------------------------------------------------------------------------- 1+2. retries exhausted, divergence


@pytest.mark.slow
def test_exhausted_retries_fail_and_divergence_is_not_retried(tmp_path, cifar_path, pielab_exe):
    """One trial raises at epoch 2 every time: after max_failures=1 retry it is failed, with the reason.
    Another's loss turns NaN at epoch 2: diverged at once (no retry), FAIL in Optuna. The sweep goes on
    (the third trial completes) and exits 0."""
    spec = tiny_spec(cifar_path, name="crash-fail", num_trials=3, max_failures=1)
    env = sweep_env(tmp_path, PIELAB_FAULTS="raise@epoch=2,times=99;nan@epoch=2")
    sweep = run_sweep(pielab_exe, spec, tmp_path, env=env)
    assert sweep.rc == 0, ok(sweep)
    res = results(sweep.dir)
    faults = sweep.dir / "tune" / "faults"
    failing = (faults / "0-raise.claim").read_text()
    diverging = (faults / "1-nan.claim").read_text()
    assert failing != diverging
    failed, diverged = res[failing], res[diverging]
    assert failed["state"] == "failed" and "injected raise fault at epoch 2" in failed["reason"], failed
    assert failed["retries"] == 1
    assert (faults / f"0-raise-{failing}.count").read_text() == "2"  # the first try and one retry
    assert starts(journal(sweep.dir, failing)) == [0, 1]  # the retry resumed after epoch 1
    assert epochs_trained(journal(sweep.dir, failing)) == [1]
    assert diverged["state"] == "diverged" and "loss is nan at epoch 2" in diverged["reason"], diverged
    assert diverged["retries"] == 0 and starts(journal(sweep.dir, diverging)) == [0]  # not retried
    others = [r for tid, r in res.items() if tid not in (failing, diverging)]
    assert [r["state"] for r in others] == ["completed"]
    by_id = {t.user_attrs["trial_id"]: t for t in study_of(sweep.dir).trials}
    assert by_id[failing].state.name == "FAIL" and by_id[diverging].state.name == "FAIL"
    assert by_id[diverging].user_attrs["end"] == "diverged"
    assert "loss is nan" in by_id[diverging].user_attrs["reason"]
    status = json.loads((sweep.dir / "status.json").read_text())
    assert status["finished"] is True
