"""How a sweep ends, through the console script: exit codes, "finished", a changed spec, --resume-if-exists.

The exit codes are documented once, in pielab/cli.py (module docstring and ``--help``): 0 finished (or
the spec's time budget ended it), 1 failed, 2 bad input or refused, 128 + N for signal N.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import metrics_epochs_safe, results, start_sweep, sweep_env, tiny_spec, wait_for


def run(cmd: list[str], *args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)


def text(proc) -> str:
    return (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("pielab: error: "), text(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def an_epoch_done(out: Path) -> bool:
    return any(metrics_epochs_safe(out, t) for t in results(out))


def test_exit_codes_are_in_the_help(pielab_exe):
    for command in ("sweep", "resume"):
        proc = subprocess.run([*pielab_exe, command, "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0
        for code, word in (("0", "finished"), ("1", "failed"), ("2", "refused"), ("130", "SIGINT"),
                           ("143", "SIGTERM"), ("138", "SIGUSR1")):
            assert any(line.split()[:1] == [code] and word in line for line in proc.stdout.splitlines()), proc.stdout
    assert "--resume-if-exists" in subprocess.run([*pielab_exe, "sweep", "--help"], capture_output=True,
                                                  text=True, timeout=60).stdout


@pytest.mark.slow
def test_ctrl_c_then_edited_spec_is_refused_then_resume_finishes(tmp_path, cifar_path, pielab_exe):
    """Issue 12's scenario: Ctrl-C a 3-trial sweep, edit num_trials in SWEEP/sweep.yaml: resume is refused
    in one line naming num_trials (exit 2, before Ray starts); undone, resume finishes (exit 0, "finished",
    not "the sweep stopped before it finished"); a second resume says "already finished", exit 0; status
    of the finished sweep has no "to go"."""
    env = sweep_env(tmp_path)
    proc, out = start_sweep(pielab_exe, tiny_spec(cifar_path, name="edited", num_trials=3, epochs=2), tmp_path, env=env)
    wait_for(lambda: an_epoch_done(out), proc, what="the first epoch")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout[-3000:] + stderr[-3000:]
    assert "interrupted (Ctrl-C)" in stdout and f"pielab resume {out}" in stdout, stdout[-3000:]
    status = run(pielab_exe, "status", str(out), env=env)
    assert "interrupted" in status.stdout.splitlines()[0], status.stdout

    original = (out / "sweep.yaml").read_text()
    edited = yaml.safe_load(original)
    edited["num_trials"] = 5
    (out / "sweep.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    refused = run(pielab_exe, "resume", str(out), env=env, timeout=60)
    line = one_error_line(refused)
    assert "num_trials 3 -> 5" in line, line
    assert "Started a local Ray" not in refused.stderr  # refused before Ray starts

    (out / "sweep.yaml").write_text(original)
    resumed = run(pielab_exe, "resume", str(out), env=env)
    assert resumed.returncode == 0, text(resumed)
    assert "the sweep finished" in resumed.stdout and "stopped before it finished" not in resumed.stdout, text(resumed)
    final = json.loads((out / "status.json").read_text())
    assert final["finished"] is True and final["end"] == "finished" and final["pending"] == 0, final

    again = run(pielab_exe, "resume", str(out), env=env, timeout=120)
    assert again.returncode == 0 and "already finished" in again.stdout, text(again)
    status = run(pielab_exe, "status", str(out), env=env)
    assert status.returncode == 0 and status.stdout.splitlines()[0].endswith(": finished"), status.stdout
    assert "to go" not in status.stdout and "interrupted" not in status.stdout, status.stdout


@pytest.mark.slow
def test_time_budget_ends_as_finished_with_nothing_to_go(tmp_path, cifar_path, pielab_exe):
    """The README's main job is time-budgeted: its end is exit 0, "time budget reached", no "N to go". The
    budget stops each running trial at its next epoch boundary and no new trial starts: they are recorded
    as stopped early in trials/ and in Optuna (PRUNED, not left RUNNING). (One sweep for what
    test_sweep.py's time-budget test checked too.)"""
    import optuna

    from pielab.folder import load_records, read_metrics_csv

    env = sweep_env(tmp_path)
    # 40 trials of 1000 epochs: the 15 s budget ends it on any machine, and stops every trial it started
    spec = tiny_spec(cifar_path, name="budget", num_trials=40, epochs=1000, time_budget_s=15)
    proc, out = start_sweep(pielab_exe, spec, tmp_path, env=env)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "time budget" in stdout and "reached" in stdout, stdout[-3000:]
    final = json.loads((out / "status.json").read_text())
    assert final["end"] == "time budget reached" and final["finished"] is True and final["pending"] == 0, final
    assert len(final.get("running") or {}) == 0
    assert len(results(out)) < 40  # the budget, not the count, ended it
    records = load_records(out)
    assert records and all(r.state == "early_stopped" for r in records.values())
    assert all("time budget of 15 s reached" in r.reason for r in records.values())
    assert all(r.epochs >= 1 and len(read_metrics_csv(out / "trials" / tid / "metrics.csv")) == r.epochs
               for tid, r in records.items())  # stopped at an epoch boundary, none lost mid-epoch
    study = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'optuna.db'}")
    assert study.trials and all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert sorted(t.user_attrs["trial_id"] for t in pruned) == sorted(records)
    status = run(pielab_exe, "status", str(out), env=env)
    assert status.returncode == 0 and "finished (time budget reached)" in status.stdout, status.stdout
    assert "to go" not in status.stdout, status.stdout
    again = run(pielab_exe, "resume", str(out), env=env, timeout=120)
    assert again.returncode == 0 and "already finished" in again.stdout, text(again)


