"""Reliability: what a sweep survives. Each test runs a real (tiny) `pielab sweep` in a subprocess and
checks the sweep folder, Tune's per-trial journal (``tune/<trial>/epochs.log``: every start with the
checkpoint it resumed from, every epoch trained as it goes to its report) and the Optuna study.

Faults are injected with ``PIELAB_FAULTS`` (pielab/sweep/faults.py; off unless the variable is set).
The scenarios and how often each was run are in RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml

from helpers import (REDONE_PER_RESTART, assert_one_line_error, check_resume_past_a_deleted_checkpoint, epochs_trained,
                     journal, metrics_epochs, metrics_epochs_safe, ok,
                     results, run_cli, run_sweep, snapshot, start_sweep, starts, sweep_env, tiny_spec, wait_for,
                     wait_for_another_epoch)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- helpers


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
    assert len(trained) == len(set(trained)), (trial_id, lines)  # none trained twice: faults fire before the line
    assert sorted(trained) == list(range(1, max(trained) + 1)), (trial_id, lines)
    assert metrics_epochs(sweep_dir, trial_id) == list(range(1, planned + 1))


def study_of(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


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
        # kill: the trial's own worker process died, its node lives: a failure (a retry), not a preemption
        assert res[tid]["retries"] == 1 and res[tid]["preemptions"] == 0, (kind, res[tid])
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


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["asha", "fifo"])
def test_trial_diverging_in_its_first_epoch_ends_alone(tmp_path, cifar_path, pielab_exe, scheduler):
    """SGD at learning rate 1e12 turns the loss non-finite inside epoch 1, before any result: the trial's
    closing result must still carry the metric (Tune's scheduler and searcher check it in every result;
    once it did not, and the whole sweep died). The trial is diverged with its reason in the folder,
    `pielab status` and Optuna (FAIL); the other trial completes; the sweep exits 0."""
    sched = {"name": "asha", "grace_period": 1, "reduction_factor": 2} if scheduler == "asha" else {"name": "fifo"}
    spec = tiny_spec(cifar_path, name=f"diverge-first-{scheduler}", num_trials=2, epochs=2,
                     space={"parameters": {"train.lr": {"type": "categorical", "choices": [0.01, 1.0e12]}}},
                     search={"algorithm": "grid", "seed": 0}, scheduler=sched)
    spec["base"]["train"]["optimizer"] = "sgd"
    sweep = run_sweep(pielab_exe, spec, tmp_path)
    assert sweep.rc == 0, ok(sweep)
    assert "Traceback" not in sweep.stdout + sweep.stderr, ok(sweep)
    by_lr = {}
    for tid, res in results(sweep.dir).items():
        lr = yaml.safe_load((sweep.dir / "trials" / tid / "config.yaml").read_text())["train"]["lr"]
        by_lr[lr] = (tid, res)
    (bad_id, bad), (good_id, good) = by_lr[1.0e12], by_lr[0.01]
    assert bad["state"] == "diverged" and "non-finite" in bad["reason"], bad
    assert bad["epochs"] == 0 and metrics_epochs_safe(sweep.dir, bad_id) == [], bad
    assert good["state"] == "completed", good
    assert metrics_epochs(sweep.dir, good_id) == [1, 2]
    by_id = {t.user_attrs["trial_id"]: t for t in study_of(sweep.dir).trials}
    assert by_id[bad_id].state.name == "FAIL" and by_id[bad_id].user_attrs["end"] == "diverged"
    assert "non-finite" in by_id[bad_id].user_attrs["reason"]
    assert by_id[good_id].state.name == "COMPLETE"
    status = subprocess.run([*pielab_exe, "status", str(sweep.dir)], capture_output=True, text=True,
                            env=sweep_env(tmp_path), timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert bad_id in status.stdout and "diverged" in status.stdout, status.stdout
    assert json.loads((sweep.dir / "status.json").read_text())["finished"] is True


# Hyperband is ASHA with brackets (tuner.make_scheduler). FIFO with one objective takes a subset of the
# two-objective path (the same six faults all fire; ASHA covers the one-objective closing results): 37 s saved.
END_CASES = ["asha", "fifo-two-objectives"]


@pytest.mark.slow
@pytest.mark.parametrize("case", END_CASES)
def test_every_end_at_the_first_and_last_epoch_leaves_the_sweep_running(tmp_path, cifar_path, pielab_exe, case):
    """In one sweep, a trial that diverges, one that raises and one out of memory at epoch 1 (before any
    result), and three more at the last epoch, under ASHA and FIFO (and with two objectives, whose closing
    results must carry both): each ends as it should, with its reason, FAIL in Optuna, and the sweep exits 0.
    (ASHA may stop a trial before its last epoch, so a last-epoch fault is checked where it fired.)"""
    scheduler = case.split("-")[0]
    over = {"scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2} if scheduler == "asha"
            else {"name": "fifo"}}
    if case.endswith("two-objectives"):
        over.update(objectives=[{"metric": "val/acc", "mode": "max"}, {"metric": "params", "mode": "min"}],
                    search={"algorithm": "nsga2", "seed": 0})
    spec = tiny_spec(cifar_path, name=f"ends-{case}", num_trials=7, epochs=2, max_failures=0, **over)
    # each fault goes to its own trial (trial=first); the epoch-1 ones are claimed by the first three trials
    faults = ";".join(f"{kind}@epoch={epoch}" + (",times=99" if kind != "nan" else "")
                      for epoch in (1, 2) for kind in ("nan", "raise", "oom"))
    sweep = run_sweep(pielab_exe, spec, tmp_path, env=sweep_env(tmp_path, PIELAB_FAULTS=faults))
    assert sweep.rc == 0, ok(sweep)
    assert "Traceback" not in sweep.stdout + sweep.stderr, ok(sweep)
    res = results(sweep.dir)
    by_id = {t.user_attrs["trial_id"]: t for t in study_of(sweep.dir).trials}
    expected = {"nan": ("diverged", "loss is nan"), "raise": ("failed", "injected raise fault"),
                "oom": ("failed", "out of memory")}
    fired = {}  # trial id -> (kind, epoch), from the claim files "<index>-<kind>.claim"
    for claim in (sweep.dir / "tune" / "faults").glob("*.claim"):
        index, kind = claim.stem.split("-", 1)
        fired[claim.read_text().strip()] = (kind, 1 if int(index) < 3 else 2)
    epochs_fired = sorted(e for _, e in fired.values())
    assert epochs_fired[:3] == [1, 1, 1], fired  # every epoch-1 fault fired
    if scheduler == "fifo":
        assert epochs_fired == [1, 1, 1, 2, 2, 2], fired
    assert 2 in epochs_fired, fired  # the first trial to reach a rung is never stopped there
    for tid, (kind, epoch) in fired.items():
        state, reason = expected[kind]
        assert res[tid]["state"] == state and reason in res[tid]["reason"], res[tid]
        assert res[tid]["epochs"] == epoch - 1, res[tid]  # the faulted epoch was never reported
        assert by_id[tid].state.name == "FAIL", (kind, epoch, by_id[tid].state)
    for tid, r in res.items():
        if tid not in fired:
            assert r["state"] in ("completed", "early_stopped"), r
    status = json.loads((sweep.dir / "status.json").read_text())
    assert status["finished"] is True and status["end"] == "finished", status


# Both schedulers; FIFO with one objective takes a subset of the two-objective path (22 s of CI saved).
@pytest.mark.slow
@pytest.mark.parametrize("case", ["asha", "fifo-two-objectives"])
def test_the_budget_stops_one_trial_at_its_last_epoch_and_another_at_its_first(tmp_path, cifar_path, pielab_exe,
                                                                                case):
    """The fourth end, the sweep's budget, at both edges: it runs out when one trial's last epoch (2)
    reaches the stopper, while the other trial is held in epoch 1; the first trial ends completed (its
    closing result is a full one), the second early-stopped at epoch 1 with the budget's reason; Optuna has
    them COMPLETE and PRUNED (with two objectives too), no new trial starts, and
    the sweep exits 0 as `budget reached`, which `pielab status` says."""
    scheduler = case.split("-")[0]
    over = {"scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2} if scheduler == "asha"
            else {"name": "fifo"}}
    two = case.endswith("two-objectives")
    if two:
        over.update(objectives=[{"metric": "val/acc", "mode": "max"}, {"metric": "params", "mode": "min"}],
                    search={"algorithm": "nsga2", "seed": 0})
    spec = tiny_spec(cifar_path, name=f"budget-{case}", num_trials=4, epochs=2, max_failures=0, **over)
    # the held trial sleeps 8 s before reporting epoch 1: the other has reported epoch 2 long before
    faults = "slow@epoch=1,seconds=8;budget@epoch=2"
    sweep = run_sweep(pielab_exe, spec, tmp_path, env=sweep_env(tmp_path, PIELAB_FAULTS=faults))
    assert sweep.rc == 0, ok(sweep)
    assert "Traceback" not in sweep.stdout + sweep.stderr, ok(sweep)
    res = results(sweep.dir)
    assert len(res) == 2, res  # the budget ran out with two trials running: none started after it
    held = (sweep.dir / "tune" / "faults" / "0-slow.claim").read_text().strip()
    (last_id,) = set(res) - {held}
    assert res[last_id]["state"] == "completed" and res[last_id]["epochs"] == 2, res[last_id]
    assert res[held]["state"] == "early_stopped" and res[held]["epochs"] == 1, res[held]
    assert epochs_trained(journal(sweep.dir, held)) == [1]  # stopped inside its report, still listed
    assert epochs_trained(journal(sweep.dir, last_id)) == [1, 2]
    assert "injected budget fault at epoch 2" in res[held]["reason"], res[held]
    by_id = {t.user_attrs["trial_id"]: t for t in study_of(sweep.dir).trials}
    assert by_id[last_id].state.name == "COMPLETE", by_id[last_id]
    assert len(by_id[last_id].values) == (2 if two else 1), by_id[last_id].values
    assert by_id[held].state.name == "PRUNED", by_id[held]
    status = json.loads((sweep.dir / "status.json").read_text())
    assert status["end"] == "budget reached" and status["finished"] is True, status
    assert "injected budget fault at epoch 2" in status["budget_reason"], status
    shown = run_cli(pielab_exe, "status", str(sweep.dir), env=sweep_env(tmp_path))
    assert shown.returncode == 0 and "injected budget fault at epoch 2" in shown.stdout, shown.stdout


@pytest.mark.slow
def test_an_error_in_the_driver_leaves_the_sweep_interrupted_and_resume_continues_it(tmp_path, cifar_path,
                                                                                     pielab_exe):
    """Tune's loop raises in the driver (a bug in a callback, here injected when epoch 1 is recorded): the
    traceback, then one line saying the state is saved and how to continue, exit 1; status.json says
    crashed, not finished (Tune closes the callbacks on its way out, and the sweep once read as finished);
    `pielab status` shows it interrupted with the error; `pielab resume` runs it to the end."""
    spec = tiny_spec(cifar_path, name="driver-error", num_trials=3, epochs=2)
    sweep = run_sweep(pielab_exe, spec, tmp_path, env=sweep_env(tmp_path, PIELAB_FAULTS="driver@epoch=1"))
    assert sweep.rc == 1, ok(sweep)
    assert "RuntimeError: injected driver fault at epoch 1" in sweep.stderr, ok(sweep)
    last = sweep.stderr.strip().splitlines()[-1]
    assert last == f"pielab: the sweep stopped on an error in its driver; its state is saved; continue it with: " \
                   f"pielab resume {sweep.dir}", ok(sweep)
    status = json.loads((sweep.dir / "status.json").read_text())
    assert status["finished"] is False and status["end"] == "crashed", status
    assert "injected driver fault" in status["crash"]
    env = sweep_env(tmp_path)
    shown = run_cli(pielab_exe, "status", str(sweep.dir), env=env)
    assert shown.returncode == 0
    assert ("interrupted by an error in the driver (RuntimeError: injected driver fault at epoch 1): "
            f"continue with `pielab resume {sweep.dir}`") in shown.stdout, shown.stdout
    resumed = run_cli(pielab_exe, "resume", str(sweep.dir), env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    status = json.loads((sweep.dir / "status.json").read_text())
    assert status["finished"] is True and status["end"] == "finished", status
    done = [r for r in results(sweep.dir).values() if r["state"] == "completed"]
    assert len(done) >= spec["num_trials"], results(sweep.dir)


# --------------------------------------------------------------------------- 3. driver crash, Ctrl-C, resume


def optuna_trials(sweep_dir: Path) -> dict[int, tuple]:
    return {t.number: (t.user_attrs.get("trial_id"), t.params) for t in study_of(sweep_dir).trials}


@pytest.mark.slow
def test_driver_sigkill_then_ctrl_c_then_resume(tmp_path, cifar_path, pielab_exe):
    """`kill -9` of `pielab sweep` mid-run, `pielab resume` interrupted by Ctrl-C (exit 130, says how to
    resume), `pielab resume` to the end, and `pielab resume` of the finished sweep (says so, exit 0).
    No finished trial runs again; interrupted trials resume from their last checkpoint (at most the
    epoch in flight redone); the Optuna study keeps its trials (same numbers, no duplicates)."""
    spec = tiny_spec(cifar_path, name="driver-crash", num_trials=5, epochs=5)
    env = sweep_env(tmp_path)
    proc, out = start_sweep(pielab_exe, spec, tmp_path, env=env)

    def some_done_some_running() -> bool:
        res = results(out)
        done = [t for t, r in res.items() if r["state"] == "completed"]
        # two epochs reported: its resume must start from a checkpoint, even if Tune's last experiment
        # snapshot predates the newest one (one epoch may be redone, not two)
        running = [t for t, r in res.items() if r["state"] == "running" and len(metrics_epochs_safe(out, t)) >= 2]
        return bool(done) and bool(running)

    wait_for(some_done_some_running, proc, what="a finished and a running trial")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # Ray's agents outlive the killed driver (they ignore SIGTERM); `pielab status` ends them by PID, and
    # only them: each carries this folder's mark (pielab.sweep.leftovers)
    from pielab.sweep import leftovers

    left = leftovers.find(out)  # seen: ray::DashboardAgent and ray::RuntimeEnvAgent, or the trials' workers
    assert left, "nothing of the killed driver's Ray was found: the mark is missing"
    shown = subprocess.run([*pielab_exe, "status", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    # some of them may end on their own between the two looks (a worker whose raylet is gone), so what
    # status ended is a non-empty part of what the test saw, never a process the test did not see
    said = re.search(r"ended (\d+) Ray process\(es\) left by this folder's earlier driver: (.*)", shown.stdout)
    assert said, shown.stdout
    ended_pids = {int(p) for p in re.findall(r"\(pid (\d+)\)", said.group(2))}
    assert ended_pids and ended_pids <= {pid for pid, _ in left}, (said.group(0), left)
    assert not leftovers.find(out) and not any(leftovers.alive(pid) for pid, _ in left), left
    before = snapshot(out)
    numbers_before = optuna_trials(out)
    done_before = {t for t, s in before.items() if s["result"]["state"] == "completed"}
    assert done_before and numbers_before

    # Ctrl-C during the resume: graceful, exit 130, the resume command printed.
    resumed = subprocess.Popen([*pielab_exe, "resume", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    wait_for_another_epoch(out, resumed, what="the resumed sweep's first epoch")
    resumed.send_signal(signal.SIGINT)
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 130, stdout[-3000:] + stderr[-3000:]
    assert f"pielab resume {out}" in stdout, stdout[-3000:]
    assert "Traceback" not in stdout + stderr, stderr[-3000:]

    final = subprocess.run([*pielab_exe, "resume", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["finished"] is True and len(status["resumes"]) == 2

    after = snapshot(out)
    for tid in done_before:  # finished trials are not run again: same end time, journal and metrics
        assert after[tid] == before[tid], tid
    interrupted = set(before) - done_before
    assert interrupted
    resumed_from_checkpoint: list[str] = []
    for tid, snap in after.items():
        res = snap["result"]
        if res["state"] == "failed":  # started after Tune's last snapshot: replaced by a new trial
            assert "interrupted before Tune saved it" in res["reason"], res
            continue
        assert res["state"] == "completed", res
        assert metrics_epochs(out, tid) == list(range(1, 6)), tid
        lines = snap["journal"]
        trained = epochs_trained(lines)
        assert len(trained) - len(set(trained)) <= REDONE_PER_RESTART * (len(starts(lines)) - 1), (tid, lines)
        done: list[int] = []
        for line in lines:
            if line.startswith("start "):
                after_epoch = int(line.split("after_epoch=")[1].split()[0])
                last = done[-1] if done else 0
                assert last - REDONE_PER_RESTART <= after_epoch <= last, (tid, lines)  # from a recent checkpoint
            else:
                done.append(int(line.split()[1]))
        # The epochs the driver had recorded (so saved) at the kill: the restart went back no further than
        # the snapshot's lag (RELIABILITY.md 3a). The journal cannot say it: it lists the epoch in flight too.
        recorded = len(before[tid]["metrics"].splitlines()) - 1 if tid in interrupted else 0
        if tid in interrupted and len(starts(lines)) >= 2:
            assert starts(lines)[1] >= recorded - 1, (tid, recorded, lines)
        if recorded >= 2:
            assert len(starts(lines)) >= 2 and starts(lines)[1] >= 1, (tid, lines)  # resumed, not restarted
            resumed_from_checkpoint.append(tid)
    assert resumed_from_checkpoint, before  # the wait above guarantees one trial had two epochs at the kill
    completed = [t for t, s in after.items() if s["result"]["state"] == "completed"]
    assert len(completed) >= spec["num_trials"], after.keys()

    numbers_after = optuna_trials(out)
    for number, (tid, params) in numbers_before.items():
        assert numbers_after[number] == (tid, params), number  # same trials under the same numbers
    ids = [tid for tid, _ in numbers_after.values() if tid]
    assert len(ids) == len(set(ids)), ids  # no trial told twice
    study = study_of(out)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]

    again = subprocess.run([*pielab_exe, "resume", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "already finished" in again.stdout, again.stdout + again.stderr


# --------------------------------------------------------------------------- 5. PostgreSQL for the Optuna study


@pytest.mark.slow
def test_optuna_study_on_postgresql(tmp_path, cifar_path, pielab_exe):
    """A sweep whose study lives on a real PostgreSQL server (tests/postgres.py, 127.0.0.1): every trial
    is in the study there, with its end state and intermediate values; no optuna.db in the folder; the
    URL's password is written nowhere in the sweep folder (resume connects with PGPASSWORD or ~/.pgpass)."""
    from postgres import postgres_server

    spec = tiny_spec(cifar_path, name="pg-study", num_trials=2, epochs=2)
    password = "s3cret-pg-77"  # the test server trusts loopback, so any password works: it must not be written
    with postgres_server() as url:
        spec["storage"] = {"path": "sweep_results", "optuna": url.replace("pielab@", f"pielab:{password}@")}
        sweep = run_sweep(pielab_exe, spec, tmp_path)
        assert sweep.rc == 0, ok(sweep)
        study = optuna.load_study(study_name=sweep.dir.name, storage=url)
        res = results(sweep.dir)
        assert sorted(t.user_attrs["trial_id"] for t in study.trials) == sorted(res)
        assert all(t.state.name == "COMPLETE" and sorted(t.intermediate_values) == [1, 2] for t in study.trials)
        assert not (sweep.dir / "optuna.db").exists()
        import sqlalchemy

        with sqlalchemy.create_engine(url).connect() as conn:  # the rows are in PostgreSQL itself
            count = conn.execute(sqlalchemy.text("select count(*) from trials")).scalar()
        assert count == 2
        for path in sweep.dir.rglob("*"):  # sweep.yaml, Tune's pickles, status: no password anywhere
            if path.is_file():
                assert password.encode() not in path.read_bytes(), path
        assert password not in sweep.stdout + sweep.stderr


