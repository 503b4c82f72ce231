"""deploy/slurm/pielab.sbatch on a real one-node Slurm cluster (tests/slurm.py starts and stops it).

The job starts its Ray head on 127.0.0.1 at the ports it derives from the job id and runs a tiny CIFAR-10
sweep against it. The second test sends Slurm's time-limit warning (``scancel --signal=USR1 --batch``)
mid-sweep: the script forwards it to the pielab driver, which saves and stops, stops Ray, and
requeues the job; the requeued run continues the same sweep folder, and no trial that had completed
trains again (its journal ``tune/<trial>/epochs.log`` has one ``start`` line).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from slurm import slurm_cluster
from helpers import journal, poll_until, results, starts, tiny_spec

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "slurm" / "pielab.sbatch"
PIELAB = REPO / ".venv" / "bin" / "pielab"


def spec(name: str, num_trials: int, epochs: int) -> dict:
    return tiny_spec(None, name=name, num_trials=num_trials, epochs=epochs, max_failures=1)  # data: PIELAB_DATA_DIR


def job_env(root: Path, data_dir: Path, ray_tmp: str) -> dict[str, str]:
    """What the job inherits through sbatch (--export=ALL): this worktree's code, the test's HOME and data."""
    env = dict(os.environ)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # as from a shell: the script sets its own
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "PIELAB_FAULTS"):
        env.pop(key, None)
    env["HOME"] = str(root / "home")
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    env["PIELAB_DATA_DIR"] = str(data_dir)
    env["PIELAB"] = str(PIELAB)
    env["PIELAB_RAY_TMPDIR"] = ray_tmp
    return env


def ray_base_port(job_id: int) -> int:
    return 10000 + (job_id % 110) * 200  # the script's rule


def listeners(lo: int, hi: int) -> list[str]:
    """Local addresses of TCP listeners on ports lo..hi-1 (``ss``)."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        if port.isdigit() and lo <= int(port) < hi:
            found.append(local)
    return found


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            pids.append(int(proc.name))
    return pids


def wait_until(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    if poll_until(predicate, timeout, interval=0.3):
        return
    tail = log.read_text(errors="replace")[-4000:] if log and log.is_file() else ""
    raise AssertionError(f"{what}: not within {timeout:g} s\n{tail}")


def completed(sweep_dir: Path) -> set[str]:
    if not (sweep_dir / "trials").is_dir():
        return set()
    return {tid for tid, r in results(sweep_dir).items() if r.get("state") == "completed"}


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="plrs-")  # short: Ray's socket paths must fit in 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def submit(cluster, tmp_path: Path, shared_data_dir: Path, ray_tmp: str, name: str, num_trials: int, epochs: int):
    spec_path = tmp_path / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec(name, num_trials, epochs), sort_keys=False))
    env = job_env(tmp_path, shared_data_dir, ray_tmp)
    out = tmp_path / "sweep"
    log = tmp_path / "job.out"
    # The script asks for 2 nodes and a GPU each; this cluster has one node with 2 CPUs and no GPU.
    job_id = cluster.sbatch("--nodes=1", f"--cpus-per-task={cluster.cpus}", "--gpus-per-node=0",
                            f"--output={log}", str(SCRIPT), str(spec_path), str(out), env=env, cwd=tmp_path)
    return job_id, out, log, env


def assert_ray_gone(job_id: int, ray_tmp: str, home: Path) -> None:
    ray_dir = f"{ray_tmp}/pielab-ray-{job_id}"
    wait_until(lambda: not processes_mentioning(ray_dir), 30, f"Ray processes of {ray_dir} still running")
    assert not Path(ray_dir).exists()
    assert not (home / ".ray" / f"pielab-slurm-{job_id}.token").exists()  # the per-job token is deleted
    base = ray_base_port(job_id)
    wait_until(lambda: not listeners(base, base + 200), 30, "the job's Ray ports still listening")


