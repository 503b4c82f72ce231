"""SIGTERM (Kubernetes, Slurm, kill) and SIGUSR1 (Slurm's --signal=B:USR1@N) stop a driver as Ctrl-C does:
state saved, exit 128 + N (143, 138), no native stack dump from Ray, and the same command line
(``--resume-if-exists``) or ``pielab resume`` continues with no completed trial run again."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import yaml

from helpers import (REDONE_PER_RESTART, epochs_trained, journal, metrics_epochs_safe, results, snapshot, starts,
                     sweep_env, tiny_spec, wait_for, wait_for_another_epoch)

NATIVE_DUMP = ("SIGTERM received", "PC: @", "*** SIG")


def stop_cleanly(proc: subprocess.Popen, sig: signal.Signals, exit_code: int) -> tuple[str, str]:
    """Send ``sig`` to the driver ``proc`` and wait: it exits ``exit_code`` with no native stack dump and
    no traceback. Returns its (stdout, stderr)."""
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == exit_code, stdout[-3000:] + stderr[-3000:]
    for fragment in NATIVE_DUMP:
        assert fragment not in stdout + stderr, stderr[-3000:]
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    return stdout, stderr


@pytest.mark.slow
def test_sigterm_and_sigusr1_save_and_stop_then_the_same_command_continues(tmp_path, cifar_path, pielab_exe):
    env = sweep_env(tmp_path)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec(cifar_path, name="sigterm", num_trials=4, epochs=3)))
    out = tmp_path / "sweep"
    cmd = [*pielab_exe, "sweep", str(spec_path), "--out", str(out), "--resume-if-exists"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def some_done_some_running() -> bool:
        res = results(out)
        return (any(r["state"] == "completed" for r in res.values())
                # a running trial with exactly one of its 3 epochs recorded: it is still running when the
                # signal lands (one with 2 could finish its last epoch during the stop, as CI saw once)
                and any(r["state"] == "running" and len(metrics_epochs_safe(out, t)) == 1
                        for t, r in res.items()))

    # SIGTERM: graceful, 143, no stack dump, the lease released, the status says so.
    proc = start()
    wait_for(some_done_some_running, proc, what="a finished and a running trial")
    stdout, stderr = stop_cleanly(proc, signal.SIGTERM, 143)
    assert "terminated (SIGTERM)" in stdout and f"pielab resume {out}" in stdout, stdout[-3000:]
    assert not (out / "driver.lease").exists()
    status = json.loads((out / "status.json").read_text())
    assert status["end"] == "terminated" and status["finished"] is False, status
    shown = subprocess.run([*pielab_exe, "status", str(out)], capture_output=True, text=True, env=env, timeout=60)
    assert "interrupted by SIGTERM" in shown.stdout, shown.stdout
    before = snapshot(out)
    done_before = {t for t, s in before.items() if s["result"]["state"] == "completed"}
    assert done_before

    # SIGUSR1 during the rerun of the same command line: 138, state saved again.
    proc = start()
    wait_for_another_epoch(out, proc, what="an epoch of the continued sweep")
    stdout, stderr = stop_cleanly(proc, signal.SIGUSR1, 138)
    assert json.loads((out / "status.json").read_text())["end"] == "stopped by SIGUSR1"

    # The same command line again: continues to the end, exit 0.
    proc = start()
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "the sweep finished" in stdout, stdout[-3000:]
    after = snapshot(out)
    for tid in done_before:  # a completed trial never runs again: same journal, metrics and result
        assert after[tid] == before[tid], tid
    for tid, snap in after.items():
        if snap["result"]["state"] == "failed":
            continue
        assert snap["result"]["state"] == "completed", snap["result"]
        trained = epochs_trained(snap["journal"])
        assert sorted(set(trained)) == [1, 2, 3], (tid, snap["journal"])
        # each restart resumed from a checkpoint: at most the epoch in flight and the snapshot's lag trained twice
        assert len(trained) - len(set(trained)) <= REDONE_PER_RESTART * (len(starts(snap["journal"])) - 1), \
            (tid, snap["journal"])
    # A trial stopped by SIGTERM after N recorded epochs restarts from a checkpoint of epoch N or N-1:
    # Tune's experiment snapshot can lag its newest checkpoint by one (RELIABILITY.md 3a; seen in CI on
    # a machine at load 20, where a trial with one epoch recorded restarted from scratch).
    recorded = {t: len(before[t]["metrics"].splitlines()) - 1 for t in set(before) - done_before}
    interrupted = [t for t, n in recorded.items() if n >= 1]
    assert interrupted and all(starts(journal(out, t))[1] >= recorded[t] - 1 for t in interrupted), \
        {t: (recorded[t], journal(out, t)) for t in interrupted}
    final = json.loads((out / "status.json").read_text())
    assert final["finished"] is True and final["end"] == "finished" and len(final["resumes"]) == 2, final