def test_database_password_never_shown(tmp_path, cifar_path, pielab_exe):
    """An unreachable PostgreSQL URL with a password, and a server that never answers: one line each, exit 2,
    the password masked, and no half-made sweep folder left behind."""
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec(cifar_path, name="pg-bad")))
    out = tmp_path / "out"
    url = "postgresql://pielab:s3cret-pw-42@127.0.0.1:1/pielab"
    start = time.monotonic()
    proc = run_cli(pielab_exe, "sweep", str(spec_path), "--set", f"storage.optuna={url}", "--out", str(out),
                   env=sweep_env(tmp_path))
    line = assert_one_line_error(proc, "storage.optuna: cannot open 'postgresql://pielab:***@127.0.0.1:1/pielab'")
    assert "s3cret-pw-42" not in proc.stdout + proc.stderr
    assert time.monotonic() - start < 90, line
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))
    # a malformed URL with a password is masked by the spec check too
    proc = run_cli(pielab_exe, "sweep", str(spec_path), "--set", "storage.optuna=postgres:/u:s3cret-pw-42@h",
                   "--out", str(out), env=sweep_env(tmp_path))
    assert proc.returncode == 2 and "s3cret-pw-42" not in proc.stdout + proc.stderr, proc.stderr
    # a server that takes the connection and never answers (as one behind a firewall's proxy): without
    # pielab's connect_timeout, psycopg would wait for ever and this call would hit its 120 s timeout
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"postgresql://pielab:s3cret-pw-42@127.0.0.1:{silent.getsockname()[1]}/pielab"
        proc = run_cli(pielab_exe, "sweep", str(spec_path), "--set", f"storage.optuna={url}", "--out", str(out),
                       env=sweep_env(tmp_path))
    line = assert_one_line_error(proc, "connection timeout expired")
    assert "s3cret-pw-42" not in proc.stdout + proc.stderr, line
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


