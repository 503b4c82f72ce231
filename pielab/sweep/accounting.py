"""The driver's clock of a sweep: wall time, slot-seconds and how long each trial holds its resources.

The rules (``held_s``, CPU-/GPU-hours) are :mod:`pielab.folder`'s (``resource_usage``); this
module measures. A trial holds its resources from ``on_trial_start`` until it ends, fails, restarts
or the driver stops; each mark adds the time since the previous one to the record's ``held_s``, so a
record on disk is never more than one epoch behind.
"""

from __future__ import annotations

import time
from typing import Any

from pielab.folder import TrialRecord, recorded_slot_seconds, resource_usage


class Accounting:
    """One run of the driver's clock (each ``pielab sweep`` / ``pielab resume`` makes its own).

    ``records``: the sweep's records by trial id (updated in place by :meth:`hold`); ``resources``:
    ``{"cpu", "gpu"}`` each trial reserves; ``slots``: this run's ``max_concurrent``; ``previous``: the
    status.json of the earlier runs (``{}`` for a new sweep); ``t0``: when this run started (time.time()).
    """

    def __init__(self, records: dict[str, TrialRecord], resources: dict[str, float] | None, slots: int,
                 previous: dict[str, Any], t0: float) -> None:
        self.records = records
        self.resources = resources or {"cpu": 1.0, "gpu": 0.0}  # absent in a recorder pickled before accounting
        self.slots = slots
        self.elapsed_before = float(previous.get("elapsed_s") or 0.0)
        # Slot-seconds of the earlier runs, at their own slot counts: `pielab resume --set max_concurrent=K`
        # changes the slots, and efficiency must not charge the new count for the old wall time.
        self.slot_s_before = recorded_slot_seconds(previous, slots)
        self.t0 = t0
        self.since: dict[str, float] = {}  # trial id -> when its held time was last counted

    def elapsed(self) -> float:
        """Wall seconds of this sweep, over all its runs."""
        return self.elapsed_before + time.time() - self.t0

    def slot_seconds(self) -> float:
        """Wall seconds x slots, summed over this sweep's runs (each run at its own ``max_concurrent``)."""
        return self.slot_s_before + (time.time() - self.t0) * self.slots

    def hold(self, trial_id: str, *, until_end: bool = False) -> None:
        """Add the time since the trial's last mark to its ``held_s``; ``until_end``: it no longer
        holds its resources (it ended, failed, is restarting or the driver stops)."""
        rec, now = self.records.get(trial_id), time.time()
        if trial_id in self.since and rec is not None:
            rec.held_s += max(0.0, now - self.since[trial_id])
        if until_end:
            self.since.pop(trial_id, None)
        elif rec is not None:
            self.since[trial_id] = now

    def holding(self) -> list[str]:
        """The trials that hold their resources now."""
        return list(self.since)

    def usage(self) -> dict[str, float]:
        """CPU-hours and GPU-hours used so far (running trials up to now): folder.resource_usage."""
        now = time.time()
        extra = {tid: now - t for tid, t in self.since.items()}
        return resource_usage(self.records, self.resources, extra)
