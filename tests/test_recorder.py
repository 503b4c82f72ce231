"""The recorder callback split by concern: what Tune pickles of it is what it was before the split, a
recorder pickled then still records, and a trial's config is resolved once on the driver (when it
starts, by pielab.config.apply_params), without importing the worker module."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from pielab.folder import TrialRecord, load_records

# SweepRecorder.__getstate__ at commit 855f3eb, before the split: tuner.pkl holds exactly these.
STATE_BEFORE_THE_SPLIT = {
    "sweep_dir", "name", "base", "metric", "mode", "max_t", "num_trials", "slots", "time_budget_s", "scheduler",
    "tracking", "address", "optuna", "started_at", "resources", "budget", "objectives", "deadline", "display",
    "_runtime",
}


def _settings(tmp_path: Path, **more):
    base = {"task": "cifar10", "model": {"name": "myresnet34"}, "train": {"epochs": 2, "threads": 1}}
    return dict(name="s", base=base, metric="val/acc", mode="max", max_t=None, num_trials=2, slots=1,
                time_budget_s=None, scheduler="fifo", tracking=None, address=None,
                optuna={"url": "sqlite:///nowhere.db", "study": "s"}, **more)


def test_the_pickled_state_is_the_one_before_the_split(tmp_path):
    from pielab.sweep.recorder import SweepRecorder

    recorder = SweepRecorder(tmp_path, **_settings(tmp_path))
    recorder.setup()  # the helpers exist now, and must not travel
    state = recorder.__getstate__()
    assert set(state) == STATE_BEFORE_THE_SPLIT
    assert state["_runtime"] == {} and state["display"] is None and state["optuna"]["url"] is None


def test_a_recorder_pickled_before_the_split_still_records(tmp_path):
    """An old tuner.pkl's recorder: its __dict__ as 855f3eb pickled it (no `objectives`, `resources` or
    `budget` in the oldest ones), restored the way pickle restores it, then driven through one trial."""
    import ray.cloudpickle as cloudpickle

    from pielab.sweep.recorder import SweepRecorder
    from pielab.sweep.search import Deadline

    old = SweepRecorder.__new__(SweepRecorder)
    old.__dict__.update({k: v for k, v in _settings(tmp_path).items()},
                        sweep_dir=tmp_path, started_at=None, deadline=Deadline(None), display=None, _runtime={})
    (tmp_path / "trials").mkdir()
    recorder = pickle.loads(cloudpickle.dumps(old))
    recorder.setup()
    trial = SimpleNamespace(trial_id="t1", config={"train.lr": 0.01}, last_result={}, status="RUNNING")
    recorder.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        trial.last_result = {"epoch": epoch, "val/acc": 0.1 * epoch, "time/total_s": float(epoch)}
        recorder.on_trial_result(0, [trial], trial, trial.last_result)
    recorder.on_trial_complete(0, [trial], trial)
    trial.status = "TERMINATED"
    recorder.on_experiment_end([trial])
    rec = load_records(tmp_path)["t1"]
    assert (rec.state, rec.epochs, rec.best_value) == ("completed", 2, 0.2)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["end"] == "finished" and status["finished"] is True and status["usage"]["held_s"] >= 0
    assert "objectives" not in status and status["budget"] is None
    assert (tmp_path / "trials" / "t1" / "config.yaml").read_text().count("lr: 0.01") == 1


DRIVER = """
import sys
from types import SimpleNamespace

import pytest

import pielab.config
from pielab.sweep.recorder import SweepRecorder

calls = []
apply_params = pielab.config.apply_params
pielab.config.apply_params = lambda *a, **k: calls.append(a[1]) or apply_params(*a, **k)
base = {"task": "cifar10", "model": {"name": "myresnet34"}, "train": {"epochs": 2, "threads": 1}}
# W&B runs need the resolved config too; the tracker queues the calls until the first epoch (never, here).
recorder = SweepRecorder(sys.argv[1], name="s", base=base, metric="val/acc", mode="max", max_t=None, num_trials=1,
                         slots=1, time_budget_s=None, scheduler="fifo", address=None, optuna={"study": "s"},
                         tracking={"project": "p", "entity": None, "mode": "offline", "group": "s", "tags": []})
recorder.setup()
trial = SimpleNamespace(trial_id="t1", config={"train.lr": 0.01, "train.seed": 3}, last_result={}, status="RUNNING")
recorder.on_trial_start(0, [trial], trial)
recorder.on_trial_start(0, [trial], trial)  # started again (a retry, a restored experiment): still one resolution
print(len(calls), calls[0], "pielab.sweep.trainable" in sys.modules)
"""


@pytest.mark.slow
def test_a_trial_config_is_resolved_once_on_the_driver_without_the_worker_module(tmp_path):
    (tmp_path / "sweep" / "trials").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(DRIVER), str(tmp_path / "sweep")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, *rest = proc.stdout.split()
    assert count == "1", proc.stdout
    assert rest[-1] == "False", proc.stdout  # pielab.sweep.trainable (torch, the training loop) never imported
    assert "train.seed" in proc.stdout  # the seed is one of the sampled values the rule puts on the base


def test_a_record_before_setup_still_counts_its_time(tmp_path):
    """Tests and tools drive the recorder without Tune's setup: its helpers then start with no earlier run."""
    from pielab.sweep.recorder import SweepRecorder

    recorder = SweepRecorder(tmp_path, **_settings(tmp_path))
    recorder.records["a"] = TrialRecord("a", {}, train_time_s=1.0, state="completed")
    status = recorder.status()
    assert status["started_trials"] == 1 and status["resumes"] == [] and status["started"] is None