# --------------------------------------------------------------------------- 6. bad input to the sweep commands


def test_sweep_commands_bad_input_one_line_exit_2(tmp_path, cifar_path, pielab_exe):
    """What test_spec.py checks in-process (every spec problem, with file:line), here through the CLI for
    the sweep commands: exit 2, one `pielab: error:` line, no traceback, no sweep folder left behind."""
    env = sweep_env(tmp_path)
    out = tmp_path / "never"

    def spec_file(name: str, text: str | None = None, **over) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text if text is not None else yaml.safe_dump(tiny_spec(cifar_path, name=name, **over)))
        return str(path)

    cases = [
        (["sweep", spec_file("malformed", "name: x\nnum_trials: [1\n"), "--out", str(out)], "malformed.yaml:"),
        (["sweep", spec_file("unknown-key", num_trail=3), "--out", str(out)], "num_trail: unknown key"),
        (["sweep", spec_file("wrong-type", num_trials="many"), "--out", str(out)], "num_trials: expected int"),
        (["sweep", spec_file("range", space={"parameters": {"train.lr": {"type": "float", "low": 1, "high": 0.1}}}),
          "--out", str(out)], "train.lr"),
        (["sweep", spec_file("model"), "--set", "base.model.name=resnet999", "--out", str(out)], "resnet999"),
        (["sweep", spec_file("data"), "--set", "base.data.path=/nonexistent/cifar.npz", "--out", str(out)],
         "/nonexistent/cifar.npz"),
        (["sweep", str(tmp_path / "missing.yaml"), "--out", str(out)], "missing.yaml"),
        (["status", str(tmp_path)], "not a sweep folder"),
        (["resume", str(tmp_path)], "not a sweep folder"),
        (["report", str(tmp_path)], "not a sweep folder"),
        (["resume", str(tmp_path / "nope")], "no such sweep folder"),
        (["sweep", spec_file("driver"), "--set", "storage.optuna=mysql+pymysql://u:pw@127.0.0.1/db", "--out",
          str(out)], "the database driver for 'mysql+pymysql' is not installed (no module 'pymysql'): "
                     "pip install pymysql"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run_cli(pielab_exe, *args, env=env), fragment)
        assert not out.exists(), args
    start = time.monotonic()
    assert_one_line_error(run_cli(pielab_exe, "sweep", spec_file("addr"), "--address", "127.0.0.1:1", "--out",
                                  str(out), env=env), "cannot reach a Ray cluster at 127.0.0.1:1")
    assert time.monotonic() - start < 30
    assert not out.exists()
    assert_one_line_error(run_cli(pielab_exe, "sweep", spec_file("proc"), "--out", "/proc/pielab-sweep", env=env),
                          "/proc/pielab-sweep")


def test_corrupt_or_malicious_checkpoint_fails_the_trial_with_one_line(tmp_path):
    """A trial resumed from a corrupt checkpoint, or from a pickle that carries code, is failed with one
    clear reason (a PielabError: not retried, the sweep goes on) and the code never runs: trial state is
    loaded with weights_only=True."""
    from ray import tune

    from pielab.errors import PielabError
    from pielab.sweep.trainable import STATE_FILE, _load_state

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / STATE_FILE).write_bytes(b"\x80\x04 not a checkpoint")
    with pytest.raises(PielabError, match="is not a readable pielab trial state") as exc:
        _load_state(tune.Checkpoint.from_directory(str(corrupt)))
    assert "\n" not in str(exc.value)

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / STATE_FILE).write_bytes(pickle.dumps(Evil(str(marker))))
    with pytest.raises(PielabError, match="is not a readable pielab trial state"):
        _load_state(tune.Checkpoint.from_directory(str(evil)))
    assert not marker.exists(), "unpickling a checkpoint ran code"
    # control: the same bytes unpickled without weights_only do run the code (the test can fail)
    pickle.loads((evil / STATE_FILE).read_bytes())
    assert marker.exists()


class Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# --------------------------------------------------------------------------- 7. security


@pytest.mark.slow
def test_wandb_key_never_written(tmp_path, cifar_path, pielab_exe):
    """WANDB_API_KEY set in the environment, W&B offline: the key appears nowhere in the sweep folder,
    the W&B files or the output."""
    secret = "sekrit-0123456789abcdef0123456789abcdef01234567"
    spec = tiny_spec(cifar_path, name="wandb-key", num_trials=1, epochs=1,
                     tracking={"wandb": True, "mode": "offline", "project": "pielab-tests"})
    env = sweep_env(tmp_path, WANDB_API_KEY=secret, WANDB_MODE="offline")
    sweep = run_sweep(pielab_exe, spec, tmp_path, env=env)
    assert sweep.rc == 0, ok(sweep)
    assert list((sweep.dir / "wandb").glob("offline-run-*")), "W&B wrote no run: the check would prove nothing"
    checked = 0
    for root in (sweep.dir, Path(env["HOME"]), Path(os.environ["WANDB_DIR"])):
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert secret.encode() not in path.read_bytes(), path
                checked += 1
    assert checked > 10
    assert secret not in sweep.stdout + sweep.stderr


def test_dashboard_binds_loopback_by_default():
    from pielab.cli import build_parser

    args = build_parser().parse_args(["dashboard", "somewhere"])
    assert args.host == "127.0.0.1"


