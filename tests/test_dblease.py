"""The driver lease of a sweep folder on object storage (pielab/sweep/dblease.py): a row in the study's
database, one driver per folder, across processes and hosts. SQLite for the protocol, PostgreSQL for a
race between processes on a real server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import lease_racer
from pielab.folder.dblease import TABLE, DatabaseLease, lease_for, read_db_lease
from pielab.folder.lease import DriverLease, LeaseHeld
from pielab.folder.storage import ObjectPath

FOLDER = "s3://bucket/sweeps/one"


def _insert(url: str, **fields) -> None:
    lease = DatabaseLease(FOLDER, url)
    engine, rows = lease._db()
    record = {"folder": FOLDER, "host": "elsewhere", "boot_id": "other-boot", "pid": 1, "token": "t0",
              "started": time.time(), "renewed": time.time(), "ttl_s": 2.0, **fields}
    with engine.begin() as conn:
        conn.execute(rows.insert().values(**record))
    engine.dispose()


def test_lease_for_picks_the_database_for_object_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert type(lease_for(tmp_path)) is DriverLease
    assert isinstance(lease_for(ObjectPath(FOLDER), optuna_url=url), DatabaseLease)
    with pytest.raises(Exception, match="object storage: its driver lease lives in the study's database"):
        lease_for(ObjectPath(FOLDER))


def test_one_holder_renewal_takeover_and_release(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = DatabaseLease(ObjectPath(FOLDER), url, ttl_s=2.0).acquire()
    try:
        with pytest.raises(LeaseHeld, match=f"{FOLDER}: another driver is running this sweep"):
            DatabaseLease(FOLDER, url, ttl_s=2.0).acquire()
        seen = read_db_lease(FOLDER, url)
        assert seen is not None and seen.pid == os.getpid() and seen.token == first.record.token
        time.sleep(1.5)  # the renewing thread (every ttl/4) keeps it fresh past its first TTL
        assert read_db_lease(FOLDER, url).renewed > seen.renewed
        with pytest.raises(LeaseHeld):
            DatabaseLease(FOLDER, url, ttl_s=2.0).acquire()
        # Another folder is independent.
        other = DatabaseLease("s3://bucket/sweeps/two", url, ttl_s=2.0).acquire()
        other.release()
    finally:
        first.release()
    assert read_db_lease(FOLDER, url) is None  # released: the row is gone


def test_stale_rows_are_taken_over_and_the_old_holder_learns_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _insert(url, renewed=time.time() - 10)  # another host's holder stopped renewing 10 s ago
    lease = DatabaseLease(FOLDER, url, ttl_s=2.0).acquire()
    assert read_db_lease(FOLDER, url).token == lease.record.token
    lease._stop.set()  # freeze this holder (as a long pause would) ...
    lease._thread.join()
    lease.record.renewed -= 10
    with sa.create_engine(url).begin() as conn:  # ... until its row looks stale
        conn.execute(sa.text(f"update {TABLE} set renewed = renewed - 10"))
    newer = DatabaseLease(FOLDER, url, ttl_s=2.0).acquire()
    try:
        assert lease.renew() is False and lease.lost.is_set()  # the old holder must stop
        assert read_db_lease(FOLDER, url).token == newer.record.token
        lease.release()  # releasing a lost lease leaves the new holder's row alone
        assert read_db_lease(FOLDER, url).token == newer.record.token
    finally:
        newer.release()


def test_a_dead_holder_on_this_machine_is_stale_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from pielab.folder.lease import _boot_id
    import socket

    _insert(url, host=socket.gethostname(), boot_id=_boot_id(), pid=int(proc.stdout), ttl_s=600.0)
    lease = DatabaseLease(FOLDER, url, ttl_s=600.0).acquire()  # no 600 s wait after a kill -9
    lease.release()


RACER = lease_racer(setup="""\
from pielab.folder.dblease import DatabaseLease
lease = DatabaseLease("s3://bucket/race", where, ttl_s=30)
lease._db()  # connect before the start line""", acquire="lease.acquire()")


@pytest.mark.slow
def test_drivers_started_together_on_postgresql_exactly_one_gets_it(tmp_path: Path) -> None:
    from postgres import postgres_server

    with postgres_server() as url:
        go = time.time() + 8.0
        marks = tmp_path / "marks"
        marks.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", RACER, url, str(go), str(marks), "3"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert sorted(o[0].strip() for o in outs) == ["holder"] + ["refused"] * 3, outs
        assert read_db_lease("s3://bucket/race", url) is None
