"""A sweep folder is portable, and Ray's own tools read it.

* ``kill -9`` of ``pielab sweep``, ``mv`` of the folder, ``pielab resume NEWPATH``: every trial
  finishes (Tune's pickles hold neither the database password nor the folder's old place).
* Tune's standard per-trial results (``result.json``, ``progress.csv``, TensorBoard events) are
  there: ``ExperimentAnalysis``, ``Tuner.restore(...).get_results()`` and TensorBoard's reader see
  every trial's metrics, from the moved folder too.
"""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import subprocess
from pathlib import Path

import optuna
import pytest

from pielab.errors import PielabError
from pielab.folder import load_records
from helpers import metrics_epochs_safe, results, start_sweep, sweep_env, tiny_spec, wait_for

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- the storage pickle, in-process


def test_storage_pickle_names_no_password_and_no_folder(tmp_path):
    from pielab.sweep.search import SWEEP_DB_URL, make_storage
    from pielab.sweep.active import ActiveSweep, running

    first, moved = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    storage = make_storage(f"sqlite:///{first / 'optuna.db'}", sweep_local=True)
    optuna.create_study(study_name="a", storage=storage)
    blob = pickle.dumps(storage)
    assert str(first).encode() not in blob and SWEEP_DB_URL.encode() in blob
    first.rename(moved)
    with running(ActiveSweep(sweep_dir=moved, optuna_url=f"sqlite:///{moved / 'optuna.db'}")):
        again = pickle.loads(blob)
    assert optuna.get_all_study_names(again) == ["a"]  # the moved folder's own study
    loose = pickle.loads(blob)  # no sweep running in this process: unconnected, and says so when used
    with pytest.raises(PielabError, match="unpickled outside a running sweep"):
        optuna.get_all_study_names(loose)
    assert pickle.loads(pickle.dumps(loose)).url == SWEEP_DB_URL

    secret = make_storage(f"sqlite:///{tmp_path / 'other.db'}")  # a spec URL: kept, without any password
    secret.url = "postgresql://u:pw-123@127.0.0.1:1/db"
    state = secret.__getstate__()
    assert state["url"] == "postgresql://u@127.0.0.1:1/db"


# --------------------------------------------------------------------------- kill -9, mv, resume


def tune_results(tune_dir: Path, metric_rows: dict[str, int]) -> None:
    """Ray's ExperimentAnalysis and Tuner.restore(...).get_results() see every trial with every epoch."""
    from ray import tune
    from ray.tune import ExperimentAnalysis

    from pielab.sweep.trainable import run_trial

    frame = ExperimentAnalysis(str(tune_dir)).dataframe()
    assert sorted(frame["trial_id"]) == sorted(metric_rows), frame
    assert frame["val/acc"].notna().all()
    grid = tune.Tuner.restore(str(tune_dir), trainable=run_trial).get_results()
    assert len(grid) == len(metric_rows) and not grid.errors
    for result in grid:
        tid = Path(result.path).name
        history = result.metrics_dataframe
        assert list(history["epoch"]) == list(range(1, metric_rows[tid] + 1)), (tid, history)
    full = grid.get_dataframe()
    assert sorted(full["trial_id"]) == sorted(metric_rows) and full["val/acc"].notna().all()


def tensorboard_curves(tune_dir: Path, metric_rows: dict[str, int]) -> None:
    """TensorBoard's own reader finds each trial's val/acc curve, one point per epoch."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for tid, rows in metric_rows.items():
        acc = EventAccumulator(str(tune_dir / tid))
        acc.Reload()
        tag = "ray/tune/val/acc"
        assert tag in acc.Tags()["scalars"], acc.Tags()
        points = acc.Scalars(tag)
        assert len(points) == rows, (tid, points)
        csv_acc = [float(line.split(",")[4]) for line in
                   (tune_dir.parent / "trials" / tid / "metrics.csv").read_text().splitlines()[1:]]
        assert [round(p.value, 5) for p in points] == [round(v, 5) for v in csv_acc]


@pytest.mark.slow
def test_killed_sweep_moved_then_resumed(tmp_path, cifar_path, pielab_exe):
    """kill -9 mid-sweep, mv the folder, `pielab status` and `pielab resume` at the new place: exit 0,
    every trial ends, the study is the moved optuna.db's (no new one), nothing reached for the old
    path; then Ray's tools read the moved folder."""
    spec = tiny_spec(cifar_path, name="moved", num_trials=4, epochs=3)
    env = sweep_env(tmp_path)
    proc, out = start_sweep(pielab_exe, spec, tmp_path / "run", env=env)

    def an_epoch_done() -> bool:
        return any(len(metrics_epochs_safe(out, t)) >= 1 for t in results(out))

    wait_for(an_epoch_done, proc, what="a trial's first epoch")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    assert not out.exists()

    status = subprocess.run([*pielab_exe, "status", str(moved)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert status.returncode == 0 and "interrupted" in status.stdout, status.stdout + status.stderr
    resumed = subprocess.run([*pielab_exe, "resume", str(moved)], capture_output=True, text=True, env=env,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stdout + resumed.stderr, resumed.stderr[-3000:]
    assert not out.exists()  # nothing recreated at the old place (no new optuna.db there)
    final = json.loads((moved / "status.json").read_text())
    assert final["finished"] is True and final["sweep_dir"] == str(moved.resolve())
    records = load_records(moved)
    assert len(records) >= spec["num_trials"]
    assert all(r.state in ("completed", "failed") for r in records.values()), records
    completed = {tid: r.epochs for tid, r in records.items() if r.state == "completed"}
    assert len(completed) >= spec["num_trials"] and all(e == 3 for e in completed.values())
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{moved / 'optuna.db'}")  # its first name
    assert optuna.get_all_study_names(f"sqlite:///{moved / 'optuna.db'}") == ["sweep"]
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    assert {t.user_attrs.get("trial_id") for t in study.trials if t.state.name == "COMPLETE"} >= set(completed)

    tune_results(moved / "tune", {tid: r.epochs for tid, r in records.items() if r.epochs})
    tensorboard_curves(moved / "tune", completed)
