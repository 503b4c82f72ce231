"""The driver's writes to the sweep folder: ``trials/<id>/*``, ``status.json``, ``results.csv``.

The format (file names, keys, the per-epoch rule) is :mod:`pielab.folder`'s; this module only
decides when and how the bytes go out. On object storage the files are written from a background
thread, the newest version of each file winning (:class:`~pielab.folder.storage.WriteBehind`): a PUT in
Tune's controller would hold up every trial's next epoch. :meth:`FolderWriter.flush` waits for the
queue; the recorder calls it before each experiment snapshot Tune takes, when a trial ends and when
the sweep ends, so after a ``kill -9`` the folder holds at least what Tune's snapshot knows.
"""

from __future__ import annotations

from typing import Any

from pielab.errors import PielabError
from pielab.files import json_text
from pielab.folder import (
    CONFIG_FILE, CRASH_KEY, END_CRASHED, METRIC_KEYS, METRICS_FILE, RESULT_FILE, STATUS_FILE, TRIALS_DIR, TrialRecord,
    csv_text, read_json, write_results_csv,
)
from pielab.text import one_line
from pielab.yamlfile import dump_yaml


def crash_line(exc: BaseException) -> str:
    """status.json's ``crash``: the driver's error as one line."""
    return one_line(f"{type(exc).__name__}: {exc}", 300)


def record_crash(sweep_dir, exc: BaseException) -> str:
    """Mark the sweep in ``sweep_dir`` (a local Path or an ObjectPath) as crashed: ``finished`` false,
    ``end`` :data:`END_CRASHED`, ``crash`` the error's one line (returned). Tune ends its callbacks on
    the way out of a failed loop, so status.json may just have said ``finished``; a later ``pielab
    resume`` continues the sweep. Never raises: the original error is what the user needs to see."""
    from pielab.folder.storage import WriteBehind

    line = crash_line(exc)
    try:
        status = read_json(sweep_dir / STATUS_FILE) or {}
        status.update({"finished": False, "end": END_CRASHED, CRASH_KEY: line})
        writer = WriteBehind()
        writer.put(sweep_dir / STATUS_FILE, json_text(status))
        writer.flush()
    except Exception:  # noqa: BLE001 - a full disk, a lost bucket: the crash itself is reported anyway
        pass
    return line


class FolderWriter:
    """Writes one sweep folder's files. ``sweep_dir``: a local Path or an ObjectPath (object storage).

    Every write is queued (:meth:`put`): at once on a local folder, from the background on object
    storage. Nothing here reads Tune's objects: the callers pass records, configs and dicts.
    """

    def __init__(self, sweep_dir) -> None:
        self.sweep_dir = sweep_dir
        self._queue = None  # a WriteBehind, made on the first write

    def put(self, path, text: str) -> None:
        """Write one of the folder's files (the newest version of a file wins)."""
        if self._queue is None:
            from pielab.folder.storage import WriteBehind

            self._queue = WriteBehind()
        self._queue.put(path, text)

    def flush(self) -> None:
        """Wait until every file queued for object storage is written (a no-op on a local folder)."""
        if self._queue is not None:
            self._queue.flush()

    def trial_dir(self, trial_id: str):
        return self.sweep_dir / TRIALS_DIR / trial_id

    def trial(self, rec: TrialRecord) -> None:
        """``trials/<id>/result.json``: the trial's record."""
        self.put(self.trial_dir(rec.trial_id) / RESULT_FILE, json_text(rec.to_json()))

    def config(self, trial_id: str, config, params: dict[str, Any]) -> None:
        """``trials/<id>/config.yaml``: the trial's resolved Config, or, when ``config`` is the
        :class:`~pielab.errors.PielabError` that resolving it raised, that error and the sampled ``params``
        (the trial itself fails with the same message)."""
        if isinstance(config, PielabError):
            text = f"# this trial's config does not resolve: {config}\n" + dump_yaml({"params": params})
        else:
            text = dump_yaml(config.to_dict(), sort_keys=False)
        self.put(self.trial_dir(trial_id) / CONFIG_FILE, text)

    def metrics(self, rec: TrialRecord) -> None:
        """``trials/<id>/metrics.csv``: one row per epoch recorded so far."""
        self.put(self.trial_dir(rec.trial_id) / METRICS_FILE,
                 csv_text(list(METRIC_KEYS), [rec.rows[e] for e in sorted(rec.rows)]))

    def results(self, records: dict[str, TrialRecord], mode: str) -> None:
        """``results.csv``: one row per trial."""
        write_results_csv(self.sweep_dir, records, mode, write=self.put)

    def status(self, status: dict[str, Any]) -> None:
        """``status.json``."""
        self.put(self.sweep_dir / STATUS_FILE, json_text(status))