@pytest.mark.slow
def test_sbatch_runs_a_sweep_on_its_own_ray_head(tmp_path, shared_data_dir, ray_tmp):
    with slurm_cluster(cpus=2) as cluster:
        job_id, out, log, env = submit(cluster, tmp_path, shared_data_dir, ray_tmp, "slurm-one", 3, 3)
        base = ray_base_port(job_id)
        # While the sweep runs, every listener in the job's port block is on loopback.
        wait_until(lambda: (out / "trials").is_dir() or cluster.state(job_id) in ("COMPLETED", "FAILED"),
                   300, "the sweep never started", log)
        seen = listeners(base, base + 200)
        state = cluster.wait(job_id, timeout=600)
        text = log.read_text()
        assert state == "COMPLETED", text[-4000:]
        assert any(addr.endswith(f":{base}") for addr in seen), (seen, text[-2000:])  # the head's GCS
        assert all(re.match(r"(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]):\d+$", addr) for addr in seen), seen
        assert f"Ray head 127.0.0.1:{base}" in text
        res = results(out)
        assert len(res) == 3 and all(r["state"] == "completed" for r in res.values()), res
        for tid in res:
            assert len(starts(journal(out, tid))) == 1, journal(out, tid)
        assert "pielab sweep exited with 0" in text
        assert_ray_gone(job_id, ray_tmp, tmp_path / "home")
        # A spec that is not there: the job fails at once with one line, before any Ray starts.
        bad_log = tmp_path / "bad.out"
        bad = cluster.sbatch("--nodes=1", f"--cpus-per-task={cluster.cpus}", "--gpus-per-node=0", f"--output={bad_log}", str(SCRIPT),
                             str(tmp_path / "missing.yaml"), env=env, cwd=tmp_path)
        assert cluster.wait(bad, timeout=120) == "FAILED"
        assert cluster.job(bad).get("ExitCode") == "2:0"
        assert bad_log.read_text().strip().endswith("missing.yaml: no such sweep spec "
                                                    f"(relative paths start at the submit directory {tmp_path})")


@pytest.mark.slow
def test_time_limit_warning_requeues_and_the_requeued_job_resumes(tmp_path, shared_data_dir, ray_tmp):
    with slurm_cluster(cpus=2) as cluster:
        job_id, out, log, env = submit(cluster, tmp_path, shared_data_dir, ray_tmp, "slurm-requeue", 6, 4)
        wait_until(lambda: completed(out) or cluster.state(job_id) not in ("PENDING", "RUNNING", ""),
                   600, "no trial completed", log)
        assert cluster.state(job_id) == "RUNNING", log.read_text()[-4000:]
        done_before = completed(out)
        assert len(done_before) < 6
        # What Slurm does 120 s before the time limit (#SBATCH --signal=B:USR1@120).
        cluster.run("scancel", "--signal=USR1", "--batch", str(job_id))
        # The script stops the sweep and Ray, then `scontrol requeue`s itself. A requeued job waits for
        # a begin time in the future, which the test brings forward, once slurmd has finished with the
        # first run (a launch in the same second as the kill is refused: "already killed").
        wait_until(lambda: cluster.job(job_id).get("Restarts") == "1", 300, "the job was not requeued", log)
        wait_until(lambda: cluster.state(job_id) != "PENDING" or cluster.run(
            "sinfo", "-h", "-o", "%T").stdout.strip() == "idle", 120, "the node never became idle", log)
        time.sleep(3)
        if cluster.state(job_id) == "PENDING":
            cluster.run("scontrol", "update", f"jobid={job_id}", "starttime=now")
        state = cluster.wait(job_id, timeout=900)
        text = log.read_text()
        assert state == "COMPLETED", text[-4000:]
        first, _, second = text.partition("(restart 1)")
        assert "pielab sweep exited with 138" in first and f"requeueing job {job_id}" in first, text[-4000:]
        assert "pielab sweep exited with 0" in second and "exited with 138" not in second, text[-4000:]
        res = results(out)
        assert len(res) == 6 and all(r["state"] == "completed" for r in res.values()), res
        restarted = []
        for tid in res:
            runs = starts(journal(out, tid))
            assert len(runs) in (1, 2), (tid, runs)
            if tid in done_before:
                assert len(runs) == 1, (tid, journal(out, tid))  # completed before the warning: not trained again
            if len(runs) == 2:
                restarted.append(tid)
        assert len(restarted) <= 2, restarted  # only the trials running at the warning start again
        assert len(list(tmp_path.glob("sweep*"))) == 1  # one folder, continued
        assert_ray_gone(job_id, ray_tmp, tmp_path / "home")
