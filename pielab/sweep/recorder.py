"""The driver-side Tune callback that keeps the sweep folder, and the sweep's stopper.

:class:`SweepRecorder` writes pielab's own sweep-folder files (``trials/*``, ``status.json``,
``results.csv``; the format is in :mod:`pielab.sweep.folder`), owns the W&B runs and feeds the live
terminal status. :class:`SweepStopper` ends trials when the time budget is spent and the sweep when
it is hopeless.

Ctrl-C, SIGTERM, SIGUSR1: Tune installs its own SIGINT (and SIGUSR1) handler when ``fit()`` starts,
before it calls the callbacks' ``setup``; there the recorder puts a handler of its own in front of
Tune's, which records the signal and then calls Tune's, and routes SIGTERM to Tune's SIGINT handler
the same way (Tune has none for it; Ray's own would exit at once with a native stack dump). So a
Kubernetes or Slurm SIGTERM saves and stops exactly as Ctrl-C does. On such a stop Tune saves its
experiment state and *terminates* the running trials, so they look exactly like trials its time
budget stopped; only this record tells the two apart. A second SIGTERM/SIGUSR1 stops at once
(:class:`~pielab.sweep.session.Stopped`), as a second Ctrl-C does in Tune.

How a run ended is status.json's ``end`` (see :data:`END_LABELS`); ``finished`` is true for
``finished``, ``time budget reached``, ``budget reached`` and ``failed`` (nothing is left to run), false
otherwise. ``budget reached``: the spec's ``budget.cpu_hours`` / ``gpu_hours`` was used up (status.json
``budget_reason`` says which); it stops the sweep exactly as the time budget does.

Accounting: the recorder measures how long each trial holds its resources (``held_s``, the rule is in
:mod:`pielab.sweep.folder`) and writes the sweep's CPU-hours and GPU-hours to status.json (``usage``).
A trial restarted because its node was lost counts a ``preemption``, not a retry
(:func:`pielab.sweep.compat.count_lost_nodes_as_preemptions` keeps Tune from counting it as a failure).

On object storage the folder's files are written from a background thread, the newest version of
each file winning (:class:`~pielab.sweep.storage.WriteBehind`): a PUT in Tune's controller would hold
up every trial's next epoch. The queue is flushed before each experiment snapshot Tune takes (its
``get_state`` call), when a trial ends and when the sweep ends, signals included; so after a
``kill -9`` the folder holds at least what Tune's snapshot knows, and the epochs redone after the
resume rewrite whatever rows were still queued.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

from pielab.errors import PielabError
from pielab.files import json_text
from pielab.sweep.folder import (
    END_COMPLETED, END_DIVERGED, END_EARLY, END_FAILED, ENDED_STATES, METRIC_KEYS, RUNNING, SEED_KEY, STATUS_FILE,
    TRIALS_DIR, TrialRecord, budget_reached, csv_text, end_state, load_records, location, now_iso, one_line,
    planned_epochs, read_json, recorded_slot_seconds, resource_usage, summarize_records, write_results_csv,
)
from pielab.sweep.search import Deadline
from pielab.yamlfile import dump_yaml

INTERRUPT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGUSR1") if hasattr(signal, name))

# status.json ``end``: how the last run of the driver ended. The CLI maps it to its exit code.
END_FINISHED, END_BUDGET, END_SWEEP_FAILED = "finished", "time budget reached", "failed"
END_RESOURCE_BUDGET = "budget reached"  # budget.cpu_hours / budget.gpu_hours used up
END_INTERRUPTED, END_TERMINATED, END_USR1, END_STOPPED = "interrupted", "terminated", "stopped by SIGUSR1", "stopped"
END_BY_SIGNAL = {"SIGINT": END_INTERRUPTED, "SIGTERM": END_TERMINATED, "SIGUSR1": END_USR1}
FINISHED_ENDS = (END_FINISHED, END_BUDGET, END_RESOURCE_BUDGET, END_SWEEP_FAILED)
# The driver's loop raised (Tune's controller, a callback, the searcher): whatever the callbacks wrote on
# the way out, the sweep did not finish. status.json's ``crash`` holds the error's one line.
END_CRASHED = "crashed"
CRASH_KEY = "crash"


def crash_line(exc: BaseException) -> str:
    """status.json's ``crash``: the driver's error as one line."""
    return one_line(f"{type(exc).__name__}: {exc}", 300)


def record_crash(sweep_dir, exc: BaseException) -> str:
    """Mark the sweep in ``sweep_dir`` (a local Path or an ObjectPath) as crashed: ``finished`` false,
    ``end`` :data:`END_CRASHED`, ``crash`` the error's one line (returned). Tune ends its callbacks on
    the way out of a failed loop, so status.json may just have said ``finished``; a later ``pielab
    resume`` continues the sweep. Never raises: the original error is what the user needs to see."""
    from pielab.sweep.storage import WriteBehind

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


def flag_interrupts(event: threading.Event) -> dict[int, Any]:
    """Put a handler in front of each current SIGINT/SIGUSR1 handler (Tune's, inside ``fit``) that sets
    ``event`` (with ``event.signum``, the first signal) and then calls it; SIGTERM gets the same
    handler in front of Tune's SIGINT handler. A second SIGTERM/SIGUSR1 raises
    :class:`~pielab.sweep.session.Stopped` (stop now, no saving). Returns ``{signal: the handler it
    replaced}`` (empty off the main thread, where Python cannot install handlers and Tune installs
    none either)."""
    from pielab.sweep.session import Stopped

    if threading.current_thread() is not threading.main_thread():
        return {}
    wrapped: dict[int, Any] = {}
    tune_sigint = signal.getsignal(signal.SIGINT)
    plan = [(sig, signal.getsignal(sig)) for sig in INTERRUPT_SIGNALS]
    if hasattr(signal, "SIGTERM"):
        plan.append((signal.SIGTERM, tune_sigint))
    for sig, following in plan:
        if not callable(following):
            continue  # SIG_IGN / SIG_DFL: nothing catches it, so there is no graceful stop to record

        def handler(signum, frame, _following=following):
            if event.is_set() and signum != signal.SIGINT:
                raise Stopped(signum)  # asked twice: stop without saving (Tune's own second Ctrl-C does so)
            if not event.is_set():
                event.signum = signum
            event.set()
            _following(signal.SIGINT, frame)

        handler.pielab_flags = event
        wrapped[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    return wrapped


def unflag_interrupts(wrapped: dict[int, Any]) -> None:
    """Undo :func:`flag_interrupts` where its handler is still the installed one."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, following in wrapped.items():
        if getattr(signal.getsignal(sig), "pielab_flags", None) is not None:
            signal.signal(sig, following)


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
        self.base = base
        self.metric = metric
        self.mode = mode
        self.max_t = max_t
        self.num_trials = num_trials
        self.slots = slots
        self.time_budget_s = time_budget_s
        self.scheduler = scheduler
        self.tracking = tracking  # {"project", "entity", "mode", "group"} or None when off
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
            # setup takes this run's from the active sweep (pielab.sweep.session.running).
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

    # ------------------------------------------------------------------ state

    @property
    def records(self) -> dict[str, TrialRecord]:
        return self._runtime.setdefault("records", {})

    def bind(self, active) -> None:
        """Take this run's settings (an :class:`~pielab.sweep.session.ActiveSweep`): the sweep folder
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
        from pielab.sweep.session import active_sweep

        active = active_sweep()
        if active is not None:
            self.bind(active)
        previous = read_json(self.sweep_dir / STATUS_FILE) or {}
        self._runtime.update(
            records=load_records(self.sweep_dir),
            started=previous.get("started") or now_iso(self.started_at),
            elapsed_before=float(previous.get("elapsed_s") or 0.0),
            # Slot-seconds of the earlier runs, at their own slot counts: `pielab resume --set max_concurrent=K`
            # changes the slots, and efficiency must not charge the new count for the old wall time.
            slot_s_before=recorded_slot_seconds(previous, self.slots),
            t0=self.started_at or time.time(),
            resumes=list(previous.get("resumes") or []) + ([now_iso()] if previous else []),
            tracker=self._make_tracker(),
        )
        self.deadline.start()  # as Tune's own budget: from the start of tuning, whole for each run or resume
        interrupt = threading.Event()
        self._runtime["interrupt"] = interrupt
        self._runtime["signals"] = flag_interrupts(interrupt)  # Tune installed its handlers before setup
        self.started_at = None  # a resumed run measures from its own start
        self.budget_spent()
        self.write_status()
        if self.display is not None:
            self.display.start(self)

    def _make_tracker(self):
        if not self.tracking:
            return None
        from pielab.sweep.tracking import WandbTracker

        t = self.tracking
        from pielab.sweep.storage import local_dir

        # W&B writes its run files locally: in the sweep folder, or beside it for one on object storage
        return WandbTracker(sweep_dir=local_dir(self.sweep_dir), group=t["group"], project=t["project"],
                            entity=t.get("entity"), mode=t["mode"], tags=t.get("tags"))

    def study(self) -> str:
        """The sweep's study name (fixed at creation; a moved folder keeps it): W&B run ids derive from it."""
        from pielab.sweep.folder import study_name

        return (self.optuna or {}).get("study") or study_name(self.sweep_dir)

    def _check_tracker(self) -> None:
        """Show and record a W&B failure once: one warning line on the terminal, ``tracking_error`` in
        status.json. The tracker's worker thread only stores the line; this runs on Tune's thread."""
        tracker = self._runtime.get("tracker")
        if tracker is None or tracker.error is None or self._runtime.get("tracking_error"):
            return
        self._runtime["tracking_error"] = tracker.error
        line = (f"warning: W&B tracking stopped: {tracker.error} "
                "(the sweep goes on without it; status.json: tracking_error)")
        if self.display is not None and hasattr(self.display, "warn"):
            self.display.warn(line)
        else:
            print(line, file=sys.stderr, flush=True)
        self.write_status()

    def interrupted(self) -> bool:
        """Whether this run was stopped by a signal (Ctrl-C, SIGTERM, SIGUSR1): nothing running has ended,
        the sweep is not finished."""
        event = self._runtime.get("interrupt")
        return bool(event is not None and event.is_set())

    def interrupt_signal(self) -> str | None:
        """``SIGINT``, ``SIGTERM`` or ``SIGUSR1``: the signal that stopped this run, else None."""
        event = self._runtime.get("interrupt")
        if event is None or not event.is_set():
            return None
        try:
            return signal.Signals(getattr(event, "signum", signal.SIGINT)).name
        except ValueError:
            return "SIGINT"

    def elapsed(self) -> float:
        return self._runtime.get("elapsed_before", 0.0) + time.time() - self._runtime.get("t0", time.time())

    def slot_seconds(self) -> float:
        """Wall seconds x slots, summed over this sweep's runs (each run at its own ``max_concurrent``)."""
        return self._runtime.get("slot_s_before", 0.0) + (time.time() - self._runtime.get("t0", time.time())) * self.slots

    def _objectives(self) -> list[tuple[str, str]]:
        return [tuple(o) for o in getattr(self, "objectives", None) or []]  # absent in older tuner.pkl

    # ------------------------------------------------------------------ accounting

    def _hold(self, trial_id: str, *, until_end: bool = False) -> None:
        """Add the time since the trial's last mark to its ``held_s``; ``until_end``: it no longer
        holds its resources (it ended, failed, is restarting or the driver stops)."""
        since = self._runtime.setdefault("since", {})
        rec, now = self.records.get(trial_id), time.time()
        if trial_id in since and rec is not None:
            rec.held_s += max(0.0, now - since[trial_id])
        if until_end:
            since.pop(trial_id, None)
        elif rec is not None:
            since[trial_id] = now

    def usage(self) -> dict[str, float]:
        """CPU-hours and GPU-hours used so far (running trials up to now): folder.resource_usage."""
        now = time.time()
        extra = {tid: now - t for tid, t in self._runtime.get("since", {}).items()}
        return resource_usage(self.records, getattr(self, "resources", None) or {"cpu": 1.0, "gpu": 0.0}, extra)

    def budget_spent(self) -> str | None:
        """Why the resource budget is used up (and then the searcher asks for no new trial), else None."""
        if self.deadline.spent:
            return self.deadline.spent
        reason = budget_reached(self.usage(), getattr(self, "budget", None))
        if reason:
            self.deadline.exhaust(reason)
        return reason

    def _trial_dir(self, trial_id: str):
        return self.sweep_dir / TRIALS_DIR / trial_id

    def _planned(self, params: dict[str, Any]) -> int:
        return planned_epochs(params, int(self.base["train"]["epochs"]), self.max_t)

    # ------------------------------------------------------------------ Tune hooks

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._runtime.get("reconciled"):
            return
        # After a crash, a trial that started after Tune's last snapshot is in trials/ but not in
        # the restored experiment (Tune replaces it with a new trial): record how it ended.
        self._runtime["reconciled"] = True
        known = {t.trial_id for t in trials}
        for rec in self.records.values():
            if rec.state == RUNNING and rec.trial_id not in known:
                rec.reason = "interrupted before Tune saved it, so not resumed (a new trial took its place)"
                rec.state, rec.ended = END_FAILED, now_iso()
                self._write_trial(rec)
        from pielab.sweep.session import active_sweep

        generator = getattr(active_sweep(), "generator", None)
        if generator is not None:  # a restore: the search state may count trials the experiment lost
            generator.replace_lost_trials(len(trials))

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        tid = trial.trial_id
        rec = self.records.get(tid)
        if rec is not None and rec.state in ENDED_STATES and rec.ended:
            # Resumed from a Tune snapshot older than this trial's end (the driver died in between):
            # it restarts from its last checkpoint and returns at once. Its recorded end stands.
            self._runtime.setdefault("kept", set()).add(tid)
            return
        params = {k: v for k, v in dict(trial.config).items() if k != SEED_KEY}
        if rec is None:
            number = next((i for i, t in enumerate(trials) if t is trial), len(self.records))
            rec = TrialRecord(trial_id=tid, params=params, seed=trial.config.get(SEED_KEY), number=number,
                              planned_epochs=self._planned(dict(trial.config)), started=now_iso())
            self.records[tid] = rec
            self._write_config(tid, dict(trial.config))
        rec.state, rec.ended = RUNNING, None
        self._hold(tid)  # from now on it holds its resources
        self._write_trial(rec)
        tracker = self._runtime.get("tracker")
        if tracker is not None:
            config_flat = self._resolved(dict(trial.config)).flat()
            from pielab.sweep.tracking import run_id

            tracker.start(tid, config_flat, run_id=run_id(self.study(), tid))
        self.write_status()

    def _resolved(self, params: dict[str, Any]):
        from pielab.sweep.trainable import trial_config

        return trial_config(self.base, params)

    def _write_config(self, trial_id: str, params: dict[str, Any]) -> None:
        try:
            text = dump_yaml(self._resolved(params).to_dict(), sort_keys=False)
        except PielabError as exc:  # the trial itself will fail with the same message
            text = f"# this trial's config does not resolve: {exc}\n" + dump_yaml({"params": params})
        self._put(self._trial_dir(trial_id) / "config.yaml", text)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        rec = self.records.get(trial.trial_id)
        if rec is None or trial.trial_id in self._runtime.get("kept", ()):
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
        rec.add_result(result, self.metric, self.mode, [m for m, _ in self._objectives()])
        self._hold(rec.trial_id)
        self.budget_spent()
        self._put(self._trial_dir(rec.trial_id) / "metrics.csv",
                  csv_text(list(METRIC_KEYS), [rec.rows[e] for e in sorted(rec.rows)]))
        self._write_trial(rec)
        tracker = self._runtime.get("tracker")
        if tracker is not None:
            tracker.log(rec.trial_id, row, epoch)
            tracker.release()  # the first epoch is in: W&B's start-up no longer delays the trials
            self._check_tracker()
        self.write_status()

    def _take_provenance(self, rec: TrialRecord, result: dict[str, Any]) -> None:
        """The trial's code, versions and device, sent with its first result: into result.json and its W&B config."""
        import json

        from pielab.provenance import flat
        from pielab.sweep.folder import PROVENANCE_KEY

        text = result.get(PROVENANCE_KEY)
        if not isinstance(text, str):
            return
        try:
            rec.provenance = json.loads(text)
        except ValueError:
            return
        tracker = self._runtime.get("tracker")
        if tracker is not None:
            tracker.update_config(rec.trial_id, flat(rec.provenance))

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        rec = self.records.get(trial.trial_id)
        if rec is not None:
            self._hold(trial.trial_id, until_end=True)  # on_trial_start marks its next run
            if self._node_lost(trial):
                rec.preemptions += 1
                rec.reason = (f"restarted from its checkpoint after its node was lost "
                              f"({rec.preemptions} preemption{'s' if rec.preemptions > 1 else ''}; not a retry)")
            else:
                rec.retries += 1
                rec.reason = f"retry {rec.retries} after: {self._error_line(trial)}"
            self._write_trial(rec)

    @staticmethod
    def _node_lost(trial) -> bool:
        """Whether the trial restarts because its node was lost: the verdict compat reached where Tune
        counted (or did not count) the failure, else what the trial's error itself says."""
        from pielab.sweep.compat import judged_node_lost, node_lost, trial_node_ip

        verdict = judged_node_lost(trial)
        if verdict is not None:
            return verdict
        try:
            error = trial.get_pickled_error()
        except Exception:  # an error that does not unpickle here: the text is still there
            error = None
        if error is None:
            try:
                error = trial.get_error()
            except Exception:
                error = None
        return node_lost(error, trial_node_ip(trial), wait_s=0.0)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        rec = self.records.get(trial.trial_id)
        if rec is None or trial.trial_id in self._runtime.get("kept", ()):
            return
        result = dict(trial.last_result or {})
        state = end_state(result, False, rec.planned_epochs or self._planned(dict(trial.config)))
        if state == END_EARLY:
            rec.reason = self._runtime.get("closing") or self.deadline.spent or (
                f"time budget of {self.time_budget_s:g} s reached" if self.deadline.passed() else
                f"stopped by {self.scheduler} after epoch {rec.epochs} of {rec.planned_epochs}")
        elif state == END_COMPLETED:
            rec.reason = None
        self._end(trial, rec, state)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        rec = self.records.get(trial.trial_id)
        if rec is None:
            return
        rec.reason = self._error_line(trial)
        self._end(trial, rec, END_FAILED)

    @staticmethod
    def _error_line(trial) -> str:
        try:
            error = trial.get_error()
        except Exception:
            error = None
        if error is None:
            try:
                error = Path(trial.error_file).read_text() if trial.error_file else None
            except (OSError, TypeError):
                error = None
        return one_line(str(error)) if error else "error (see the trial's error.txt under tune/)"

    def _end(self, trial, rec: TrialRecord, state: str) -> None:
        self._hold(rec.trial_id, until_end=True)
        rec.state, rec.ended = state, now_iso()
        self._write_trial(rec)
        tracker = self._runtime.get("tracker")
        if tracker is not None:
            tracker.finish(rec.trial_id, {
                "state": state, "reason": rec.reason, "best/val_acc": rec.best_val_acc, "best/epoch": rec.best_epoch,
                "test/acc": rec.test_acc, "epochs": rec.epochs, "train_time_s": rec.train_time_s,
                "model/params": rec.num_params,
            }, failed=state == END_FAILED)
            self._check_tracker()
        write_results_csv(self.sweep_dir, self.records, self.mode, write=self._put)
        self.write_status()
        self.flush()  # an ended trial's record is on storage before Tune starts another
        if self.display is not None:
            self.display.trial_ended(self, rec)

    def hopeless(self) -> str | None:
        """Why the sweep should stop now: its first trials all failed before any epoch (so would all)."""
        ended = [r for r in self.records.values() if r.state != RUNNING]
        enough = min(3, self.num_trials)
        if len(ended) < enough or any(r.epochs > 0 for r in self.records.values()):
            return None
        if all(r.state == END_FAILED for r in ended):
            reason = f"the first {len(ended)} trials all failed before their first epoch: {ended[0].reason}"
            self._runtime["stop_reason"] = reason
            return reason
        return None

    def _close_silently_stopped(self, trials) -> None:
        """Trials that Tune ended without a callback: its time budget (or a ``stop_all``) stops the
        running trials by terminating them, telling neither the callbacks nor the searcher."""
        if self.interrupted() or self._runtime.get(CRASH_KEY):
            return  # Ctrl-C or a crash: Tune terminated the running trials on its way out; resume continues them
        ended: dict[str, str] = {}
        self._runtime["closing"] = ("the sweep stopped: " + self._runtime["stop_reason"]
                                    if self._runtime.get("stop_reason") else "the sweep stopped")
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR"):
                continue  # interrupted (Ctrl-C, a crash): resume continues these
            rec = self.records.get(trial.trial_id)
            if rec is None:
                ended[trial.trial_id] = "not_started"
            elif rec.state == RUNNING:
                self.on_trial_complete(0, trials, trial)
                ended[trial.trial_id] = rec.state
        if ended and self.optuna and self.optuna.get("url"):  # no URL: restored outside pielab's runner
            from pielab.sweep.search import tell_unreported

            tell_unreported(self.optuna["url"], self.optuna["study"], ended, self.mode,
                            records=self.records, objectives=[m for m, _ in self._objectives()])

    def on_experiment_end(self, trials, **info) -> None:
        from pielab.sweep.compat import loop_error

        error = loop_error()
        if error is not None:  # the running trials were interrupted, not stopped: nothing has finished
            self._runtime[CRASH_KEY] = crash_line(error)
        self._close_silently_stopped(trials)
        for tid in list(self._runtime.get("since", {})):  # interrupted: they held their resources until now
            self._hold(tid, until_end=True)
            if tid in self.records:
                self._write_trial(self.records[tid])
        # Tune ended its loop without a signal only when its searcher had nothing more to propose and
        # every trial had ended (or the stopper ended them all): nothing is left to run, whatever
        # num_trials says (a grid that ran out, a resume of a sweep whose last trial had just ended).
        unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        signame = self.interrupt_signal()
        if self._runtime.get(CRASH_KEY):
            end = END_CRASHED
        elif signame:
            end = END_BY_SIGNAL.get(signame, END_INTERRUPTED)
        elif unfinished:
            end = END_STOPPED
        elif self._runtime.get("stop_reason") or (
                self.records and all(r.state in (END_FAILED, END_DIVERGED) for r in self.records.values())):
            end = END_SWEEP_FAILED
        elif self.deadline.spent:
            end = END_RESOURCE_BUDGET
        elif self.deadline.passed():
            end = END_BUDGET
        else:
            end = END_FINISHED
        self._runtime["end"] = end
        self._runtime["finished"] = end in FINISHED_ENDS
        tracker = self._runtime.get("tracker")
        if tracker is not None:
            tracker.close()
            self._check_tracker()
        write_results_csv(self.sweep_dir, self.records, self.mode, write=self._put)
        self.write_status(final=True)
        self.flush()
        unflag_interrupts(self._runtime.pop("signals", {}))
        if self.display is not None:
            self.display.stop()

    # ------------------------------------------------------------------ files

    def _put(self, path, text: str) -> None:
        """Write one of the folder's files: at once on a local folder, from the background on object
        storage (:class:`~pielab.sweep.storage.WriteBehind`; the newest version of a file wins)."""
        writer = self._runtime.get("writer")
        if writer is None:
            from pielab.sweep.storage import WriteBehind

            writer = self._runtime["writer"] = WriteBehind()
        writer.put(path, text)

    def flush(self) -> None:
        """Wait until every file queued for object storage is written (a no-op on a local folder)."""
        writer = self._runtime.get("writer")
        if writer is not None:
            writer.flush()

    def _write_trial(self, rec: TrialRecord) -> None:
        self._put(self._trial_dir(rec.trial_id) / "result.json", json_text(rec.to_json()))

    def status(self, final: bool = False) -> dict[str, Any]:
        summary = summarize_records(self.records, self.mode, self._objectives())
        elapsed, slot_s = self.elapsed(), self.slot_seconds()
        started_trials = len(self.records)
        running = {tid: {"epoch": rec.epochs, "planned_epochs": rec.planned_epochs, "best_value": rec.best_value}
                   for tid, rec in self.records.items() if rec.state == RUNNING}
        return {
            "name": self.name,
            "sweep_dir": str(self.sweep_dir),
            "study": (self.optuna or {}).get("study"),
            "metric": self.metric,
            "mode": self.mode,
            **({"objectives": [{"metric": m, "mode": d} for m, d in self._objectives()]} if self._objectives() else {}),
            "num_trials": self.num_trials,
            "slots": self.slots,
            "started_trials": started_trials,
            # A finished sweep has nothing to go, whether its budget or its searcher ended it first.
            "pending": 0 if final and self._runtime.get("finished") else max(0, self.num_trials - started_trials),
            **summary,
            "running": running,
            "started": self._runtime.get("started"),
            "updated": now_iso(),
            "elapsed_s": round(elapsed, 3),
            "time_left_s": self.deadline.left() if self.time_budget_s else None,
            "usage": self.usage(),  # CPU-hours and GPU-hours (pielab.sweep.folder: resource accounting)
            "budget": {k: v for k, v in (getattr(self, "budget", None) or {}).items() if v is not None} or None,
            "budget_reason": self.deadline.spent,
            "slot_s": round(slot_s, 3),
            "efficiency": round(summary["trial_time_s"] / slot_s, 4) if slot_s > 0 else None,
            "finished": bool(self._runtime.get("finished")) if final else False,
            "end": self._runtime.get("end") if final else None,
            "signal": self.interrupt_signal() if final else None,
            CRASH_KEY: self._runtime.get(CRASH_KEY) if final else None,  # the driver's error, when it crashed
            "stop_reason": self._runtime.get("stop_reason"),
            "resumes": self._runtime.get("resumes", []),
            "address": self.address,
            "driver": {"host": socket.gethostname(), "pid": os.getpid(), "alive": not final},
            "wandb": (self.tracking or {}).get("mode", "disabled"),
            "tracking_error": self._runtime.get("tracking_error"),
        }

    def write_status(self, final: bool = False) -> None:
        self._put(self.sweep_dir / STATUS_FILE, json_text(self.status(final)))


class SweepStopper(Stopper):
    """Ends trials when the sweep's time (or resource) budget is spent, and the sweep when it is hopeless.

    Budget: each running trial stops at its next epoch boundary through Tune's normal STOP path
    (scheduler, searcher and callbacks all hear of it; no half-trained epoch is thrown away), and the
    searcher asks for no new trial (both read the same :class:`~pielab.sweep.search.Deadline`).
    Hopeless: the first trials all failed before any epoch (missing data, a bad config), so every
    other trial would fail the same way; the user hears it now, not in an hour.
    """

    def __init__(self, recorder: SweepRecorder, deadline) -> None:
        self.recorder = recorder
        self.deadline = deadline

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.deadline.passed() or self.recorder.budget_spent() is not None

    def stop_all(self) -> bool:
        return self.recorder.hopeless() is not None
