"""Ray processes that a killed driver left behind, found and ended by PID.

``kill -9`` of ``pielab sweep`` leaves the local Ray it started running: ``ray::DashboardAgent`` and
``ray::RuntimeEnvAgent`` ignore SIGTERM and outlive their raylet. Before a local driver starts Ray it puts
:data:`DRIVER_VAR` (``<sweep folder>|<driver pid>``) in its environment; every process of that Ray (GCS,
raylet, agents, workers) inherits it. The next ``pielab resume`` or ``pielab status`` of the same folder ends
the processes that carry this folder's mark under a driver that is no longer alive, and says so; nothing
else on the machine is touched (other users' processes, other folders' sweeps, a live driver's Ray, Ray
clusters joined with ``--address``, which pielab did not start).

Linux only (``/proc``); elsewhere nothing is found.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

DRIVER_VAR = "PIELAB_SWEEP_DRIVER"


def mark(folder: str | os.PathLike) -> None:
    """Mark this driver's environment (and so every process of the local Ray it starts next) with the
    sweep folder and this process's pid."""
    os.environ[DRIVER_VAR] = f"{Path(folder).resolve()}|{os.getpid()}"


def alive(pid: int) -> bool:
    """True for a running process (a zombie, ended but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _marks(pid: str) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return None
    prefix = DRIVER_VAR.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def find(folder: str | os.PathLike) -> list[tuple[int, str]]:
    """``(pid, name)`` of this user's processes that carry ``folder``'s mark under a driver that is dead."""
    target = str(Path(folder).resolve())
    me, uid, found = os.getpid(), os.getuid(), []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        value = _marks(entry.name)
        if not value or "|" not in value:
            continue
        where, _, driver = value.rpartition("|")
        if where != target or not driver.isdigit() or alive(int(driver)):
            continue
        try:
            name = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace") or entry.name
        except OSError:
            continue
        found.append((int(entry.name), Path(name).name if name.startswith("/") else name))
    return sorted(found)


def end(folder: str | os.PathLike, wait_s: float = 5.0) -> list[tuple[int, str]]:
    """End :func:`find`'s processes (SIGKILL: the agents ignore SIGTERM) and return what was ended."""
    found = find(folder)
    for pid, _ in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(alive(pid) for pid, _ in found):
        time.sleep(0.1)
    return found


def describe(ended: list[tuple[int, str]]) -> str:
    """``ended 2 Ray processes left by this folder's earlier driver: ray::DashboardAgent (pid 123), ...``"""
    names = ", ".join(f"{name} (pid {pid})" for pid, name in ended[:6])
    more = f" and {len(ended) - 6} more" if len(ended) > 6 else ""
    return f"ended {len(ended)} Ray process(es) left by this folder's earlier driver: {names}{more}"