@pytest.mark.slow
def test_resume_if_exists_first_run_rerun_and_changed_spec(tmp_path, cifar_path, pielab_exe):
    """`pielab sweep SPEC --out DIR --resume-if-exists`: the first run starts the sweep, a rerun of the
    same command line reports it finished (exit 0) without running a trial, a rerun with another
    spec (here through --set) is one line naming the field, exit 2, and the folder is untouched."""
    env = sweep_env(tmp_path)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec(cifar_path, name="retry", num_trials=2, epochs=1)))
    out = tmp_path / "sweep"
    cmd = ["sweep", str(spec_path), "--set", "train.epochs=1", "--out", str(out), "--resume-if-exists"]
    first = run(pielab_exe, *cmd, env=env)
    assert first.returncode == 0 and "the sweep finished" in first.stdout, text(first)
    done = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    rerun = run(pielab_exe, *cmd, env=env, timeout=120)
    assert rerun.returncode == 0 and "already finished" in rerun.stdout, text(rerun)

    changed = run(pielab_exe, *cmd, "--set", "num_trials=3", env=env, timeout=120)
    line = one_error_line(changed)
    assert "num_trials 2 -> 3" in line and "--out" in line, line
    changed = run(pielab_exe, *cmd[:-1], "--set", "train.batch_size=25", "--resume-if-exists", env=env, timeout=120)
    assert "base.train.batch_size 50 -> 25" in one_error_line(changed)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == done  # nothing rewritten

    plain = run(pielab_exe, "sweep", str(spec_path), "--out", str(out), env=env, timeout=120)
    assert "already exists" in one_error_line(plain)  # without the flag an existing folder is refused
    nowhere = run(pielab_exe, "sweep", str(spec_path), "--resume-if-exists", env=env, timeout=60)
    assert "--resume-if-exists needs --out" in one_error_line(nowhere)


def test_spec_changes_name_dotted_keys_old_and_new():
    from pielab.folder.started_spec import describe_changes, spec_changes

    started = {"num_trials": 3, "base": {"train": {"lr": 0.001, "epochs": 2}}, "seeds": [0], "time_budget_s": None}
    now = {"num_trials": 5, "base": {"train": {"lr": 0.001, "epochs": 3}}, "seeds": [0, 1], "time_budget_s": 60}
    changes = spec_changes(started, now)
    assert [c[0] for c in changes] == ["num_trials", "base.train.epochs", "seeds", "time_budget_s"]
    assert describe_changes(changes) == "num_trials 3 -> 5, base.train.epochs 2 -> 3, seeds [0] -> [0, 1], " \
                                        "time_budget_s null -> 60"
    assert spec_changes(started, {**started, "extra": {"k": True}}) == [("extra.k", spec_changes.__globals__["_MISSING"], True)]
    assert describe_changes(spec_changes(started, {**started, "extra": {"k": True}})) == "extra.k (absent) -> true"
    assert spec_changes(started, json_round_trip(started)) == []


def json_round_trip(d):
    import json

    return json.loads(json.dumps(d))
