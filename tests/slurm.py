"""A throwaway one-node Slurm cluster on this machine for tests (Debian's slurm-wlm 22.05 and munge).

Its own munge key and socket, its own slurm.conf with free ports, and state, spool, log and pid files
in a temporary folder; the node is this host at 127.0.0.1. The daemons run as root (the tests run as
root, as CI does). On exit every job still in the cluster is cancelled and waited for, then slurmd,
slurmctld and munged are stopped by the PIDs in their pid files: never `pkill`, never `scontrol
shutdown` of anything but this cluster.

slurmctld and slurmd listen on every interface (Slurm 22.05 has no bind-address setting), on ports
picked free here; jobs and the Ray they start stay on loopback.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from helpers import poll_until

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need(path: str) -> str:
    if not (shutil.which(path) or Path(path).is_file()):
        raise RuntimeError(f"{path} not found: run `bash scripts/setup.sh --test` (installs slurm-wlm and munge)")
    return shutil.which(path) or path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_pid_file(pid_file: Path, timeout: float = 20.0) -> None:
    """SIGTERM the daemon named by ``pid_file``, then SIGKILL if it is still there after ``timeout``."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if pid <= 1 or not _pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _wait_for(what: str, check, timeout: float, log: Path | None = None) -> None:
    if poll_until(check, timeout):
        return
    tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
    raise TimeoutError(f"{what} not ready within {timeout:g} s\n{tail}")


class Slurm:
    """Client side of the test cluster: ``env`` has ``SLURM_CONF``; methods wrap the Slurm commands."""

    def __init__(self, root: Path, conf: Path, node: str, cpus: int) -> None:
        self.root, self.conf, self.node, self.cpus = root, conf, node, cpus
        self.env = dict(os.environ, SLURM_CONF=str(conf))

    def run(self, *cmd: str, check: bool = True, env: dict | None = None, timeout: float = 60,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              env={**(env or self.env), "SLURM_CONF": str(self.conf)}, cwd=cwd)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return proc

    def sbatch(self, *args: str, env: dict | None = None, cwd: str | os.PathLike | None = None) -> int:
        out = self.run("sbatch", "--parsable", *args, env=env, cwd=cwd).stdout.strip()
        return int(out.split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, BeginTime, ExitCode, ...); {} once forgotten."""
        proc = self.run("scontrol", "-o", "show", "job", str(job_id), check=False)
        if proc.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))

    def state(self, job_id: int) -> str:
        return self.job(job_id).get("JobState", "")

    def wait(self, job_id: int, states: set[str] = FINAL_STATES, timeout: float = 600) -> str:
        """Poll until the job's state is one of ``states``; returns it. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.state(job_id)
            if state in states:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {state or 'unknown'} after {timeout:g} s")

    def jobs(self) -> list[int]:
        out = self.run("squeue", "-h", "-o", "%i", check=False).stdout
        return [int(x) for x in out.split() if x.isdigit()]


@contextmanager
def slurm_cluster(cpus: int = 2) -> Iterator[Slurm]:
    """Start munged, slurmctld and slurmd for a one-node cluster (this host, ``cpus`` CPUs); stop them after.

    Raises RuntimeError when slurm-wlm or munge is missing, TimeoutError when a daemon does not come up.
    """
    if os.geteuid() != 0:
        raise PermissionError("the Slurm test cluster runs its daemons as root: run the tests as root (CI does)")
    munged, mungekey = _need("/usr/sbin/munged"), _need("/usr/sbin/mungekey")
    slurmctld, slurmd = _need("/usr/sbin/slurmctld"), _need("/usr/sbin/slurmd")
    _need("sbatch")
    root = Path(tempfile.mkdtemp(prefix="pielab-slurm-"))
    root.chmod(0o755)
    munge = root / "munge"
    munge.mkdir()
    # munged runs as the munge user and refuses a socket folder that others cannot traverse, or a key
    # file that others can read.
    shutil.chown(munge, "munge", "munge")
    munge.chmod(0o711)
    sock = munge / "sock"
    for name in ("state", "spool", "log"):
        (root / name).mkdir()
    node = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=pielabtest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={sock}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        # Job ids (and so the Ray ports pielab.sbatch derives from them) differ between test runs.
        f"FirstJobId={1000 + os.getpid() % 50000}",
        "MinJobAge=600",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN",
        f"PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    env = dict(os.environ, SLURM_CONF=str(conf))
    started: list[Path] = []
    cluster = Slurm(root, conf, node, cpus)
    try:
        subprocess.run(["runuser", "-u", "munge", "--", mungekey, "-c", "-k", str(munge / "key")],
                       check=True, capture_output=True, timeout=60)
        started.append(munge / "pid")
        subprocess.run(["runuser", "-u", "munge", "--", munged, "-S", str(sock), f"--key-file={munge / 'key'}",
                        f"--pid-file={munge / 'pid'}", f"--log-file={munge / 'log'}", f"--seed-file={munge / 'seed'}"],
                       check=True, capture_output=True, timeout=60)
        started.append(root / "slurmctld.pid")
        subprocess.run([slurmctld, "-f", str(conf)], check=True, capture_output=True, timeout=60, env=env)
        started.append(root / "slurmd.pid")
        subprocess.run([slurmd, "-f", str(conf)], check=True, capture_output=True, timeout=60, env=env)
        _wait_for("slurmd", lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout,
                  60, root / "log" / "slurmd.log")
        yield cluster
    except BaseException:
        # pytest shows a failed test's stderr: the daemons' own account of what happened.
        for name in ("slurmctld.log", "slurmd.log"):
            log = root / "log" / name
            if log.is_file():
                print(f"--- {name} (last lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-60:]),
                      file=sys.stderr)
        raise
    finally:
        try:
            if (root / "slurmctld.pid").is_file():
                # Jobs outlive slurmd: end them first (their scripts' traps stop what they started).
                for job_id in cluster.jobs():
                    cluster.run("scancel", str(job_id), check=False)
                deadline = time.monotonic() + 90
                while cluster.jobs() and time.monotonic() < deadline:
                    time.sleep(0.5)
        finally:
            for pid_file in reversed(started):
                _stop_pid_file(pid_file)
            shutil.rmtree(root, ignore_errors=True)
