"""One driver per sweep folder, across hosts, through the console script (pielab/sweep/lease.py wired
into ``pielab sweep`` / ``pielab resume`` / ``pielab status``).

"Another host" is a driver run in a network namespace with its own hostname (``ip netns`` +
``unshare --uts``): same files, same kernel, a different host name, so it can judge this host's lease
only by its age (``PIELAB_LEASE_TTL_S=6`` makes that quick). Needs root, as the multi-node tests do.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from helpers import metrics_epochs_safe, results, start_sweep, sweep_env, tiny_spec, wait_for

TTL = 6


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("pielab: error: "), \
        proc.stdout[-2000:] + proc.stderr[-2000:]
    return lines[0]


def lease(out: Path) -> dict | None:
    try:
        return json.loads((out / "driver.lease").read_text())
    except (OSError, ValueError):
        return None


class OtherHost:
    """Commands run in a fresh network namespace whose hostname is ``otherhost``; removed on exit."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.name = f"pielab-lease-{uuid.uuid4().hex[:8]}"
        self.env = {**env, "HOME": str(home)}  # its own Ray instance, its own auth token
        home.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "OtherHost":
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True)
        return self

    def argv(self, cmd: list[str]) -> list[str]:
        quoted = " ".join(f"'{a}'" for a in cmd)
        return ["ip", "netns", "exec", self.name, "unshare", "--uts", "sh", "-c", f"hostname otherhost && exec {quoted}"]

    def run(self, cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(cmd), capture_output=True, text=True, env=self.env, timeout=timeout)

    def popen(self, cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(self.argv(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


@pytest.mark.slow
def test_one_driver_per_folder_across_hosts(tmp_path, cifar_path, pielab_exe):
    if os.geteuid() != 0:
        pytest.fail("needs root for ip netns (the multi-node tests need it too)")
    env = sweep_env(tmp_path, PIELAB_LEASE_TTL_S=str(TTL))
    here = socket.gethostname()
    proc, out = start_sweep(pielab_exe, tiny_spec(cifar_path, name="lease", num_trials=4, epochs=3), tmp_path, env=env)
    wait_for(lambda: lease(out) is not None, proc, what="the lease")
    assert lease(out)["pid"] == proc.pid and lease(out)["host"] == here
    wait_for(lambda: any(metrics_epochs_safe(out, t) for t in results(out)), proc, what="the first epoch")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=180)
    assert proc.returncode == 130 and lease(out) is None  # released on Ctrl-C

    # (a) two resumes started together: exactly one runs, the other is refused in one line naming it.
    resume = [*pielab_exe, "resume", str(out)]
    pair = [subprocess.Popen(resume, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    wait_for(lambda: any(p.poll() is not None for p in pair), pair[0] if pair[1].poll() is None else pair[1],
             timeout=120, what="one resume refused")
    loser = next(p for p in pair if p.poll() is not None)
    winner = next(p for p in pair if p is not loser)
    stdout, stderr = loser.communicate()
    refused = subprocess.CompletedProcess(loser.args, loser.returncode, stdout, stderr)
    line = one_error_line(refused)
    assert f"host {here}, pid {winner.pid}" in line, line
    assert winner.poll() is None

    with OtherHost(env, tmp_path / "other-home") as other:
        try:
            # (b) this host's live driver holds it: the other host is refused, and `status` names the holder.
            line = one_error_line(other.run([*pielab_exe, "resume", str(out)]))
            assert f"host {here}, pid {winner.pid}" in line, line
            status = subprocess.run([*pielab_exe, "status", str(out)], capture_output=True, text=True, env=env)
            assert f"running on host {here} (pid {winner.pid}" in status.stdout, status.stdout

            # (c) kill -9 of the holder: from the other host its lease is stale after the TTL, and taken over.
            winner.send_signal(signal.SIGKILL)
            winner.communicate()
            killed = time.time()
            held = lease(out)
            assert held is not None and held["pid"] == winner.pid  # a killed driver cannot release it
            time.sleep(max(0.0, held["renewed"] + TTL + 0.5 - time.time()))
            remote = other.popen([*pielab_exe, "resume", str(out)])
            wait_for(lambda: (lease(out) or {}).get("host") == "otherhost", remote, timeout=30,
                     what="the other host taking the lease over")
            assert time.time() - killed <= TTL + 10

            # ... and the reverse: while the other host holds it, this host is refused.
            line = one_error_line(subprocess.run(resume, capture_output=True, text=True, env=env, timeout=120))
            assert "host otherhost" in line, line
            status = subprocess.run([*pielab_exe, "status", str(out)], capture_output=True, text=True, env=env)
            assert "running on host otherhost" in status.stdout, status.stdout

            stdout, stderr = remote.communicate(timeout=900)
            assert remote.returncode == 0, stdout[-3000:] + stderr[-3000:]
        finally:
            for p in [winner, locals().get("remote")]:
                if p is not None and p.poll() is None:
                    p.kill()
    assert lease(out) is None
    final = json.loads((out / "status.json").read_text())
    assert final["finished"] is True, final
    status = subprocess.run([*pielab_exe, "status", str(out)], capture_output=True, text=True, env=env)
    assert status.stdout.splitlines()[0].endswith(": finished"), status.stdout


@pytest.mark.slow
def test_two_sweeps_with_one_out_started_together(tmp_path, cifar_path, pielab_exe):
    """`pielab sweep --out X` twice at once: one runs the sweep, the other exits 2 in one line and does
    not delete the folder that the winner uses."""
    env = sweep_env(tmp_path, PIELAB_LEASE_TTL_S=str(TTL))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec(cifar_path, name="twin", num_trials=2, epochs=1)))
    out = tmp_path / "sweep"
    cmd = [*pielab_exe, "sweep", str(spec_path), "--out", str(out)]
    pair = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    done = [p.communicate(timeout=900) for p in pair]
    codes = sorted(p.returncode for p in pair)
    assert codes == [0, 2], [d[0][-2000:] + d[1][-2000:] for d in done]
    loser = next(i for i, p in enumerate(pair) if p.returncode == 2)
    lines = [line for line in done[loser][1].splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pielab: error: "), lines
    assert "another driver" in lines[0] or "already exists" in lines[0], lines
    assert json.loads((out / "status.json").read_text())["finished"] is True
