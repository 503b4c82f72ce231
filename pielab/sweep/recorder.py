"""The driver-side Tune callback that keeps the sweep folder, and the sweep's stopper.

:class:`SweepRecorder` holds the sweep's plain settings (what Tune pickles into ``tuner.pkl``) and, in
Tune's ``setup``, builds this run of the driver (:class:`~pielab.sweep.sweep_run.SweepRun`), to which
every Tune event goes. The concerns, one module each:

* :mod:`pielab.sweep.trial_book`: each trial's record from Tune's trial events; a trial's config is
  resolved there once on the driver, when it starts (:func:`pielab.config.apply_params`);
* :mod:`pielab.sweep.folder_writer`: the folder's files (``trials/*``, ``status.json``, ``results.csv``;
  written from the background on object storage, flushed before each snapshot Tune takes, when a
  trial ends and when the sweep ends);
* :mod:`pielab.sweep.tracking_hook`: the W&B runs; :class:`pielab.sweep.display_hook.DisplayHook`: the
  live terminal status;
* :mod:`pielab.sweep.accounting`: wall time, slot-seconds and each trial's ``held_s``;
* :mod:`pielab.sweep.stop_policy`: the time and resource budgets, hopeless sweeps and status.json's
  ``end`` (:class:`SweepStopper` asks it for Tune);
* :mod:`pielab.sweep.signals`: which signal stopped Tune's loop, if one did;
* :mod:`pielab.sweep.trial_errors`: a failed trial's error line, and whether it lost its node (a
  ``preemption``, not a retry).

Only the plain settings travel in ``tuner.pkl`` (:meth:`SweepRecorder.__getstate__`), the same ones as
before these modules existed, so a ``tuner.pkl`` written on either side of that change restores.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

from pielab.errors import DiskFull
from pielab.folder import STATUS_FILE, TrialRecord, load_records, location, now_iso, read_json
from pielab.sweep import faults
from pielab.sweep.search import Deadline


class SweepRecorder(Callback):
    """Driver-side Tune callback: pielab's sweep folder files, W&B runs and the live terminal status.

    It is pickled into Tune's ``tuner.pkl`` when the sweep starts (that is how ``Tuner.restore``
    gets it back), so everything that is not plain data is created in :meth:`setup`.
    """

    def __init__(self, sweep_dir, *, name: str, base: dict[str, Any], metric: str, mode: str,
                 max_t: int | None, num_trials: int, slots: int, time_budget_s: float | None,
                 scheduler: str, tracking: dict[str, Any] | None, address: str | None,
                 optuna: dict[str, str] | None = None, started_at: float | None = None,
                 resources: dict[str, float] | None = None, budget: dict[str, float | None] | None = None,
                 objectives: list[list[str]] | None = None) -> None:
        self.sweep_dir = location(sweep_dir)  # a local Path or an ObjectPath: the folder's files go through it
        self.name = name
        self.base = base  # the config every trial starts from (tuner.trial_base)
        self.metric = metric
        self.mode = mode
        self.max_t = max_t
        self.num_trials = num_trials
        self.slots = slots
        self.time_budget_s = time_budget_s
        self.scheduler = scheduler
        self.tracking = tracking  # {"project", "entity", "mode", "group", "tags"} or None when off
        self.address = address
        self.optuna = optuna  # {"url", "study"}: to close trials that Tune stopped without telling the searcher
        self.started_at = started_at
        self.resources = resources  # {"cpu", "gpu"} each trial reserves: the accounting's rates
        self.budget = budget  # {"cpu_hours", "gpu_hours"} (None: no limit)
        self.objectives = [tuple(o) for o in objectives or []]  # multi-objective: (metric, mode) pairs
        self.deadline = Deadline(time_budget_s)  # shared with the searcher and the stopper
        self.display = None  # a LiveStatus (or None); set by the runner, never pickled
        self._runtime: dict[str, Any] = {}

    # pickling: only the plain settings travel (Tuner.restore builds the rest again in setup)
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["display"] = None
        state["_runtime"] = {}
        if state.get("optuna"):
            # No storage URL in tuner.pkl (it can hold a password, or the folder's old place on disk):
            # setup takes this run's from the active sweep (pielab.sweep.active.running).
            state["optuna"] = {**state["optuna"], "url": None}
        return state

    def get_state(self) -> dict | None:
        """Tune's callback state: the sweep folder already holds ours. Tune asks for it each time it
        snapshots its experiment state (public ``Callback.get_state``), just before it writes that
        snapshot: the folder's queued writes land first, so a snapshot never runs ahead of the folder."""
        self.flush()
        return None

    def set_state(self, state: dict) -> None:
        return None

    # ------------------------------------------------------------------ this run's helpers

    # ------------------------------------------------------------------ this run

    @property
    def records(self) -> dict[str, TrialRecord]:
        return self._runtime.setdefault("records", {})

    def _run(self):
        """This run's :class:`~pielab.sweep.sweep_run.SweepRun`: made by :meth:`setup`, or with defaults
        (no earlier runs, no signal handlers) when Tune never called it."""
        run = self._runtime.get("run")
        if run is None:
            from pielab.sweep.sweep_run import SweepRun

            run = self._runtime["run"] = SweepRun(self, self.records, {}, time.time(), None)
        return run

    def bind(self, active) -> None:
        """Take this run's settings (an :class:`~pielab.sweep.active.ActiveSweep`): the sweep folder
        where it is now, the study's URL, the live display. The study's name stays the one it was
        created with (a moved folder keeps its study)."""
        study = (self.optuna or {}).get("study")
        for key, value in active.recorder.items():
            setattr(self, key, value)
        self.deadline.budget_s = self.time_budget_s  # `pielab resume --set time_budget_s=...` (shared object)
        if study and self.optuna:
            self.optuna = {**self.optuna, "study": study}
        self.display = active.display

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        from pielab.sweep.active import active_sweep
        from pielab.sweep.sweep_run import SweepRun

        active = active_sweep()
        if active is not None:
            self.bind(active)
        previous = read_json(self.sweep_dir / STATUS_FILE) or {}
        records = self._runtime["records"] = load_records(self.sweep_dir)
        old = self._runtime.get("run")
        run = self._runtime["run"] = SweepRun(self, records, previous, self.started_at or time.time(),
                                              previous.get("started") or now_iso(self.started_at),
                                              writer=old.writer if old is not None else None)
        self.deadline.start()  # as Tune's own budget: from the start of tuning, whole for each run or resume
        run.interrupts.install()  # Tune installed its handlers before setup
        self.started_at = None  # a resumed run measures from its own start
        self.budget_spent()
        self.write_status()
        run.display.start(self)

    def study(self) -> str:
        """The sweep's study name (fixed at creation; a moved folder keeps it): W&B run ids derive from it."""
        from pielab.folder import study_name

        return (self.optuna or {}).get("study") or study_name(self.sweep_dir)

    def interrupted(self) -> bool:
        """Whether this run was stopped by a signal (Ctrl-C, SIGTERM, SIGUSR1): nothing running has ended."""
        return self._run().interrupts.stopped()

    def interrupt_signal(self) -> str | None:
        """``SIGINT``, ``SIGTERM`` or ``SIGUSR1``: the signal that stopped this run, else None."""
        return self._run().interrupts.signal_name()

    def usage(self) -> dict[str, float]:
        """CPU-hours and GPU-hours used so far (running trials up to now)."""
        return self._run().accounting.usage()

    def budget_spent(self) -> str | None:
        """Why the resource budget is used up (and then the searcher asks for no new trial), else None."""
        return self._run().policy.budget_spent()

    def hopeless(self) -> str | None:
        """Why the sweep should stop now: its first trials all failed before any epoch (so would all)."""
        return self._run().policy.hopeless(self.records)

    def flush(self) -> None:
        """Wait until every file queued for object storage is written (a no-op on a local folder)."""
        run = self._runtime.get("run")
        if run is not None:
            run.writer.flush()

    def status(self, final: bool = False) -> dict[str, Any]:
        """status.json's dict (the live display reads it too)."""
        return self._run().status(final)

    def write_status(self, final: bool = False) -> None:
        self._run().write_status(final)

    # ------------------------------------------------------------------ Tune hooks

    def on_step_begin(self, iteration, trials, **info) -> None:
        book = self._run().book
        if book.reconciled:
            return
        book.reconcile(trials)
        from pielab.sweep.active import active_sweep

        generator = getattr(active_sweep(), "generator", None)
        if generator is not None:  # a restore: the search state may count trials the experiment lost
            generator.replace_lost_trials(len(trials))

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._run().book.start(trials, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._run().book.result(trial, result)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        _stop_if_disk_full(trial)  # a retry would fill the same disk: stop the sweep, resumable
        self._run().book.recover(trial)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._run().book.complete(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        _stop_if_disk_full(trial)  # not the trial's failure: it resumes from its last checkpoint
        self._run().book.error(trial)

    def on_experiment_end(self, trials, **info) -> None:
        self._run().close(trials)


def _stop_if_disk_full(trial) -> None:
    """Raise :class:`~pielab.errors.DiskFull` when the trial's error is a full disk: the exception ends Tune's
    loop (its callbacks raise through it), the sweep is recorded interrupted by it, and the command says so
    in one line."""
    from pielab.files import disk_full
    from pielab.sweep.trial_errors import error_line

    line = error_line(trial)
    if disk_full(line):
        raise DiskFull(f"trial {trial.trial_id}: {line}")


class SweepStopper(Stopper):
    """Ends trials when the sweep's time (or resource) budget is spent, and the sweep when it is hopeless.

    Budget: each running trial stops at its next epoch boundary through Tune's normal STOP path
    (scheduler, searcher and callbacks all hear of it; no half-trained epoch is thrown away), and the
    searcher asks for no new trial (both read the same :class:`~pielab.sweep.search.Deadline`).
    Hopeless: the first trials all failed before any epoch (missing data, a bad config), so every
    other trial would fail the same way; the user hears it now, not in an hour. The rules are
    :class:`~pielab.sweep.stop_policy.StopPolicy`'s; this class stays here because ``tuner.pkl`` names it.
    """

    def __init__(self, recorder: SweepRecorder, deadline) -> None:
        self.recorder = recorder
        self.deadline = deadline

    def __call__(self, trial_id: str, result: dict) -> bool:
        injected = faults.budget_fault(int(result.get("epoch") or 0))  # tests only (PIELAB_FAULTS)
        if injected:
            self.deadline.exhaust(injected)
        return self.deadline.passed() or self.recorder.budget_spent() is not None

    def stop_all(self) -> bool:
        return self.recorder.hopeless() is not None