def test_tune_deleting_an_already_deleted_checkpoint_is_quiet(tmp_path, caplog):
    """After kill -9, Tune's restored snapshot can list a checkpoint the killed run already deleted;
    deleting it again must neither raise nor log a traceback (Ray checks the path outside its try)."""
    import logging

    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal import checkpoint_manager
    from ray.train._internal.session import _TrainingResult

    from pielab.sweep.compat import tolerate_already_deleted_checkpoints

    tolerate_already_deleted_checkpoints()
    tolerate_already_deleted_checkpoints()  # idempotent: a second sweep in the same process
    manager = checkpoint_manager._CheckpointManager(CheckpointConfig(num_to_keep=1))
    dirs = [tmp_path / f"checkpoint_00000{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
        (d / "state.pt").write_bytes(b"x")
    with caplog.at_level(logging.DEBUG):
        manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(dirs[0])), {"epoch": 1}))
        dirs[0].joinpath("state.pt").unlink()
        dirs[0].rmdir()  # deleted by the killed run; the restored snapshot still lists it
        manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(dirs[1])), {"epoch": 2}))
        manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(dirs[2])), {"epoch": 3}))
    assert not dirs[1].exists()  # a real old checkpoint is still deleted
    assert dirs[2].exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_restored_checkpoint_already_deleted_resumes_from_the_next(tmp_path):
    """RELIABILITY.md 9b: Tune's restored snapshot named a checkpoint it had deleted (num_to_keep) once
    newer ones were saved; the trial resumed then failed with 'not a readable pielab trial state'."""
    import pyarrow.fs

    check_resume_past_a_deleted_checkpoint(pyarrow.fs.LocalFileSystem(), str(tmp_path / "trial"))


