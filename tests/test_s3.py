"""Sweep folders on object storage, against a real S3-compatible server on 127.0.0.1 (SeaweedFS,
tests/s3server.py) and a real PostgreSQL for the Optuna study (tests/postgres.py).

Everything a user does goes through ``.venv/bin/pielab`` in a subprocess; the test reads the bucket
back with ``pyarrow.fs``. Credentials reach pielab only through the standard AWS variables, and the
test greps every object in the bucket, the local files and the output for them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import (assert_one_line_error, check_resume_past_a_deleted_checkpoint, closed_port, epochs_trained,
                     starts, sweep_env, tiny_spec, wait_for)

BUCKET = "pielab"
SECRET_KEY = "s3-secret-key-do-not-store-7f3a9c"
PG_PASSWORD = "pg-secret-do-not-store-41b2"


@pytest.fixture(scope="module")
def s3():
    from s3server import s3_server

    with s3_server(secret_key=SECRET_KEY, buckets=(BUCKET,)) as server:
        yield server


@pytest.fixture(scope="module")
def pg_url():
    from postgres import postgres_server

    with postgres_server() as url:
        yield url


def s3_env(root: Path, server, *, endpoint_var: bool = True) -> dict[str, str]:
    """A shell's environment with the AWS variables; ``endpoint_var``: the endpoint in AWS_ENDPOINT_URL
    too (`pielab status s3://...` has no spec to read it from)."""
    env = sweep_env(root, **server.env())
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        env.pop(var, None)
    if endpoint_var:
        env["AWS_ENDPOINT_URL"] = server.endpoint
    return env


def remote_spec(cifar_path: str, name: str, pg_url: str, **over) -> dict:
    spec = tiny_spec(cifar_path, name=name, **over)
    spec["storage"] = {"optuna": pg_url.replace("pielab@", f"pielab:{PG_PASSWORD}@")}
    return spec


def write_spec(root: Path, spec: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli(cmd, *args, env, timeout=300, cwd=None):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def read(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def read_json(fs, path: str) -> dict | None:
    try:
        return json.loads(read(fs, path))
    except (OSError, ValueError):
        return None


def objects(fs, prefix: str) -> list[str]:
    from pyarrow import fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def trial_results(fs, sweep: str) -> dict[str, dict]:
    out = {}
    for path in objects(fs, f"{sweep}/trials"):
        if path.endswith("/result.json"):
            data = read_json(fs, path)
            if data:
                out[data["trial_id"]] = data
    return out


def metrics_epochs(fs, sweep: str, trial_id: str) -> list[int]:
    try:
        lines = read(fs, f"{sweep}/trials/{trial_id}/metrics.csv").decode().splitlines()[1:]
    except OSError:
        return []
    return [int(line.split(",")[0]) for line in lines]


def _leaks(data: bytes) -> list[str]:
    """Each secret found in ``data``, with what surrounds it."""
    found = []
    for secret in (SECRET_KEY.encode(), PG_PASSWORD.encode()):
        at = data.find(secret)
        if at >= 0:
            found.append(repr(data[max(0, at - 300):at + len(secret) + 50]))
    return found


def assert_no_secret(fs, prefix: str, local_roots: list[Path], outputs: str) -> None:
    """Neither the secret key nor the database password in any object, local file or output."""
    checked = 0
    for path in objects(fs, prefix):
        checked += 1
        assert not _leaks(read(fs, path)), (path, _leaks(read(fs, path)))
    assert checked > 10, checked
    for root in local_roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink() and path.name != "spec.yaml":  # the test's own input
                leaks = _leaks(path.read_bytes())
                assert not leaks, (path, leaks)
    assert not _leaks(outputs.encode()), _leaks(outputs.encode())


# --------------------------------------------------------------------------- bad input, before Ray




def test_remote_folder_without_a_study_database_is_one_line(tmp_path, cifar_path, pielab_exe):
    """(e) a folder on object storage needs storage.optuna: one line, exit 2, in seconds (no Ray, no
    server contacted); the same for --out, for a malformed URI and for another scheme; and an endpoint
    where nothing answers is one line too."""
    spec_path = write_spec(tmp_path, tiny_spec(cifar_path, name="no-db"))
    env = sweep_env(tmp_path)
    cases = [
        (["--set", "storage.path=s3://bucket/sweeps"], "storage.path: s3://bucket/sweeps is on object storage"),
        (["--out", "gs://bucket/sweeps/one"], "--out: gs://bucket/sweeps/one is on object storage"),
        (["--set", "storage.path=s3://", "--set", "storage.optuna=postgresql://u@h/db"], "expected s3://BUCKET/PREFIX"),
        (["--set", "storage.path=hdfs://nn/sweeps"], "hdfs:// storage is not supported"),
        (["--set", "storage.path=s3://b/p", "--set", "storage.optuna=postgresql://u@h/db",
          "--set", "storage.endpoint=127.0.0.1:9000"], "storage.endpoint: '127.0.0.1:9000': expected http://HOST:PORT"),
        # an object store that does not answer: one line naming the folder and the connection error
        (["--out", "s3://bucket/sweeps/one", "--set", f"storage.endpoint=http://127.0.0.1:{closed_port()}",
          "--set", f"storage.optuna=sqlite:///{tmp_path}/study.db"],
         "cannot create the sweep folder in s3://bucket/sweeps/one"),
    ]
    for args, fragment in cases:
        proc = cli(pielab_exe, "sweep", str(spec_path), *args, env=env, timeout=120)
        line = assert_one_line_error(proc, fragment)
        if "object storage" in fragment:
            assert "storage.optuna" in line, line
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "sweep_results").exists()


# --------------------------------------------------------------------------- the storage module


def test_locations_parse_without_contacting_anything(tmp_path, monkeypatch):
    import pickle

    from pielab.errors import PielabError
    from pielab.folder.storage import ObjectPath, is_remote, local_dir, location, tune_storage

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    p = location("s3://bucket//sweeps/one/", "http://127.0.0.1:9000")
    assert isinstance(p, ObjectPath) and str(p) == "s3://bucket/sweeps/one" and p.name == "one"
    assert str(p / "trials" / "t1") == "s3://bucket/sweeps/one/trials/t1" and str(p.parent) == "s3://bucket/sweeps"
    assert p.fs_path == "bucket/sweeps/one" and (p / "x").endpoint == "http://127.0.0.1:9000"
    assert pickle.loads(pickle.dumps(p)) == p and b"127.0.0.1:9000" in pickle.dumps(p)
    assert is_remote("gs://b/p") and is_remote(p) and not is_remote("/data/s3:/x") and not is_remote(str(tmp_path))
    assert location(str(tmp_path / "a")) == tmp_path / "a" and location("file://" + str(tmp_path)) == tmp_path
    assert local_dir(p) == Path.cwd() / "one" and local_dir(tmp_path) == tmp_path
    assert tune_storage(tmp_path) == (tmp_path.as_posix(), None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9999")
    assert location("s3://b/p").endpoint == "http://127.0.0.1:9999"  # the standard variable
    for bad in ("s3://", "s3://b/p?x=1", "http://host/p", "hdfs://nn/p"):
        with pytest.raises(PielabError):
            location(bad)


def test_storage_operations_on_s3_and_no_secret_in_pickles(s3, monkeypatch):
    """What the sweep folder uses, on the real server: atomic writes (one PUT), reads, listing, the
    folder reader; the filesystem and the paths pickle without the credentials."""
    import pickle

    from pielab.sweep import folder as f
    from pielab.folder.storage import location, read_json, read_text, tune_storage, write_atomic, write_json

    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    root = location(f"s3://{BUCKET}/unit/sweep", s3.endpoint)
    root.mkdir()
    write_atomic(root / "sweep.yaml", "name: unit\nmetric: val/acc\n")
    write_json(root / "trials" / "t1" / "result.json", {"trial_id": "t1", "state": "completed", "best_value": 0.5,
                                                       "epochs": 1, "params": {}})
    write_atomic(root / "trials" / "t1" / "metrics.csv", "epoch,val/acc\n1,0.5\n")
    write_atomic(root / "trials" / "t2" / "config.yaml", lambda tmp: tmp.write_text("a: 1\n"))  # a path writer
    assert read_text(root / "sweep.yaml").startswith("name: unit") and read_json(root / "nope.json") is None
    assert [p.name for p in (root / "trials").iterdir()] == ["t1", "t2"] and (root / "trials").is_dir()
    assert (root / "sweep.yaml").is_file() and not (root / "sweep.yaml").is_dir() and not (root / "x").exists()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)  # a URI alone finds the server through the variable
    opened = f.SweepFolder.open(str(root))
    assert opened.path == root and opened.name == "unit" and opened.study == "sweep"
    records = opened.records()
    assert set(records) == {"t1", "t2"} and records["t1"].rows[1]["val/acc"] == 0.5 and records["t2"].state == "running"
    assert opened.best().trial_id == "t1"
    _, fs = tune_storage(root)
    for obj in (root, root / "trials", fs, opened):
        data = pickle.dumps(obj)
        assert s3.secret_key.encode() not in data and s3.access_key.encode() not in data, obj
    with pytest.raises(Exception, match="bucket 'no-such-bucket' does not exist"):
        location("s3://no-such-bucket/x", s3.endpoint).mkdir()


def test_a_restored_checkpoint_already_deleted_on_s3_resumes_from_the_next(s3, monkeypatch):
    """RELIABILITY.md 9b where it was seen: on S3 a deleted checkpoint is no folder at all, and Tune's
    Checkpoint downloads rather than opens it."""
    from pielab.folder.storage import location, tune_storage

    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    path, fs = tune_storage(location(f"s3://{BUCKET}/unit-ckpt/sweep", s3.endpoint))
    check_resume_past_a_deleted_checkpoint(fs, f"{path}/tune/trial_1")


# --------------------------------------------------------------------------- a sweep on S3


@pytest.mark.slow
def test_sweep_on_s3_then_status_report_export(tmp_path, cifar_path, pielab_exe, s3, pg_url):
    """(a) `--set storage.path=s3://...` with `storage.endpoint`: the sweep completes; every trial's files,
    status.json, results.csv and sweep.yaml are in the bucket, and so is Tune's experiment. (c) `pielab
    status`, `report --out DIR` and `export` take the URI. (d) no credential anywhere."""
    fs = s3.filesystem()
    spec_path = write_spec(tmp_path, remote_spec(cifar_path, "on-s3", pg_url, num_trials=3, epochs=2))
    env = s3_env(tmp_path, s3, endpoint_var=False)  # the spec's storage.endpoint names the server
    sweep = cli(pielab_exe, "sweep", str(spec_path), "--set", f"storage.path=s3://{BUCKET}/sweeps",
                "--set", f"storage.endpoint={s3.endpoint}", env=env, timeout=900, cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert not list(tmp_path.glob("s3*")), "a local folder named after the URI"
    folders = {p.split("/")[2] for p in objects(fs, f"{BUCKET}/sweeps")}
    assert len(folders) == 1, folders
    name = folders.pop()
    prefix = f"{BUCKET}/sweeps/{name}"
    uri = f"s3://{prefix}"
    assert f"sweep folder: {uri}" in sweep.stdout

    status = read_json(fs, f"{prefix}/status.json")
    assert status["finished"] is True and status["counts"]["completed"] == 3, status
    saved = yaml.safe_load(read(fs, f"{prefix}/sweep.yaml"))
    assert saved["storage"]["endpoint"] == s3.endpoint and PG_PASSWORD not in saved["storage"]["optuna"]
    results = trial_results(fs, prefix)
    assert len(results) == 3 and all(r["state"] == "completed" and r["epochs"] == 2 for r in results.values())
    for tid in results:
        assert yaml.safe_load(read(fs, f"{prefix}/trials/{tid}/config.yaml"))["train"]["epochs"] == 2
        assert metrics_epochs(fs, prefix, tid) == [1, 2]
        assert epochs_trained(read(fs, f"{prefix}/tune/{tid}/epochs.log").decode().splitlines()) == [1, 2]
    rows = read(fs, f"{prefix}/results.csv").decode().splitlines()
    assert len(rows) == 4 and rows[0].startswith("rank,trial_id")
    tune_objects = objects(fs, f"{prefix}/tune")
    assert f"{prefix}/tune/tuner.pkl" in tune_objects
    assert any("/experiment_state-" in p for p in tune_objects)
    assert any("/checkpoint_" in p and p.endswith("state.pt") for p in tune_objects)
    assert not any(p.endswith("optuna.db") for p in objects(fs, prefix))

    env = s3_env(tmp_path, s3)  # later commands: the endpoint from AWS_ENDPOINT_URL
    status_out = cli(pielab_exe, "status", uri, env=env, cwd=tmp_path)
    assert status_out.returncode == 0, status_out.stderr[-3000:]
    assert f"({uri}): finished" in status_out.stdout and "3 trials" in status_out.stdout, status_out.stdout

    report = cli(pielab_exe, "report", uri, "--out", str(tmp_path / "report"), env=env, cwd=tmp_path)
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    assert (tmp_path / "report" / "report.html").is_file() and (tmp_path / "report" / "summary.csv").is_file()
    default = cli(pielab_exe, "report", uri, env=env, cwd=tmp_path)  # default: ./SWEEP/report, locally
    assert default.returncode == 0, default.stderr[-3000:]
    assert (tmp_path / name / "report" / "report.html").is_file()

    export = cli(pielab_exe, "export", uri, env=env, cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    exported = tmp_path / name / "best_configs.yaml"
    assert exported.is_file() and f"in sweep on-s3 ({uri})" in exported.read_text()
    assert not [p for p in objects(fs, prefix) if "/report/" in p or p.endswith("best_configs.yaml")]

    wrong = cli(pielab_exe, "status", f"s3://{BUCKET}/nothing-here", env=env, cwd=tmp_path)
    assert_one_line_error(wrong, "no such sweep folder")

    # the Python API reads the same URI (issue 24), in a process that never imports Ray
    code = ("import pielab, sys; s = pielab.load_sweep(sys.argv[1]); print(s.trials_dataframe().shape, s.status); "
            "assert 'ray' not in sys.modules")
    api = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert api.returncode == 0 and api.stdout.startswith("(3, ") and "finished" in api.stdout, api.stderr[-2000:]

    outputs = "".join(p.stdout + p.stderr for p in (sweep, status_out, report, default, export))
    assert_no_secret(fs, BUCKET, [tmp_path, Path(os.environ["RAY_TMPDIR"])], outputs)


# Alone: under the other worker's load, Tune's background upload once lagged so far behind the kill that a trial's
# restored checkpoint was already deleted on S3 (RELIABILITY 9b, not fixed); in one process it never did.
@pytest.mark.slow
@pytest.mark.exclusive
def test_driver_kill_then_resume_on_s3(tmp_path, cifar_path, pielab_exe, s3, pg_url):
    """(b) `kill -9` of `pielab sweep --out s3://...` mid-sweep, then `pielab resume s3://...`: it finishes,
    nothing is lost, completed trials are not rerun (same record, same metrics, same journal) and
    interrupted ones continue from their checkpoints. (d) no credential anywhere."""
    fs = s3.filesystem()
    prefix = f"{BUCKET}/crash/one"
    uri = f"s3://{prefix}"
    spec_path = write_spec(tmp_path, remote_spec(cifar_path, "crash-s3", pg_url, num_trials=3, epochs=3))
    env = s3_env(tmp_path, s3)
    proc = subprocess.Popen([*pielab_exe, "sweep", str(spec_path), "--out", uri], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)

    def one_done_one_running() -> bool:
        res = trial_results(fs, prefix)
        done = [t for t, r in res.items() if r["state"] == "completed"]
        running = [t for t, r in res.items() if r["state"] == "running" and metrics_epochs(fs, prefix, t)]
        return bool(done) and bool(running)

    wait_for(one_done_one_running, proc, timeout=600, what="a finished and a running trial")
    proc.send_signal(signal.SIGKILL)
    first_out = "".join(proc.communicate())
    before = trial_results(fs, prefix)
    done_before = {t: r for t, r in before.items() if r["state"] == "completed"}
    kept = {t: (read(fs, f"{prefix}/trials/{t}/metrics.csv"), read(fs, f"{prefix}/tune/{t}/epochs.log"))
            for t in done_before}
    status = cli(pielab_exe, "status", uri, env=env, cwd=tmp_path)
    assert status.returncode == 0 and "interrupted" in status.stdout, status.stdout + status.stderr[-2000:]

    resumed = cli(pielab_exe, "resume", uri, env=env, timeout=900, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    final = read_json(fs, f"{prefix}/status.json")
    assert final["finished"] is True and len(final["resumes"]) == 1, final
    after = trial_results(fs, prefix)
    for tid, rec in done_before.items():  # not rerun: same record, metrics and journal
        assert after[tid] == rec, tid
        assert (read(fs, f"{prefix}/trials/{tid}/metrics.csv"), read(fs, f"{prefix}/tune/{tid}/epochs.log")) == kept[tid]
    completed = [t for t, r in after.items() if r["state"] == "completed"]
    assert len(completed) >= 3, after
    for tid, rec in after.items():
        if rec["state"] == "failed":  # started after Tune's last snapshot: replaced by a new trial
            assert "interrupted before Tune saved it" in rec["reason"], rec
            continue
        assert metrics_epochs(fs, prefix, tid) == [1, 2, 3], tid  # every epoch once, none lost
        lines = read(fs, f"{prefix}/tune/{tid}/epochs.log").decode().splitlines()
        # On object storage Tune uploads its experiment snapshot in the background, so the restart point
        # can lag what the driver recorded by more than the one epoch a local folder allows (seen
        # 2026-12-07 in 4 of 11 runs, with and without the journal's line moved before the report: a trial
        # with two epochs recorded restarted from scratch; RELIABILITY.md 9b). What must hold: every epoch
        # trained, each interrupted trial restarted exactly once, a trial started after the resume once.
        if tid not in done_before:
            assert sorted(set(epochs_trained(lines))) == [1, 2, 3], (tid, lines)
            assert len(starts(lines)) == (2 if tid in before else 1), (tid, lines)

    again = cli(pielab_exe, "resume", uri, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "already finished" in again.stdout, again.stdout + again.stderr
    assert_no_secret(fs, prefix, [tmp_path, Path(os.environ["RAY_TMPDIR"])], first_out + status.stdout + status.stderr + resumed.stdout
                     + resumed.stderr + again.stdout + again.stderr)


class SlowStore:
    """A pyarrow filesystem under a local folder whose PUTs take ``delay_s`` and fail while ``down``."""

    def __init__(self, root: Path, delay_s: float) -> None:
        import pyarrow.fs

        self.fs = pyarrow.fs.SubTreeFileSystem(str(root), pyarrow.fs.LocalFileSystem())
        self.delay_s, self.down, self.puts = delay_s, False, 0

    def open_output_stream(self, path):
        import time

        time.sleep(self.delay_s)
        if self.down:
            raise OSError("store unreachable")
        self.puts += 1
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)  # an object store has no folders to make
        return self.fs.open_output_stream(path)


def test_write_behind_keeps_the_newest_version_and_flush_waits(tmp_path):
    """The recorder's writes to object storage: put() returns at once, a file rewritten while its PUT is
    queued is written once with its newest text, flush() returns when all is written; a failing store is
    retried and flush() says so in one line when the queue does not drain."""
    import time

    from pielab.folder.storage import ObjectPath, WriteBehind

    store = SlowStore(tmp_path, delay_s=0.05)
    (tmp_path / "b").mkdir()
    folder = ObjectPath("s3://b/sweep", _fs=store)
    writer = WriteBehind()
    start = time.monotonic()
    for i in range(20):
        writer.put(folder / "status.json", f'{{"n": {i}}}')
        writer.put(folder / "trials" / "t1" / "result.json", f"r{i}")
    assert time.monotonic() - start < 0.5  # 40 PUTs would take 2 s
    writer.flush()
    assert (tmp_path / "b" / "sweep" / "status.json").read_text() == '{"n": 19}'
    assert (tmp_path / "b" / "sweep" / "trials" / "t1" / "result.json").read_text() == "r19"
    assert store.puts == writer.writes < 10, store.puts

    writer.put(tmp_path / "local.txt", "at once")  # a local folder: written before put returns
    assert (tmp_path / "local.txt").read_text() == "at once"

    store.down = True
    writer.RETRY_S = 0.05
    writer.put(folder / "status.json", "while down")
    with pytest.raises(OSError, match="not written to object storage after 0.3 s: store unreachable"):
        writer.flush(timeout_s=0.3)
    store.down = False
    writer.flush()
    assert (tmp_path / "b" / "sweep" / "status.json").read_text() == "while down"


# --------------------------------------------------------------------------- gs:// on a storage emulator


@pytest.fixture(scope="module")
def gcs():
    """gcp-storage-emulator (PyPI, pure Python) on a free loopback port, in memory, with one bucket;
    stopped by its PID. Yields its ``http://127.0.0.1:PORT``."""
    import shutil
    import sys
    import time

    from s3server import _answers, _free_ports

    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    exe = str(exe) if exe.exists() else shutil.which("gcp-storage-emulator")
    if not exe:
        raise RuntimeError("gcp-storage-emulator not found: pip install gcp-storage-emulator (pielab's `test` extra)")
    port = _free_ports(1)[0]
    proc = subprocess.Popen([exe, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory",
                             f"--default-bucket={BUCKET}", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sweep_on_gcs_emulator_then_status(tmp_path, cifar_path, pielab_exe, gcs, pg_url):
    """`--out gs://...` against a GCS emulator on 127.0.0.1 ($STORAGE_EMULATOR_HOST, pyarrow's
    GcsFileSystem): the sweep completes, every trial's files and Tune's experiment are in the bucket,
    `pielab status gs://...` reads it back."""
    from pyarrow import fs as pafs

    fs = pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override=gcs.split("://", 1)[1])
    prefix = f"{BUCKET}/gs-sweeps/one"
    uri = f"gs://{prefix}"
    spec_path = write_spec(tmp_path, remote_spec(cifar_path, "on-gcs", pg_url, num_trials=2, epochs=2))
    env = sweep_env(tmp_path, STORAGE_EMULATOR_HOST=gcs)
    sweep = cli(pielab_exe, "sweep", str(spec_path), "--out", uri, env=env, timeout=900, cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert "Traceback" not in sweep.stdout + sweep.stderr and "ERROR" not in sweep.stderr, sweep.stderr[-3000:]
    status = read_json(fs, f"{prefix}/status.json")
    assert status["finished"] is True and status["counts"]["completed"] == 2, status
    results = trial_results(fs, prefix)
    assert len(results) == 2 and all(r["state"] == "completed" and r["epochs"] == 2 for r in results.values())
    for tid in results:
        assert metrics_epochs(fs, prefix, tid) == [1, 2]
        assert epochs_trained(read(fs, f"{prefix}/tune/{tid}/epochs.log").decode().splitlines()) == [1, 2]
    tune_objects = objects(fs, f"{prefix}/tune")
    assert f"{prefix}/tune/tuner.pkl" in tune_objects
    assert any("/checkpoint_" in p and p.endswith("state.pt") for p in tune_objects)
    shown = cli(pielab_exe, "status", uri, env=env, cwd=tmp_path)
    assert shown.returncode == 0 and f"({uri}): finished" in shown.stdout, shown.stdout + shown.stderr[-3000:]
