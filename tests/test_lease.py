"""The driver lease (pielab/sweep/lease.py): exactly one driver per sweep folder, across processes and hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import lease_racer
from pielab.folder.lease import LEASE_FILE, DriverLease, LeaseHeld, read_lease

RACER = lease_racer(setup="from pielab.folder.lease import DriverLease",
                    acquire="lease = DriverLease(Path(where), ttl_s=30).acquire()")


def test_drivers_started_together_exactly_one_gets_the_lease(tmp_path: Path) -> None:
    go = time.time() + 3.0  # every racer spins until the same instant
    folder, marks = tmp_path / "sweep", tmp_path / "marks"
    folder.mkdir()
    marks.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(folder), str(go), str(marks), "5"],
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["holder"] + ["refused"] * 5, outs
    assert not (folder / LEASE_FILE).exists()  # released on exit
    assert not [p for p in folder.iterdir()], list(folder.iterdir())  # no temporary files left


def _write_record(folder: Path, **fields) -> None:
    record = {"host": "elsewhere", "boot_id": "other-boot", "pid": 1, "token": "t0", "started": time.time(),
              "renewed": time.time(), "ttl_s": 3.0, **fields}
    (folder / LEASE_FILE).write_text(json.dumps(record))


def test_a_live_lease_of_another_host_is_respected_until_it_expires(tmp_path: Path) -> None:
    _write_record(tmp_path, ttl_s=3.0)
    with pytest.raises(LeaseHeld, match="host elsewhere, pid 1"):
        DriverLease(tmp_path, ttl_s=3.0).acquire()
    time.sleep(3.5)  # its holder never renewed: after the TTL it is stale
    lease = DriverLease(tmp_path, ttl_s=3.0).acquire()
    try:
        held = read_lease(tmp_path)
        assert held is not None and held.pid == os.getpid() and held.token == lease.record.token
    finally:
        lease.release()


def test_a_dead_holder_on_this_machine_is_taken_over_at_once(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    from pielab.folder.lease import _boot_id
    import socket

    _write_record(tmp_path, host=socket.gethostname(), boot_id=_boot_id(), pid=pid, ttl_s=600.0)
    t0 = time.time()
    lease = DriverLease(tmp_path, ttl_s=600.0).acquire()
    assert time.time() - t0 < 2.0
    lease.release()


def test_the_holder_renews_and_notices_when_it_lost_the_lease(tmp_path: Path) -> None:
    lease = DriverLease(tmp_path, ttl_s=1.0).acquire()
    try:
        first = read_lease(tmp_path).renewed
        time.sleep(1.0)
        assert read_lease(tmp_path).renewed > first  # renewed every ttl/4
        assert not lease.lost.is_set()
        _write_record(tmp_path, token="someone-else", ttl_s=1.0)  # taken over while we were frozen
        assert lease.lost.wait(timeout=3.0)
        assert read_lease(tmp_path).token == "someone-else"  # the loser never overwrites the winner
    finally:
        lease.release()
    assert read_lease(tmp_path).token == "someone-else"  # and does not remove it on release
