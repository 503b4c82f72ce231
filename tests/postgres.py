"""A throwaway PostgreSQL server on 127.0.0.1 for tests: its own data folder, port and socket folder,
stopped and deleted afterwards. Runs as the `postgres` system user when the tests run as root
(PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: run `bash scripts/setup.sh --test` (installs postgresql)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL ``postgresql://pielab@127.0.0.1:PORT/pielab`` (trust auth, loopback only)."""
    root = Path(tempfile.mkdtemp(prefix="pielab-pg-"))
    data, sock = root / "data", root / "sock"
    data.mkdir()
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    log = root / "server.log"
    try:
        subprocess.run(_as_postgres([_bin("initdb"), "-D", str(data), "-U", "pielab", "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True, timeout=120)
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
                                     "-o", f"-h 127.0.0.1 -p {port} -k {sock}"]),
                       check=True, capture_output=True, timeout=120)
        subprocess.run(_as_postgres([_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "pielab", "pielab"]),
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql://pielab@127.0.0.1:{port}/pielab"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60)
        for _ in range(50):
            if not (data / "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
