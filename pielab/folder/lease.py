"""One driver per sweep folder, on any host: a lease file that its holder renews.

``<sweep>/driver.lease`` is a small JSON record ``{"host", "boot_id", "pid", "token", "started",
"renewed", "ttl_s"}``. A driver (``pielab sweep`` or ``pielab resume``) must hold it for as long as it
writes the folder:

* **Acquire**: the record is written to a temporary file and ``os.link``-ed to ``driver.lease``.
  ``link`` fails when the name exists, so of two drivers started at the same moment exactly one gets
  it, and a reader never sees half a record (NFS v3+ and local file systems make ``link`` atomic).
* **Renew**: a daemon thread rewrites ``renewed`` every ``ttl_s / 4`` (write-then-rename). Before each
  renewal it checks that the lease still carries its token; if another driver took it over (this one
  was frozen for longer than the TTL), :attr:`DriverLease.lost` is set and the holder should stop.
* **Expire**: a lease whose ``renewed`` is older than ``ttl_s`` belongs to a dead holder (``kill -9``,
  a lost node). On the holder's own machine (same ``host`` and ``boot_id``) a dead pid is stale at
  once, so a resume right after a crash is not kept waiting. A stale lease is taken over by renaming
  it to a unique tombstone (``rename`` of one name succeeds once), checking that the tombstone is the
  record judged stale, and acquiring again.
* **Release**: the holder removes the lease when it exits normally (also on Ctrl-C and errors).

Clocks: ``renewed`` is the holder's wall clock, compared with the reader's; hosts sharing a sweep
folder are assumed to agree within a few seconds (NTP), far below the default TTL of 60 s.
``PIELAB_LEASE_TTL_S`` sets the TTL (tests use a few seconds).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pielab.errors import PielabError
from pielab.folder.layout import LEASE_FILE

DEFAULT_TTL_S = 60.0


class LeaseHeld(PielabError):
    """Another live driver holds the sweep folder."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def lease_ttl() -> float:
    try:
        return max(1.0, float(os.environ.get("PIELAB_LEASE_TTL_S", DEFAULT_TTL_S)))
    except ValueError:
        return DEFAULT_TTL_S


@dataclass
class LeaseRecord:
    host: str
    boot_id: str
    pid: int
    token: str
    started: float
    renewed: float
    ttl_s: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LeaseRecord | None":
        try:
            return cls(host=str(data["host"]), boot_id=str(data.get("boot_id", "")), pid=int(data["pid"]),
                       token=str(data["token"]), started=float(data["started"]), renewed=float(data["renewed"]),
                       ttl_s=float(data["ttl_s"]))
        except (KeyError, TypeError, ValueError):
            return None

    def age(self, now: float | None = None) -> float:
        """Seconds since the holder last renewed."""
        return (time.time() if now is None else now) - self.renewed

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == _boot_id()

    def holder_alive(self) -> bool | None:
        """Whether the holder's process runs (None: it is on another machine, only the TTL can tell)."""
        if not self.on_this_machine():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stale(self, now: float | None = None) -> bool:
        """A lease nobody holds any more: renewal overdue, or its holder's process is gone."""
        return self.age(now) > self.ttl_s or self.holder_alive() is False

    def describe(self) -> str:
        return (f"host {self.host}, pid {self.pid}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}, "
                f"renewed {max(0.0, self.age()):.0f} s ago")


def read_lease(folder: str | Path) -> LeaseRecord | None:
    """The lease record in ``folder``, or None when there is none (or it is unreadable)."""
    try:
        return LeaseRecord.from_json(json.loads((Path(folder) / LEASE_FILE).read_text()))
    except (OSError, ValueError, AttributeError):
        return None


class DriverLease:
    """The lease of one driver on one sweep folder (see the module docstring for the protocol).

    Use as a context manager, or :meth:`acquire` then :meth:`release`. :attr:`lost` is set when
    another driver took the lease over.

    Raises:
        LeaseHeld: from :meth:`acquire`, when a live driver holds the folder.
    """

    def __init__(self, folder: str | Path, ttl_s: float | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LEASE_FILE
        self.ttl_s = float(ttl_s or lease_ttl())
        self.record: LeaseRecord | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ acquiring

    def _new_record(self) -> LeaseRecord:
        now = time.time()
        return LeaseRecord(host=socket.gethostname(), boot_id=_boot_id(), pid=os.getpid(), token=uuid.uuid4().hex,
                           started=now, renewed=now, ttl_s=self.ttl_s)

    def _write_tmp(self, record: LeaseRecord) -> Path:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{LEASE_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(record), f)
        return Path(tmp)

    def _try_create(self, record: LeaseRecord) -> bool:
        tmp = self._write_tmp(record)
        try:
            os.link(tmp, self.path)  # fails if the name exists: the exclusive step
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, stale: LeaseRecord) -> None:
        """Move a stale lease aside, unless it changed since it was judged stale."""
        tomb = self.path.with_name(f".{LEASE_FILE}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, tomb)
        except FileNotFoundError:
            return  # another driver moved it first; the next round sees what is there now
        try:
            moved = LeaseRecord.from_json(json.loads(tomb.read_text()))
        except (OSError, ValueError):
            moved = None
        if moved is not None and moved.token == stale.token and moved.renewed == stale.renewed:
            tomb.unlink(missing_ok=True)
            return
        # Renewed (or replaced) between our read and the rename: put it back if nothing took its place.
        try:
            os.link(tomb, self.path)
        except FileExistsError:
            pass
        tomb.unlink(missing_ok=True)

    def acquire(self) -> "DriverLease":
        self.folder.mkdir(parents=True, exist_ok=True)
        record = self._new_record()
        for _ in range(20):
            if self._try_create(record):
                self.record = record
                self._start_renewing()
                return self
            held = read_lease(self.folder)
            if held is None:
                # Unreadable: a half-written record cannot exist (link is atomic), so it was removed
                # between our link and our read, or is foreign. Judge it by its age.
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age <= self.ttl_s:
                    raise LeaseHeld(f"{self.folder}: {LEASE_FILE} is unreadable and {age:.0f} s old; "
                                    f"another driver may hold the sweep (it expires after {self.ttl_s:g} s)")
                self.path.unlink(missing_ok=True)
                continue
            if not held.stale():
                raise LeaseHeld(
                    f"{self.folder}: another driver is running this sweep ({held.describe()}); watch it with "
                    f"`pielab status {shlex.quote(str(self.folder))}` (its lease expires {held.ttl_s:g} s after its driver stops renewing)")
            self._take_over(held)
            time.sleep(0.05)
        raise LeaseHeld(f"{self.folder}: could not take the driver lease (other drivers keep taking it)")

    # ------------------------------------------------------------------ holding

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="pielab-lease", daemon=True)
        self._thread.start()

    def renew(self) -> bool:
        """Renew now; False (and :attr:`lost` set) when another driver holds the lease."""
        if self.record is None:
            return False
        current = read_lease(self.folder)
        if current is None or current.token != self.record.token:
            self.lost.set()
            return False
        self.record.renewed = time.time()
        tmp = self._write_tmp(self.record)
        try:
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return True  # a transient write error: the next round tries again within the TTL
        return True

    # Errors a renewal may meet and survive: the next round, within the TTL, tries again.
    TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError,)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                if not self.renew():
                    return
            except self.TRANSIENT_ERRORS:
                continue

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.record is not None:
            current = read_lease(self.folder)
            if current is not None and current.token == self.record.token:
                self.path.unlink(missing_ok=True)
        self.record = None

    def __enter__(self) -> "DriverLease":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
