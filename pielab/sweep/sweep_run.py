"""One run of a sweep's driver (``pielab sweep``, or one ``pielab resume``): its helpers, how it ended,
and ``status.json``.

:class:`SweepRun` is what :class:`~pielab.sweep.recorder.SweepRecorder` builds in Tune's ``setup`` from
its pickled settings: the records on disk, the folder writer, the W&B hook, the clock, the stop policy,
the signal record and the :class:`~pielab.sweep.trial_book.TrialBook` that keeps the records from Tune's
trial events. Nothing here is pickled.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pielab.folder import CRASH_KEY, FINISHED_ENDS, RUNNING, TrialRecord, now_iso, summarize_records
from pielab.sweep.folder_writer import crash_line


class SweepRun:
    """One run of the driver over ``records`` (by Tune trial id, updated in place).

    ``settings``: the recorder, read for its plain settings only (name, folder, metric, budgets, ...);
    ``previous``: the status.json of the earlier runs (``{}`` for a new sweep); ``t0``: when this run
    started (``time.time()``); ``started``: the sweep's first start (ISO text, status.json ``started``; None
    before Tune's setup); ``writer``: the previous run's writer, whose queue this run goes on with.
    """

    def __init__(self, settings, records: dict[str, TrialRecord], previous: dict[str, Any], t0: float,
                 started: str | None, writer=None) -> None:
        from pielab.sweep.accounting import Accounting
        from pielab.sweep.display_hook import DisplayHook
        from pielab.sweep.folder_writer import FolderWriter
        from pielab.sweep.signals import Interrupts
        from pielab.sweep.stop_policy import StopPolicy
        from pielab.sweep.trial_book import TrialBook

        s = self.settings = settings
        self.records = records
        self.objectives = [tuple(o) for o in getattr(s, "objectives", None) or []]  # absent in older tuner.pkl
        self.started = started
        self.resumes = list(previous.get("resumes") or []) + ([now_iso()] if previous else [])
        self.writer = writer or FolderWriter(s.sweep_dir)
        self.display = DisplayHook(s.display)
        self.interrupts = Interrupts()
        self.tracking = None
        if s.tracking:
            from pielab.sweep.tracking_hook import TrackingHook

            self.tracking = TrackingHook(s.tracking, s.sweep_dir, s.study())
            if self.tracking.offline_because:
                self.display.warn(f"warning: {self.tracking.offline_because} (status.json: tracking_error)")
        self.accounting = Accounting(records, getattr(s, "resources", None), s.slots, previous, t0)
        self.policy = StopPolicy(s.deadline, getattr(s, "budget", None), s.num_trials, self.accounting.usage)
        self.book = TrialBook(records, base=s.base, max_t=s.max_t, metric=s.metric, mode=s.mode,
                              objectives=self.objectives, scheduler=s.scheduler, writer=self.writer,
                              accounting=self.accounting, policy=self.policy, tracking=self.tracking,
                              display=self.display, changed=self.write_status, tracking_checked=self.check_tracker,
                              status_source=settings)
        self.crash: str | None = None  # the driver's error as one line, when its loop raised
        self.end: str | None = None  # status.json ``end``, once the run is over
        self.finished = False

    def check_tracker(self) -> None:
        """Show and record a W&B failure once: one warning line on the terminal, ``tracking_error`` in status.json."""
        error = self.tracking.new_error() if self.tracking is not None else None
        if error is None:
            return
        self.display.warn(f"warning: W&B tracking stopped: {error} "
                          "(the sweep goes on without it; status.json: tracking_error)")
        self.write_status()

    def close_silently_stopped(self, trials) -> None:
        """Trials that Tune ended without a callback (its time budget, a ``stop_all``): their records
        end, and so do their trials in the Optuna study, which the searcher was not told either."""
        if self.interrupts.stopped() or self.crash:
            return  # Ctrl-C or a crash: Tune terminated the running trials on its way out; resume continues them
        ended = self.book.close_silently_stopped(trials)
        optuna = self.settings.optuna
        if ended and optuna and optuna.get("url"):  # no URL: restored outside pielab's runner
            from pielab.sweep.search import tell_unreported

            tell_unreported(optuna["url"], optuna["study"], ended, self.settings.mode,
                            records=self.records, objectives=[m for m, _ in self.objectives])

    def close(self, trials) -> None:
        """Tune's loop is over (finished, stopped, interrupted or crashed): end what must end, record how
        the run ended, finish the W&B runs, write the last status.json and put the signal handlers back."""
        from pielab.sweep.compat import loop_error

        error = loop_error()
        if error is not None:  # the running trials were interrupted, not stopped: nothing has finished
            self.crash = crash_line(error)
        self.close_silently_stopped(trials)
        self.book.release_all()  # interrupted: they held their resources until now
        self.end = self.policy.end_label(
            self.records, crashed=bool(self.crash), signal_name=self.interrupts.signal_name(),
            unfinished=any(t.status not in ("TERMINATED", "ERROR") for t in trials))
        self.finished = self.end in FINISHED_ENDS
        if self.tracking is not None:
            self.tracking.close()
            self.check_tracker()
        self.writer.results(self.records, self.settings.mode)
        self.write_status(final=True)
        self.writer.flush()
        self.interrupts.uninstall()
        self.display.stop()

    def status(self, final: bool = False) -> dict[str, Any]:
        """status.json's dict (the live display reads it too)."""
        s, records = self.settings, self.records
        summary = summarize_records(records, s.mode, self.objectives)
        elapsed, slot_s = self.accounting.elapsed(), self.accounting.slot_seconds()
        running = {tid: {"epoch": rec.epochs, "planned_epochs": rec.planned_epochs, "best_value": rec.best_value}
                   for tid, rec in records.items() if rec.state == RUNNING}
        return {
            "name": s.name,
            "sweep_dir": str(s.sweep_dir),
            "study": (s.optuna or {}).get("study"),
            "metric": s.metric,
            "mode": s.mode,
            **({"objectives": [{"metric": m, "mode": d} for m, d in self.objectives]} if self.objectives else {}),
            "num_trials": s.num_trials,
            "slots": s.slots,
            "started_trials": len(records),
            # A finished sweep has nothing to go, whether its budget or its searcher ended it first.
            "pending": 0 if final and self.finished else max(0, s.num_trials - len(records)),
            **summary,
            "running": running,
            "started": self.started,
            "updated": now_iso(),
            "elapsed_s": round(elapsed, 3),
            "time_left_s": s.deadline.left() if s.time_budget_s else None,
            "usage": self.accounting.usage(),  # CPU-hours and GPU-hours (pielab.folder: resource accounting)
            "budget": {k: v for k, v in (getattr(s, "budget", None) or {}).items() if v is not None} or None,
            "budget_reason": s.deadline.spent,
            "slot_s": round(slot_s, 3),
            "efficiency": round(summary["trial_time_s"] / slot_s, 4) if slot_s > 0 else None,
            "finished": self.finished if final else False,
            "end": self.end if final else None,
            "signal": self.interrupts.signal_name() if final else None,
            CRASH_KEY: self.crash if final else None,  # the driver's error, when it crashed
            "stop_reason": self.policy.stop_reason,
            "resumes": self.resumes,
            "address": s.address,
            "driver": {"host": socket.gethostname(), "pid": os.getpid(), "alive": not final},
            "wandb": (s.tracking or {}).get("mode", "disabled"),
            "tracking_error": self.tracking.error if self.tracking is not None else None,
        }

    def write_status(self, final: bool = False) -> None:
        self.writer.status(self.status(final))
