"""pielab's Python API (``pielab.load_sweep``, ``run_sweep``, ``resume_sweep``, ``train``) on one real tiny sweep made
once for the module: started from Python, stopped by SIGINT (Ctrl-C) mid-run, resumed in a Ray the test started
itself, then read. Also its errors, a process that never imports Ray, a 1,000-trial folder, and the README's
"From Python" section (every name it shows is called here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

import pielab
from helpers import REPO, tiny_spec
from pielab.errors import ConfigError, PielabError, SweepInterrupted, UnknownTrial

SPACE = {"parameters": {"model.residual": {"type": "bool"},
                        "train.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True}}}


def _interrupt_after_first_epoch(folder: Path, done: threading.Event) -> None:
    """SIGINT to this process (what Ctrl-C in a shell or a notebook's interrupt sends) once a trial has reported
    an epoch: Tune's loop is running then, so the stop is its graceful one."""
    while not done.wait(0.05):
        if any(p.stat().st_size > 0 and len(p.read_text().splitlines()) > 1
               for p in folder.glob("trials/*/metrics.csv")):
            os.kill(os.getpid(), signal.SIGINT)
            return


@pytest.fixture(scope="module")
def api_sweep(tmp_path_factory, cifar_path):
    """``pielab.run_sweep`` stopped by SIGINT, then ``pielab.resume_sweep`` to the end in a Ray the caller started."""
    import ray

    root = tmp_path_factory.mktemp("api")
    folder = root / "sweep"
    spec = tiny_spec(cifar_path, name="api", num_trials=3, epochs=3, space=SPACE)
    facts = SimpleNamespace(folder=folder)
    done = threading.Event()
    watcher = threading.Thread(target=_interrupt_after_first_epoch, args=(folder, done), daemon=True)
    watcher.start()
    try:
        with pytest.raises(SweepInterrupted) as stopped:
            pielab.run_sweep(spec, overrides={"train.batch_size": 50}, out=folder, quiet=True)
    finally:
        done.set()
    facts.interrupted = stopped.value
    facts.ray_after_run = ray.is_initialized()
    facts.status_after_run = pielab.load_sweep(folder).status

    from pielab.sweep.session import start_ray  # the caller's own Ray (on 127.0.0.1, as pielab starts one)

    assert start_ray(None)
    try:
        facts.sweep = pielab.resume_sweep(folder, quiet=True)
        facts.ray_after_resume = ray.is_initialized()
    finally:
        ray.shutdown()
    return facts


def test_ctrl_c_saves_the_state_and_resume_sweep_finishes_it(api_sweep):
    stopped = api_sweep.interrupted
    assert isinstance(stopped, KeyboardInterrupt) and stopped.signal == "SIGINT"
    assert f"pielab.resume_sweep({str(api_sweep.folder)!r})" in str(stopped)
    assert api_sweep.status_after_run == "interrupted"
    assert api_sweep.ray_after_run is False  # run_sweep started Ray, so it stopped it
    assert api_sweep.ray_after_resume is True  # the caller's Ray is left running
    sweep = api_sweep.sweep
    assert isinstance(sweep, pielab.Sweep)
    assert sweep.status == "finished" and sweep.name == "api" and sweep.metric == "val/acc" and sweep.mode == "max"
    assert sweep.objectives == [] and sweep.spec["num_trials"] == 3
    trials = sweep.trials_dataframe()
    assert trials.shape[0] == 3 and set(trials["state"]) == {"completed"} and (trials["epochs"] == 3).all()


def test_trials_dataframe_and_history(api_sweep):
    sweep = pielab.load_sweep(api_sweep.folder)
    trials = sweep.trials_dataframe()
    for column in ("trial_id", "state", "reason", "model.name", "model.depth", "model.residual", "train.lr", "seed",
                   "val/acc", "best_epoch", "test_acc", "epochs", "wall_s", "train_time_s", "cpu", "gpu", "rank"):
        assert column in trials.columns, column
    assert trials["model.depth"].eq(10).all() and trials["cpu"].eq(1.0).all()
    assert trials["val/acc"].between(0, 1).all() and trials["test_acc"].between(0, 1).all()
    history = sweep.history()
    assert list(history.columns[:2]) == ["trial_id", "epoch"] and "val/acc" in history and "train/loss" in history
    assert len(history) == 9 and set(history["trial_id"]) == set(trials["trial_id"])
    one = sweep.history(trials["trial_id"][0])
    assert list(one["epoch"]) == [1, 2, 3]


def test_best_trial_top_summary_and_config(api_sweep, tmp_path):
    sweep = pielab.load_sweep(str(api_sweep.folder))
    best = sweep.best_trial
    top = sweep.top(2)
    assert best["trial_id"] == top["trial_id"][0] and best["rank"] == 1 and len(top) == 2
    assert top["val/acc"].is_monotonic_decreasing
    status = json.loads((api_sweep.folder / "status.json").read_text())
    assert best["trial_id"] == status["best"]["trial_id"]  # the best trial `pielab status` names
    summary = sweep.summary()
    assert {"val_acc_mean", "val_acc_sd", "test_acc_mean", "n_seeds"} <= set(summary.columns)
    assert summary["n_seeds"].eq(1).all()
    assert sweep.pareto_front().empty  # a single-objective sweep has a best trial, not a front
    config = sweep.config(best["trial_id"])
    assert config["model"]["residual"] == best["model.residual"] and config["train"]["lr"] == best["train.lr"]
    summary_of_run = pielab.train(config, out=tmp_path / "run")
    assert summary_of_run["epochs_run"] == 3 and summary_of_run["run_dir"] == tmp_path / "run"
    assert abs(summary_of_run["best_val_acc"] - best["best_val_acc"]) < 1e-9  # the trial, retrained
    with pytest.raises(PielabError, match="already holds a run"):
        pielab.train(config, out=tmp_path / "run")


def test_export_report_study_and_tune_path(api_sweep, tmp_path):
    sweep = pielab.load_sweep(api_sweep.folder)
    paths = sweep.export(tmp_path / "best.yaml", top=2)
    assert [p.name for p in paths] == ["best_1.yaml", "best_2.yaml"]
    assert yaml.safe_load(paths[0].read_text())["train"]["lr"] == sweep.best_trial["train.lr"]
    made = sweep.report(tmp_path / "report")
    assert made["report.html"].is_file() and made["summary.csv"].is_file()
    study = sweep.study()
    assert len(study.trials) == 3 and study.direction.name == "MAXIMIZE"
    assert Path(sweep.tune_path).is_dir() and (Path(sweep.tune_path) / "tuner.pkl").is_file()


def test_errors_are_one_line_pielab_errors(api_sweep, tmp_path, cifar_path):
    import ray

    with pytest.raises(PielabError, match="no such sweep folder"):
        pielab.load_sweep(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(PielabError, match="is a file, not a sweep folder"):
        pielab.load_sweep(tmp_path / "file.txt")
    with pytest.raises(PielabError, match="not a sweep folder"):
        pielab.load_sweep(tmp_path)
    sweep = pielab.load_sweep(api_sweep.folder)
    for call in (lambda: sweep.config("nope"), lambda: sweep.history("nope")):
        with pytest.raises(UnknownTrial, match="no trial 'nope'") as missing:
            call()
        assert isinstance(missing.value, KeyError) and "\n" not in str(missing.value)
    with pytest.raises(PielabError, match="at least 1"):
        sweep.top(0)
    with pytest.raises(ConfigError, match="num_trials"):  # checked before Ray starts, nothing made
        pielab.run_sweep(tiny_spec(cifar_path, name="bad", num_trials=0), out=tmp_path / "bad", quiet=True)
    assert not (tmp_path / "bad").exists() and not ray.is_initialized()
    with pytest.raises(PielabError, match="already exists"):
        pielab.run_sweep(tiny_spec(cifar_path, name="again"), out=api_sweep.folder, quiet=True)
    with pytest.raises(PielabError, match="no such sweep folder"):
        pielab.resume_sweep(tmp_path / "missing", quiet=True)
    with pytest.raises(PielabError, match="differs from the one this sweep was started with"):
        pielab.resume_sweep(api_sweep.folder, {"train.lr": 0.1}, quiet=True)
    with pytest.raises(ConfigError):
        pielab.train({"task": "cifar10", "model": {"name": "no-such-model"}}, out=tmp_path / "t")


def test_load_sweep_in_a_process_that_never_imports_ray(api_sweep):
    code = ("import pielab, sys; s = pielab.load_sweep(sys.argv[1]); print(s.trials_dataframe().shape); "
            "assert 'ray' not in sys.modules and 'optuna' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", code, str(api_sweep.folder)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("(3, ")


def test_a_thousand_trial_folder_reads_into_a_thousand_rows(api_sweep, tmp_path):
    """benchmarks/read_api.py times the same read (BENCHMARKS.md); here only its shape."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from read_api import thousand_trials
    finally:
        sys.path.pop(0)
    folder = thousand_trials(api_sweep.folder, tmp_path / "big", 1000)
    frame = pielab.load_sweep(folder).trials_dataframe()
    assert frame.shape[0] == 1000 and frame["trial_id"].is_unique and frame["rank"].notna().all()


def test_every_name_the_readme_shows_from_python_is_called_here():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    shown = set(re.findall(r"pielab\.(\w+)", section)) | set(re.findall(r"\bs\.(\w+)", section))
    assert {"load_sweep", "run_sweep", "resume_sweep", "train", "trials_dataframe", "history"} <= shown, shown
    here = Path(__file__).read_text()
    untested = sorted(name for name in shown if name != "errors" and f".{name}" not in here)
    assert not untested, f"README's From Python shows names no test calls: {untested}"
    assert set(pielab.__all__) >= {"load_sweep", "run_sweep", "resume_sweep", "train", "Sweep"}
    assert issubclass(pielab.errors.SweepInterrupted, KeyboardInterrupt)
    assert issubclass(pielab.errors.UnknownTrial, pielab.errors.PielabError)
    for name in pielab.__all__:
        assert getattr(pielab, name).__doc__ or name == "__version__", name
