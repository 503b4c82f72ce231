"""Node loss: a real two-node Ray cluster on this machine, one node killed mid-sweep.

Two network namespaces that the test creates (``pl-<pid>-a`` / ``-b``) joined by a veth pair with
addresses in 10.213.X.0/24 (X from the pid), ``lo`` up in each. The head (``ray start --head``) runs in
A, a worker node in B, the driver (``pielab sweep --address``) in A; every process talks only to
loopback or the namespaces' own addresses. Ray 2.60 token auth: the head writes ``$HOME/.ray/auth_token``
and every process here shares that HOME (with ``RAY_AUTH_MODE=token``). The namespaces share this
machine's file system, so the sweep folder is the shared storage every node writes its checkpoints to.

The sweep runs two 1-CPU trials at once, one per node. Once the trial on the worker node has reported
a checkpointed epoch, every process of namespace B is killed with SIGKILL (the node is gone, no
clean-up). The lost trial reaches Tune as ``ActorUnavailableError`` ("Socket closed"); GCS declares the
node dead within seconds (``RAY_health_check_*`` at head start), so pielab counts a preemption, not a
failure: with ``max_failures: 0`` a failure would end the trial (and the test). Tune restarts the lost
trial on the head from its last checkpoint, the sweep finishes with exit 0, and ``pielab status`` and
the report count the trial as preempted, apart from failed ones.

Clean-up kills only the PIDs inside the two namespaces (``ip netns pids``) and deletes them: never
``ray stop``, never a kill by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from helpers import epochs_trained, journal, metrics_epochs_safe, results, starts, tiny_spec

REPO = Path(__file__).resolve().parents[1]
RAY = str(REPO / ".venv" / "bin" / "ray")
PIELAB = str(REPO / ".venv" / "bin" / "pielab")
PORT = 6391


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def netns_pids(ns: str) -> list[int]:
    proc = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def kill_namespace(ns: str) -> list[int]:
    killed = []
    for _ in range(20):
        pids = netns_pids(ns)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return killed


class TwoNodes:
    def __init__(self, root: Path) -> None:
        pid = os.getpid()
        self.a, self.b = f"pl-{pid}-a", f"pl-{pid}-b"
        self.va, self.vb = f"pl{pid}a"[:15], f"pl{pid}b"[:15]
        x = pid % 250 + 1
        self.ip_a, self.ip_b = f"10.213.{x}.1", f"10.213.{x}.2"
        self.address = f"{self.ip_a}:{PORT}"
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.ray_tmp = tempfile.mkdtemp(prefix="plr-")  # short: Ray's socket paths must fit in 107 bytes
        self.env = dict(os.environ, HOME=str(self.home), RAY_AUTH_MODE="token",
                        # "0" (what a local sweep sets) makes every process claim 127.0.0.1 and
                        # `ray start --address` refuses to join ("Multi-node Ray clusters are not
                        # supported"); inside these namespaces the only other address is the veth's.
                        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1", RAY_USAGE_STATS_ENABLED="0",
                        # GCS declares a silent node dead after ~3 s instead of ~30 s
                        RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
                        RAY_health_check_failure_threshold="3", RAY_health_check_initial_delay_ms="1000")
        self.env.pop("PIELAB_FAULTS", None)

    def create(self) -> None:
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        sh("ip", "link", "add", self.va, "type", "veth", "peer", "name", self.vb)
        sh("ip", "link", "set", self.va, "netns", self.a)
        sh("ip", "link", "set", self.vb, "netns", self.b)
        for ns, dev, ip in ((self.a, self.va, self.ip_a), (self.b, self.vb, self.ip_b)):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def ray_start(self, ns: str, *args: str) -> None:
        proc = sh("ip", "netns", "exec", ns, RAY, "start", *args, "--num-cpus=1", "--num-gpus=0",
                  f"--temp-dir={self.ray_tmp}/{ns[-1]}", "--disable-usage-stats",
                  env=self.env, check=False, timeout=180)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def start(self) -> None:
        # Token auth: one token under the shared HOME, generated once, read by head, worker and driver.
        token = sh(RAY, "get-auth-token", "--generate", env=self.env, check=False, timeout=120)
        assert (self.home / ".ray" / "auth_token").is_file(), token.stdout[-2000:] + token.stderr[-2000:]
        self.ray_start(self.a, "--head", f"--node-ip-address={self.ip_a}", f"--port={PORT}",
                       "--include-dashboard=false")
        self.ray_start(self.b, f"--address={self.address}", f"--node-ip-address={self.ip_b}")

    def destroy(self) -> None:
        for ns in (self.b, self.a):
            kill_namespace(ns)
        for ns in (self.a, self.b):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def spec(cifar_path: str) -> dict:
    # max_failures 0: a lost node counted as the trial's failure would end the trial as failed
    out = tiny_spec(cifar_path, name="node-loss", num_trials=2, epochs=6, max_failures=0)
    out["base"]["model"]["width"] = 8  # epochs long enough to kill a node in the middle of one
    out["base"]["data"].update(train_size=1000, val_size=200, test_size=200)
    return out


def node_of(sweep_dir: Path, trial_id: str) -> str | None:
    """The node IP of a trial's latest start (the trial's journal, tune/<trial>/epochs.log)."""
    nodes = [line.split("node=")[1].split()[0] for line in journal(sweep_dir, trial_id)
             if line.startswith("start ") and "node=" in line]
    return nodes[-1] if nodes else None


@pytest.mark.slow
def test_worker_node_killed_mid_sweep(tmp_path, cifar_path):
    if os.geteuid() != 0:
        raise PermissionError("this test creates network namespaces: it must run as root (CI runs as root)")
    nodes = TwoNodes(tmp_path)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec(cifar_path), sort_keys=False))
    out = tmp_path / "sweep"
    driver = None
    try:
        nodes.create()
        nodes.start()
        driver = subprocess.Popen(["ip", "netns", "exec", nodes.a, PIELAB, "sweep", str(spec_path),
                                   "--address", nodes.address, "--out", str(out)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=nodes.env)
        lost = None
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and lost is None:
            assert driver.poll() is None, "the sweep ended before the node was killed: " + driver.stdout.read()[-4000:]
            for tid in results(out) if (out / "trials").is_dir() else {}:
                # recorded by the driver, so saved: the journal lists an epoch before its report
                if node_of(out, tid) == nodes.ip_b and metrics_epochs_safe(out, tid):
                    lost = tid
            time.sleep(0.3)
        assert lost, "no trial reported a checkpointed epoch from the worker node"
        checkpointed = max(metrics_epochs_safe(out, lost))
        killed = kill_namespace(nodes.b)  # the worker node dies: raylet, its workers, everything
        assert killed
        output, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, output[-4000:]
        res = results(out)
        assert len(res) == 2 and all(r["state"] == "completed" for r in res.values()), res
        assert res[lost]["preemptions"] == 1 and res[lost]["retries"] == 0, res[lost]
        other = next(t for t in res if t != lost)
        assert res[other]["preemptions"] == 0 and res[other]["retries"] == 0, res[other]
        assert "preempted: 1 trial restarted from a checkpoint" in output, output[-4000:]
        lines = journal(out, lost)
        restarts = starts(lines)[1:]
        assert restarts and restarts[0] >= checkpointed - 1 and restarts[0] >= 1, lines  # from its checkpoint
        trained = epochs_trained(lines)
        assert len(trained) - len(set(trained)) <= 1, lines  # at most the epoch in flight redone (no snapshot lag)
        assert metrics_epochs_safe(out, lost) == [1, 2, 3, 4, 5, 6]
        assert node_of(out, lost) == nodes.ip_a  # finished on the head
        status = json.loads((out / "status.json").read_text())
        assert status["preempted"] == 1 and status["preemptions"] == 1, status
        assert status["counts"].get("failed", 0) == 0 and status["end"] == "finished", status
        shown = sh(PIELAB, "status", str(out), env=nodes.env, check=False, timeout=120)
        assert shown.returncode == 0 and "preempted: 1 trial" in shown.stdout, shown.stdout + shown.stderr
        report = sh(PIELAB, "report", str(out), "--out", str(tmp_path / "report"), env=nodes.env, check=False,
                    timeout=300)
        assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
        usage_md = (tmp_path / "report" / "usage.md").read_text()
        assert "| preempted trials (node lost) | 1 |" in usage_md, usage_md
        assert "| retries after a trial failure | 0 |" in usage_md, usage_md
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        nodes.destroy()
    assert not netns_pids(nodes.a) and not netns_pids(nodes.b)
    assert nodes.a not in sh("ip", "netns", "list").stdout