# --------------------------------------------------------------------------- a full disk


@pytest.mark.slow
def test_a_full_disk_stops_the_sweep_in_one_line_and_a_copy_resumes(tmp_path, cifar_path, pielab_exe):
    """Issue 22: a sweep folder whose disk fills printed seven `OSError: [Errno 28]` tracebacks and no pielab
    line. On a 1.5 MiB tmpfs that this test mounts (and unmounts), the sweep stops with one line naming the
    disk and how to go on, exit 1, no traceback; the folder copied to a larger disk resumes to the end."""
    if os.geteuid() != 0:
        raise PermissionError("this test mounts a tmpfs: it must run as root (CI runs as root)")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(small)], check=True)
    try:
        spec = tiny_spec(cifar_path, name="disk-full", num_trials=4, epochs=4)
        env = sweep_env(tmp_path)
        proc, out = start_sweep(pielab_exe, spec, small, env=env)
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 1, stdout[-3000:] + stderr[-3000:]
        lines = [line for line in stderr.splitlines() if line.startswith("pielab: error:")]
        assert len(lines) == 1 and f"no space left on the disk of {out}" in lines[0], stderr[-3000:]
        assert f"pielab resume {out}" in lines[0] and "free" in lines[0], lines
        assert "Traceback" not in stdout + stderr, stderr[-3000:]
        status = json.loads((out / "status.json").read_text())
        assert status.get("finished") is not True, status
        shown = subprocess.run([*pielab_exe, "status", str(out)], capture_output=True, text=True, env=env)
        assert shown.returncode == 0 and "interrupted" in shown.stdout, shown.stdout + shown.stderr

        big = tmp_path / "big"
        subprocess.run(["cp", "-a", str(out), str(big)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
    resumed = subprocess.run([*pielab_exe, "resume", str(big)], capture_output=True, text=True, env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    res = results(big)
    # A trial that had started when the disk filled, before Tune could save it, is not resumed: it is recorded
    # with that reason and a new trial takes its place (RELIABILITY 1c), so num_trials still complete.
    done = [r for r in res.values() if r["state"] == "completed"]
    replaced = [r for r in res.values() if r["state"] != "completed"]
    assert len(done) == 4, res
    assert all(r["state"] == "failed" and "a new trial took its place" in r["reason"] for r in replaced), replaced
