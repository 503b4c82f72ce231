"""One driver per sweep folder on object storage: the lease lives in the sweep's Optuna database.

:class:`~pielab.folder.lease.DriverLease` relies on an atomic ``os.link`` in the folder, which object
storage does not offer. A folder on object storage always has an RDB for its study
(``storage.optuna``), and an RDB has the one primitive a lease needs, a compare-and-set. The table
``pielab_driver_lease`` holds one row per sweep folder (its URI is the primary key) with the same
fields as ``driver.lease`` (:class:`~pielab.folder.lease.LeaseRecord`):

* **Acquire**: ``INSERT``; the primary key lets exactly one of two simultaneous drivers in.
* **Renew**: ``UPDATE ... SET renewed WHERE folder = :f AND token = :mine`` every ``ttl_s / 4``; no row
  updated means another driver took the lease over (:attr:`DatabaseLease.lost` is set).
* **Expire**: as for ``driver.lease``: ``renewed`` older than ``ttl_s``, or a dead pid on this machine.
* **Take over** a stale row: ``UPDATE ... WHERE folder = :f AND token = :stale AND renewed = :seen``,
  so of two drivers taking over at once exactly one updates the row.
* **Release**: ``DELETE ... WHERE token = :mine`` when the holder exits.

:func:`lease_for` picks the lease for a folder: this one on object storage, ``driver.lease`` otherwise.
Clocks and ``PIELAB_LEASE_TTL_S``: as in :mod:`pielab.folder.lease`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Any

from pielab.errors import PielabError
from pielab.folder.lease import DriverLease, LeaseHeld, LeaseRecord, lease_ttl, read_lease
from pielab.folder.storage import is_remote

TABLE = "pielab_driver_lease"
_FIELDS = ("host", "boot_id", "pid", "token", "started", "renewed", "ttl_s")


def _table(metadata):
    import sqlalchemy as sa

    return sa.Table(
        TABLE, metadata,
        sa.Column("folder", sa.String(1024), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("started", sa.Float(precision=53), nullable=False),
        sa.Column("renewed", sa.Float(precision=53), nullable=False),
        sa.Column("ttl_s", sa.Float(precision=53), nullable=False),
    )


class DatabaseLease(DriverLease):
    """The lease of one driver on one sweep folder, as a row in the database at ``url`` (the module
    docstring has the protocol). Same interface as :class:`~pielab.folder.lease.DriverLease`.

    Raises:
        LeaseHeld: from :meth:`acquire`, when a live driver holds the folder.
        PielabError: the database cannot be reached (its password masked).
    """

    TRANSIENT_ERRORS = (Exception,)  # any database blip: the next round tries again within the TTL


    def __init__(self, folder: Any, url: str, ttl_s: float | None = None) -> None:
        self.folder = folder
        self.key = str(folder)
        self.url = url
        self.ttl_s = float(ttl_s or lease_ttl())
        self.record: LeaseRecord | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine = None
        self._rows = None

    # ------------------------------------------------------------------ the table

    def _db(self):
        if self._engine is None:
            import sqlalchemy as sa

            try:
                engine = sa.create_engine(self.url, pool_pre_ping=True)
                metadata = sa.MetaData()
                rows = _table(metadata)
                try:
                    metadata.create_all(engine, checkfirst=True)
                except sa.exc.DBAPIError:
                    # Drivers starting together on a fresh database race to create the table, and
                    # PostgreSQL refuses the losers' CREATE (a unique violation in its catalogue, seen in
                    # CI); once the winner's table exists, checkfirst finds it.
                    time.sleep(0.5)
                    metadata.create_all(engine, checkfirst=True)
            except Exception as exc:  # noqa: BLE001 - any driver error: one line, password masked
                from pielab.folder.layout import mask_password
                from pielab.text import one_line

                raise PielabError(f"driver lease: cannot open {mask_password(self.url)!r}: "
                                  f"{mask_password(one_line(str(exc), 200))}") from None
            self._engine, self._rows = engine, rows
        return self._engine, self._rows

    def _read(self) -> LeaseRecord | None:
        engine, rows = self._db()
        with engine.connect() as conn:
            row = conn.execute(rows.select().where(rows.c.folder == self.key)).mappings().first()
        return None if row is None else LeaseRecord.from_json(dict(row))

    def _try_create(self, record: LeaseRecord) -> bool:
        import sqlalchemy as sa

        engine, rows = self._db()
        try:
            with engine.begin() as conn:
                conn.execute(rows.insert().values(folder=self.key, **asdict(record)))
            return True
        except sa.exc.IntegrityError:
            return False

    def _take_over(self, stale: LeaseRecord, record: LeaseRecord) -> bool:
        engine, rows = self._db()
        with engine.begin() as conn:
            done = conn.execute(rows.update().where(
                (rows.c.folder == self.key) & (rows.c.token == stale.token) & (rows.c.renewed == stale.renewed)
            ).values(**asdict(record)))
        return done.rowcount == 1

    # ------------------------------------------------------------------ the lease

    def acquire(self) -> "DatabaseLease":
        record = self._new_record()
        for _ in range(20):
            if self._try_create(record):
                break
            held = self._read()
            if held is None:
                continue  # released between our insert and our read
            if not held.stale():
                raise LeaseHeld(
                    f"{self.key}: another driver is running this sweep ({held.describe()}); watch it with "
                    f"`pielab status {self.key}` (its lease expires {held.ttl_s:g} s after its driver stops renewing)")
            record.renewed = time.time()
            if self._take_over(held, record):
                break
            time.sleep(0.05)
        else:
            raise LeaseHeld(f"{self.key}: could not take the driver lease (other drivers keep taking it)")
        self.record = record
        self._start_renewing()
        return self

    def renew(self) -> bool:
        """Renew now; False (and :attr:`lost` set) when another driver holds the lease."""
        if self.record is None:
            return False
        engine, rows = self._db()
        now = time.time()
        with engine.begin() as conn:
            done = conn.execute(rows.update().where(
                (rows.c.folder == self.key) & (rows.c.token == self.record.token)).values(renewed=now))
        if done.rowcount != 1:
            self.lost.set()
            return False
        self.record.renewed = now
        return True

    def release(self) -> None:
        """Stop renewing and delete the row if it is still ours."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.record is not None and self._engine is not None:
            engine, rows = self._db()
            try:
                with engine.begin() as conn:
                    conn.execute(rows.delete().where((rows.c.folder == self.key) & (rows.c.token == self.record.token)))
            except Exception:  # noqa: BLE001 - unreachable now: the row expires after its TTL
                pass
        self.record = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def read_db_lease(folder: Any, url: str) -> LeaseRecord | None:
    """The lease row of ``folder`` in the database at ``url``, or None when there is none."""
    return DatabaseLease(folder, url)._read()


def lease_for(folder: Any, *, optuna_url: str | None = None, ttl_s: float | None = None) -> DriverLease:
    """The driver lease for a sweep folder: ``driver.lease`` in a local or NFS folder
    (:class:`~pielab.folder.lease.DriverLease`), a row in the study's database (``optuna_url``, the
    URL the sweep connects to, password included) for one on object storage (:class:`DatabaseLease`).

    Raises:
        PielabError: a folder on object storage without ``optuna_url``.
    """
    if is_remote(folder):
        if not optuna_url:
            raise PielabError(f"{folder} is on object storage: its driver lease lives in the study's database, "
                              "and storage.optuna names none")
        return DatabaseLease(folder, optuna_url, ttl_s)
    return DriverLease(folder, ttl_s)


def read_lease_for(folder: Any, optuna_url: str | None = None) -> LeaseRecord | None:
    """The lease record of a sweep folder wherever it lives (``driver.lease``, or the study's database for
    one on object storage), or None when there is none or it cannot be read (an unreachable database)."""
    if not is_remote(folder):
        return read_lease(folder)
    if not optuna_url:
        return None
    try:
        return read_db_lease(folder, optuna_url)
    except Exception:  # noqa: BLE001 - `pielab status` must still show the folder
        return None
