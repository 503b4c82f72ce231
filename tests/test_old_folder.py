"""A sweep folder made by an earlier pielab (commit 855f3eb, before the folder and command packages moved),
killed mid-run, still reads, reports, exports and resumes: its pickles name the old module paths
(tests/data/README.md gives its spec and says how it was made).
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from helpers import sweep_env

OLD_FOLDER = Path(__file__).parent / "data" / "sweep_855f3eb_killed.tar.gz"


@pytest.fixture
def old_sweep(tmp_path: Path) -> Path:
    with tarfile.open(OLD_FOLDER) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "sweep"


def _ended(sweep: Path) -> dict[str, str]:
    """trial id -> its recorded end time, for the trials the old driver had finished."""
    out = {}
    for result in sorted((sweep / "trials").glob("*/result.json")):
        data = json.loads(result.read_text())
        if data.get("ended"):
            out[data["trial_id"]] = data["ended"]
    return out


def test_the_pickles_name_the_old_module_paths():
    """What makes this folder a test of the aliases: its Tune state names modules by their old paths."""
    with tarfile.open(OLD_FOLDER) as tar:
        tuner_pkl = tar.extractfile("sweep/tune/tuner.pkl").read()
    for name in (b"pielab.sweep.search", b"pielab.sweep.space", b"pielab.sweep.recorder", b"pielab.sweep.compat"):
        assert name in tuner_pkl, name


def test_an_old_folder_loads_from_python(old_sweep):
    """pielab.load_sweep (issue 24) reads the previous release's killed folder as `pielab status` does."""
    import pielab

    sweep = pielab.load_sweep(old_sweep)
    trials = sweep.trials_dataframe()
    assert trials.shape[0] == 4 and sweep.status == "interrupted", trials
    assert sorted(trials["state"]) == ["completed", "completed", "running", "running"]
    assert sweep.best_trial["state"] == "completed" and sweep.config(sweep.best_trial["trial_id"])["train"]["epochs"] == 4
    assert set(sweep.history()["trial_id"]) == set(trials["trial_id"])


@pytest.mark.slow
def test_an_old_killed_folder_reads_reports_exports_and_resumes(old_sweep, tmp_path, shared_data_dir, pielab_exe):
    env = sweep_env(tmp_path, PIELAB_DATA_DIR=str(shared_data_dir))
    before = _ended(old_sweep)
    assert len(before) == 2, before  # two trials had completed when the driver was killed

    shown = subprocess.run([*pielab_exe, "status", str(old_sweep)], capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "interrupted" in shown.stdout and "4 trials" in shown.stdout, shown.stdout
    assert "pielab resume" in shown.stdout, shown.stdout

    made = subprocess.run([*pielab_exe, "report", str(old_sweep)], capture_output=True, text=True, env=env)
    assert made.returncode == 0, made.stderr
    summary = (old_sweep / "report" / "summary.csv").read_text().splitlines()
    assert len(summary) >= 2 and (old_sweep / "report" / "report.html").is_file(), summary

    exported = subprocess.run([*pielab_exe, "export", str(old_sweep)], capture_output=True, text=True, env=env)
    assert exported.returncode == 0, exported.stderr
    from pielab.config import load_config

    config = load_config(str(old_sweep / "best_configs.yaml"))
    assert config.train.epochs == 4 and config.model["depth"] == 10

    # status.json and results.csv cut short (tests/test_damaged_folder.py has the other files): the resume says
    # so and rewrites both
    for name in ("status.json", "results.csv"):
        data = (old_sweep / name).read_bytes()
        (old_sweep / name).write_bytes(data[: len(data) // 2])
    resumed = subprocess.run([*pielab_exe, "resume", str(old_sweep)], capture_output=True, text=True, env=env,
                             timeout=900)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    for name in ("status.json", "results.csv"):
        assert f"damaged: {old_sweep / name}" in resumed.stdout, resumed.stdout[-3000:]
    assert "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    status = json.loads((old_sweep / "status.json").read_text())
    assert status["finished"] is True and status["counts"]["completed"] == 4, status
    after = _ended(old_sweep)
    assert len(after) == 4 and all(after[tid] == ended for tid, ended in before.items()), (before, after)
    rows = (old_sweep / "results.csv").read_text().splitlines()
    assert len(rows) == 5, rows

    import optuna

    study = optuna.load_study(study_name=status["study"], storage=f"sqlite:///{old_sweep / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4, states
