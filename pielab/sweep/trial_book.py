"""The trials' records in one run of the sweep driver, kept from Tune's trial events.

:class:`TrialBook` turns each event (a trial starts, reports an epoch, restarts, completes, errors) into
its :class:`~pielab.folder.TrialRecord` (the per-epoch rule is the record's ``add_result``) and
hands the record on: to the folder (:class:`~pielab.sweep.folder_writer.FolderWriter`), to W&B
(:class:`~pielab.sweep.tracking_hook.TrackingHook`), to the accounting and to the terminal. It reads
nothing of Tune but the trial objects' ids, configs, results and errors.

A trial's config is resolved here once per driver process, when the trial starts, by
:func:`pielab.config.apply_params` (the one merge rule; its worker applies the same one to the same
base); the Config goes to ``trials/<id>/config.yaml`` and to its W&B run.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from pielab.errors import PielabError
from pielab.folder import (
    END_COMPLETED, END_EARLY, END_FAILED, ENDED_STATES, METRIC_KEYS, PROVENANCE_KEY, RUNNING, SEED_KEY, TrialRecord, end_state, now_iso, planned_epochs,
)
from pielab.text import one_line


class TrialBook:
    """The records of one run of the driver and what happens to them on each of Tune's trial events.

    ``records``: the sweep's records by Tune trial id (those on disk when the run started, updated in
    place); ``base``: the config dict every trial starts from; ``max_t``: the scheduler's last epoch (None
    for FIFO); ``metric``/``mode``/``objectives``: the sweep's; ``scheduler``: its name (reasons say who
    stopped a trial). Helpers: ``writer``, ``accounting``, ``policy``, ``tracking`` (None: W&B off),
    ``display``. ``changed()`` rewrites status.json; ``tracking_checked()`` shows a new W&B failure;
    ``status_source``: what the display asks for the status (the recorder).
    """

    def __init__(self, records: dict[str, TrialRecord], *, base: dict[str, Any], max_t: int | None, metric: str,
                 mode: str, objectives: list[tuple[str, str]], scheduler: str, writer, accounting, policy,
                 tracking, display, changed: Callable[[], None], tracking_checked: Callable[[], None],
                 status_source: Any = None) -> None:
        self.records = records
        self.base, self.max_t, self.scheduler = base, max_t, scheduler
        self.metric, self.mode, self.objectives = metric, mode, [m for m, _ in objectives]
        self.writer, self.accounting, self.policy = writer, accounting, policy
        self.tracking, self.display = tracking, display
        self.changed, self.tracking_checked, self.status_source = changed, tracking_checked, status_source
        self.kept: set[str] = set()  # trials whose recorded end stands (resumed from an older snapshot)
        self.closing: str | None = None  # the reason given to trials the sweep itself stops at its end
        self.reconciled = False
        self._configs: dict[str, Any] = {}  # trial id -> its resolved Config (or the PielabError it raised)

    def planned(self, config: dict[str, Any]) -> int:
        return planned_epochs(config, int(self.base["train"]["epochs"]), self.max_t)

    def resolved(self, trial_id: str, config: dict[str, Any]):
        """The trial's Config, or the PielabError that resolving it raised (the trial fails with it too)."""
        if trial_id not in self._configs:
            from pielab.config import apply_params

            try:
                self._configs[trial_id] = apply_params(self.base, config)
            except PielabError as exc:
                self._configs[trial_id] = exc
        return self._configs[trial_id]

    def reconcile(self, trials) -> None:
        """Once, at the first step: after a crash, a trial that started after Tune's last snapshot is in
        trials/ but not in the restored experiment (Tune replaces it with a new trial): record how it ended."""
        self.reconciled = True
        known = {t.trial_id for t in trials}
        for rec in self.records.values():
            if rec.state == RUNNING and rec.trial_id not in known:
                rec.reason = "interrupted before Tune saved it, so not resumed (a new trial took its place)"
                rec.state, rec.ended = END_FAILED, now_iso()
                self.writer.trial(rec)

    def start(self, trials, trial) -> None:
        tid = trial.trial_id
        rec = self.records.get(tid)
        if rec is not None and rec.state in ENDED_STATES and rec.ended:
            # Resumed from a Tune snapshot older than this trial's end (the driver died in between):
            # it restarts from its last checkpoint and returns at once. Its recorded end stands.
            self.kept.add(tid)
            return
        config = dict(trial.config)
        if rec is None:
            number = next((i for i, t in enumerate(trials) if t is trial), len(self.records))
            rec = TrialRecord(trial_id=tid, params={k: v for k, v in config.items() if k != SEED_KEY},
                              seed=config.get(SEED_KEY), number=number, planned_epochs=self.planned(config),
                              started=now_iso())
            self.records[tid] = rec
            self.writer.config(tid, self.resolved(tid, config), config)
        rec.state, rec.ended = RUNNING, None
        self.accounting.hold(tid)  # from now on it holds its resources
        self.writer.trial(rec)
        if self.tracking is not None:
            resolved = self.resolved(tid, config)
            # a config that does not resolve: its run shows the sampled values (the trial fails with the error)
            self.tracking.start(tid, config if isinstance(resolved, PielabError) else resolved.flat())
        self.changed()

    def result(self, trial, result: dict[str, Any]) -> None:
        rec = self.records.get(trial.trial_id)
        if rec is None or trial.trial_id in self.kept:
            return
        if result.get("diverged") or result.get("failed"):
            rec.reason = one_line(result.get("reason") or "non-finite loss")
            return  # the flagged closing result repeats the last epoch: no new row
        epoch = result.get("epoch")
        if epoch is None:
            return
        epoch = int(epoch)
        if os.environ.get("PIELAB_FAULTS"):  # tests only (pielab.sweep.faults): a bug in the driver
            from pielab.sweep.faults import maybe_driver_fault

            maybe_driver_fault(epoch)
        self._take_provenance(rec, result)
        row = {k: result.get(k) for k in METRIC_KEYS}
        rec.rows[epoch] = row
        rec.add_result(result, self.metric, self.mode, self.objectives)
        self.accounting.hold(rec.trial_id)
        self.policy.budget_spent()
        self.writer.metrics(rec)
        self.writer.trial(rec)
        if self.tracking is not None:
            self.tracking.epoch(rec.trial_id, row, epoch)
            self.tracking_checked()
        self.changed()

    def _take_provenance(self, rec: TrialRecord, result: dict[str, Any]) -> None:
        """The trial's code, versions and device, sent with its first result: into result.json and its W&B config."""
        import json

        text = result.get(PROVENANCE_KEY)
        if not isinstance(text, str):
            return
        try:
            rec.provenance = json.loads(text)
        except ValueError:
            return
        if self.tracking is not None:
            self.tracking.provenance(rec.trial_id, rec.provenance)

    def recover(self, trial) -> None:
        """The trial restarts from its checkpoint: a preemption when its node was lost, else a retry."""
        from pielab.sweep.trial_errors import error_line, node_lost

        rec = self.records.get(trial.trial_id)
        if rec is None:
            return
        self.accounting.hold(trial.trial_id, until_end=True)  # start() marks its next run
        if node_lost(trial):
            rec.preemptions += 1
            rec.reason = (f"restarted from its checkpoint after its node was lost "
                          f"({rec.preemptions} preemption{'s' if rec.preemptions > 1 else ''}; not a retry)")
        else:
            rec.retries += 1
            rec.reason = f"retry {rec.retries} after: {error_line(trial)}"
        self.writer.trial(rec)

    def complete(self, trial) -> None:
        rec = self.records.get(trial.trial_id)
        if rec is None or trial.trial_id in self.kept:
            return
        result = dict(trial.last_result or {})
        state = end_state(result, False, rec.planned_epochs or self.planned(dict(trial.config)))
        if state == END_EARLY:
            rec.reason = self.policy.early_reason(rec, self.closing, self.scheduler)
        elif state == END_COMPLETED:
            rec.reason = None
        self._end(rec, state)

    def error(self, trial) -> None:
        from pielab.sweep.trial_errors import error_line

        rec = self.records.get(trial.trial_id)
        if rec is None:
            return
        rec.reason = error_line(trial)
        self._end(rec, END_FAILED)

    def _end(self, rec: TrialRecord, state: str) -> None:
        self.accounting.hold(rec.trial_id, until_end=True)
        rec.state, rec.ended = state, now_iso()
        self.writer.trial(rec)
        if self.tracking is not None:
            self.tracking.ended(rec, state, failed=state == END_FAILED)
            self.tracking_checked()
        self.writer.results(self.records, self.mode)
        self.changed()
        self.writer.flush()  # an ended trial's record is on storage before Tune starts another
        self.display.trial_ended(self.status_source, rec)

    def close_silently_stopped(self, trials) -> dict[str, str]:
        """End the records of trials that Tune ended without a callback: its time budget (or a
        ``stop_all``) stops the running trials by terminating them, telling neither the callbacks nor the
        searcher. Returns ``{trial id: how it ended}`` (``not_started`` for one never started), which
        the searcher's study must be told."""
        ended: dict[str, str] = {}
        self.closing = self.policy.closing_reason()
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR"):
                continue  # interrupted (Ctrl-C, a crash): resume continues these
            rec = self.records.get(trial.trial_id)
            if rec is None:
                ended[trial.trial_id] = "not_started"
            elif rec.state == RUNNING:
                self.complete(trial)
                ended[trial.trial_id] = rec.state
        return ended

    def release_all(self) -> None:
        """The driver stops: every trial still holding its resources held them until now."""
        for tid in self.accounting.holding():
            self.accounting.hold(tid, until_end=True)
            if tid in self.records:
                self.writer.trial(self.records[tid])
