"""``pielab sweep`` submitted as a Ray Job to a running cluster, as a user of a shared cluster does:

    ray job submit --address http://HEAD:8265 -- pielab sweep SPEC --out DIR --address auto

The test starts a one-node Ray head on 127.0.0.1 with its job server (``ray start --head --block``, so
every Ray process it starts is a descendant of that one process), in a HOME under the test's folder
(Ray 2.60 token auth: the head, the ``ray job`` commands and the job's driver all read
``$HOME/.ray/auth_token``). ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps the head on 127.0.0.1, and a
job's driver inherits it. Two jobs run on it: one passes ``--address auto``, the other relies on the
``RAY_ADDRESS`` that the job server sets. Each must end SUCCEEDED with every trial completed. Clean-up
ends the head's processes by their PIDs (never ``ray stop``, never a kill by name).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from helpers import LOOPBACK, process_tree, results, tiny_spec, tree_sockets

REPO = Path(__file__).resolve().parents[1]
RAY = str(REPO / ".venv" / "bin" / "ray")
PIELAB = str(REPO / ".venv" / "bin" / "pielab")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    """A Ray head on 127.0.0.1 with its dashboard (the job server), run by ``ray start --block``."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="plj-")  # short: Ray's socket paths must fit in 107 bytes
        self.port, self.dash = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.dash}"
        self.env = dict(os.environ, HOME=str(self.home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
                        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        for var in ("RAY_ADDRESS", "PIELAB_FAULTS"):
            self.env.pop(var, None)
        self.proc: subprocess.Popen | None = None
        self.pids: set[int] = set()

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], capture_output=True, text=True, env=self.env, timeout=timeout)

    def start(self) -> None:
        token = self.ray("get-auth-token", "--generate")
        assert (self.home / ".ray" / "auth_token").is_file(), token.stdout[-2000:] + token.stderr[-2000:]
        self.log = open(Path(self.tmp) / "head.log", "w")
        self.proc = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dash}", "--include-dashboard=true",
             f"--temp-dir={self.tmp}", "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats",
             # every other port free now, not Ray's fixed defaults (52365, ...), which another Ray on
             # this machine may hold: the node's job agent would then never register
             *(f"--{name}={free_port()}" for name in (
                 "node-manager-port", "object-manager-port", "ray-client-server-port", "dashboard-agent-listen-port",
                 "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"))],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (Path(self.tmp) / "head.log").read_text()[-3000:]
            self.pids |= process_tree(self.proc.pid)
            if self.ray("job", "list", "--address", self.url, timeout=60).returncode == 0:
                return
            time.sleep(1)
        raise AssertionError("the job server did not answer: " + (Path(self.tmp) / "head.log").read_text()[-3000:])

    def submit(self, job_id: str, entrypoint: list[str]) -> str:
        """Submit, wait for the job to end; returns its final status (SUCCEEDED, FAILED, STOPPED)."""
        for _ in range(20):  # the job agent on the node registers a little after the job server answers
            sub = self.ray("job", "submit", "--address", self.url, "--submission-id", job_id, "--no-wait", "--",
                           *entrypoint)
            if sub.returncode == 0 or "No available agent" not in sub.stderr:
                break
            time.sleep(2)
        assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            self.pids |= process_tree(self.proc.pid)
            text = self.ray("job", "status", "--address", self.url, job_id).stdout
            for state in ("SUCCEEDED", "FAILED", "STOPPED"):
                if f"'{job_id}' {state.lower()}" in text.lower() or f"status: {state}" in text:
                    return state
            time.sleep(2)
        raise AssertionError(f"job {job_id} did not end: {self.logs(job_id)[-3000:]}")

    def logs(self, job_id: str) -> str:
        return self.ray("job", "logs", "--address", self.url, job_id).stdout

    def stop(self) -> None:
        if self.proc is None:
            return
        self.pids |= process_tree(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        for pid in sorted(self.pids):  # whatever outlived it, by the PIDs this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.mark.slow
def test_sweep_as_a_ray_job(tmp_path, cifar_path):
    spec_path = tmp_path / "spec.yaml"
    # data.path comes with each job's --set: a spec that works as submitted from anywhere
    spec_path.write_text(yaml.safe_dump(tiny_spec(None, name="ray-job", num_trials=2, epochs=1), sort_keys=False))
    head = Head(tmp_path)
    try:
        head.start()
        sockets: set[tuple[str, str, str]] = set()
        for job_id, extra in (("pielab-auto", ["--address", "auto"]), ("pielab-env", [])):
            out = tmp_path / job_id
            state = head.submit(job_id, [PIELAB, "sweep", str(spec_path), "--out", str(out),
                                         "--set", f"data.path={cifar_path}", *extra])
            sockets |= tree_sockets(process_tree(head.proc.pid))
            logs = head.logs(job_id)
            assert state == "SUCCEEDED", logs[-4000:]
            assert "the sweep finished: every trial ran" in logs, logs[-4000:]
            res = results(out)
            assert len(res) == 2 and all(r["state"] == "completed" for r in res.values()), res
            assert all((out / "trials" / tid / "metrics.csv").is_file() for tid in res)
        outside = {s for s in sockets if s[0] == "listen" and not LOOPBACK.match(s[1])}
        assert not outside, outside  # the head, its job server and the jobs' drivers stay on 127.0.0.1
    finally:
        head.stop()
    assert head.proc.poll() is not None
