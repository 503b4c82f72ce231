"""When a sweep stops, and what status.json says about how it ended.

Three rules, read by the recorder (which owns the records) and by the stopper Tune asks:

* the time budget (``time_budget_s``): a :class:`~pielab.sweep.search.Deadline`, shared with the
  searcher, which asks for no new trial once it has passed;
* the resource budget (``budget.cpu_hours`` / ``gpu_hours``): once used up, the deadline is exhausted
  with the reason, and the sweep ends exactly as on its time budget (``end`` ``budget reached``,
  ``budget_reason``);
* hopeless sweeps: the first trials all failed before any epoch (missing data, a bad config), so every
  other trial would fail the same way; the user hears it now, not in an hour.

How a run ended is status.json's ``end`` (:func:`end_label`); ``finished`` is true for the labels in
:data:`FINISHED_ENDS` (nothing is left to run), false otherwise.
"""

from __future__ import annotations

from pielab.folder import (  # status.json ``end`` labels have their one home there
    END_BUDGET, END_BY_SIGNAL, END_CRASHED, END_DIVERGED, END_FAILED, END_FINISHED, END_INTERRUPTED, END_RESOURCE_BUDGET, END_STOPPED, END_SWEEP_FAILED, RUNNING, TrialRecord, budget_reached,
)


class StopPolicy:
    """The stop rules of one run of the driver.

    ``deadline``: the sweep's Deadline (pickled with the recorder; the searcher holds the same object);
    ``budget``: ``{"cpu_hours", "gpu_hours"}`` (None: no limit); ``num_trials``: the sweep's trial count;
    ``usage``: a function returning the CPU-/GPU-hours used so far
    (:meth:`~pielab.sweep.accounting.Accounting.usage`).
    """

    def __init__(self, deadline, budget: dict[str, float | None] | None, num_trials: int, usage) -> None:
        self.deadline = deadline
        self.budget = budget
        self.num_trials = num_trials
        self.usage = usage
        self.stop_reason: str | None = None  # why the sweep was called hopeless, once it was

    def budget_spent(self) -> str | None:
        """Why the resource budget is used up (and then the searcher asks for no new trial), else None."""
        if self.deadline.spent:
            return self.deadline.spent
        reason = budget_reached(self.usage(), self.budget)
        if reason:
            self.deadline.exhaust(reason)
        return reason

    def stop_trial(self) -> bool:
        """Whether a running trial stops at this epoch boundary: the time or resource budget is spent."""
        return self.deadline.passed() or self.budget_spent() is not None

    def hopeless(self, records: dict[str, TrialRecord]) -> str | None:
        """Why the sweep should stop now: its first trials all failed before any epoch (so would all)."""
        ended = [r for r in records.values() if r.state != RUNNING]
        enough = min(3, self.num_trials)
        if len(ended) < enough or any(r.epochs > 0 for r in records.values()):
            return None
        if all(r.state == END_FAILED for r in ended):
            self.stop_reason = f"the first {len(ended)} trials all failed before their first epoch: {ended[0].reason}"
            return self.stop_reason
        return None

    def early_reason(self, rec: TrialRecord, closing: str | None, scheduler: str) -> str:
        """Why a trial ended before its planned epochs: the sweep stopping (``closing``), a budget, or
        the scheduler."""
        return closing or self.deadline.spent or (
            f"time budget of {self.deadline.budget_s:g} s reached" if self.deadline.passed() else
            f"stopped by {scheduler} after epoch {rec.epochs} of {rec.planned_epochs}")

    def closing_reason(self) -> str:
        """The reason given to trials still running when the sweep itself stopped them."""
        return "the sweep stopped: " + self.stop_reason if self.stop_reason else "the sweep stopped"

    def end_label(self, records: dict[str, TrialRecord], *, crashed: bool, signal_name: str | None,
                  unfinished: bool) -> str:
        """status.json's ``end`` for this run. ``unfinished``: some trial neither terminated nor errored.

        Tune ended its loop without a signal only when its searcher had nothing more to propose and
        every trial had ended (or the stopper ended them all): nothing is left to run, whatever
        num_trials says (a grid that ran out, a resume of a sweep whose last trial had just ended).
        """
        if crashed:
            return END_CRASHED
        if signal_name:
            return END_BY_SIGNAL.get(signal_name, END_INTERRUPTED)
        if unfinished:
            return END_STOPPED
        if self.stop_reason or (records and all(r.state in (END_FAILED, END_DIVERGED) for r in records.values())):
            return END_SWEEP_FAILED
        if self.deadline.spent:
            return END_RESOURCE_BUDGET
        if self.deadline.passed():
            return END_BUDGET
        return END_FINISHED
