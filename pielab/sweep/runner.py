"""Run a sweep: Ray (a local instance on loopback, or a cluster) -> Tune (OptunaSearch, ASHA) -> trials.

A driver-side Tune callback (:class:`SweepRecorder`) writes pielab's own sweep-folder files
(``trials/*``, ``status.json``, ``results.csv``; the format is in :mod:`pielab.sweep.folder`), owns
the W&B runs and feeds the live terminal status. Tune keeps its experiment in ``<sweep>/tune`` and
the Optuna study lives in ``<sweep>/optuna.db``, so ``pielab resume`` continues all three.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback
from ray.tune.stopper import Stopper

from pielab.errors import PielabError
from pielab.sweep.search import Deadline
from pielab.sweep.folder import (
    END_COMPLETED, END_EARLY, END_FAILED, ENDED_STATES, METRIC_KEYS, PARAMS_KEY, RUNNING, SEED_KEY, STATUS_FILE, TRIALS_DIR,
    TUNE_DIR, OPTUNA_DB, TrialRecord, csv_text, now_iso, one_line, end_state, is_finite_number, load_records,
    planned_epochs, read_json, summarize_records, write_atomic, write_json, write_results_csv,
)

# --------------------------------------------------------------------------- the recorder callback


def _tune_interrupt_event():
    """The Event that Tune's own SIGINT handler sets (``ray.tune.tune._setup_signal_catching``), or None.

    On Ctrl-C Tune saves its experiment state, then its clean-up *terminates* the running trials, so
    they look exactly like trials its time budget stopped; only this Event tells the two apart.
    """
    import signal
    import threading

    handler = signal.getsignal(signal.SIGINT)
    for cell in getattr(handler, "__closure__", None) or ():
        if isinstance(cell.cell_contents, threading.Event):
            return cell.cell_contents
    return None



class SweepRecorder(Callback):
    """Driver-side Tune callback: pielab's sweep folder files, W&B runs and the live terminal status.

    It is pickled into Tune's ``tuner.pkl`` when the sweep starts (that is how ``Tuner.restore``
    gets it back), so everything that is not plain data is created in :meth:`setup`.
    """

    def __init__(self, sweep_dir: Path, *, name: str, base: dict[str, Any], metric: str, mode: str,
                 max_t: int | None, num_trials: int, slots: int, time_budget_s: float | None,
                 scheduler: str, tracking: dict[str, Any] | None, address: str | None,
                 optuna: dict[str, str] | None = None, started_at: float | None = None) -> None:
        self.sweep_dir = Path(sweep_dir)
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
        self.deadline = Deadline(time_budget_s)  # shared with the searcher and the stopper
        self.display = None  # a LiveStatus (or None); set by the runner, never pickled
        self._runtime: dict[str, Any] = {}

    # pickling: only the plain settings travel (Tuner.restore builds the rest again in setup)
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["display"] = None
        state["_runtime"] = {}
        if state.get("optuna"):  # no database password in tuner.pkl; resume rebinds the URL from sweep.yaml
            from pielab.sweep.folder import strip_password

            state["optuna"] = {**state["optuna"], "url": strip_password(state["optuna"].get("url"))}
        return state

    def get_state(self) -> dict | None:  # Tune's callback state: the sweep folder already holds ours
        return None

    def set_state(self, state: dict) -> None:
        return None

    # ------------------------------------------------------------------ state

    @property
    def records(self) -> dict[str, TrialRecord]:
        return self._runtime.setdefault("records", {})

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        previous = read_json(self.sweep_dir / STATUS_FILE) or {}
        self._runtime.update(
            records=load_records(self.sweep_dir),
            started=previous.get("started") or now_iso(self.started_at),
            elapsed_before=float(previous.get("elapsed_s") or 0.0),
            t0=self.started_at or time.time(),
            resumes=list(previous.get("resumes") or []) + ([now_iso()] if previous else []),
            tracker=self._make_tracker(),
        )
        self.deadline.start()  # as Tune's own budget: from the start of tuning, whole for each run or resume
        self._runtime["interrupt"] = _tune_interrupt_event()  # Tune installs its handler before this
        self.started_at = None  # a resumed run measures from its own start
        self.write_status()
        if self.display is not None:
            self.display.start(self)

    def _make_tracker(self):
        if not self.tracking:
            return None
        from pielab.sweep.tracking import WandbTracker

        t = self.tracking
        return WandbTracker(sweep_dir=self.sweep_dir, group=t["group"], project=t["project"],
                            entity=t.get("entity"), mode=t["mode"], tags=t.get("tags"))

    def interrupted(self) -> bool:
        """Whether this run was stopped by Ctrl-C (SIGINT): nothing running has ended, the sweep is not finished."""
        event = self._runtime.get("interrupt")
        return bool(event is not None and event.is_set())

    def elapsed(self) -> float:
        return self._runtime.get("elapsed_before", 0.0) + time.time() - self._runtime.get("t0", time.time())

    def _trial_dir(self, trial_id: str) -> Path:
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
        self._write_trial(rec)
        tracker = self._runtime.get("tracker")
        if tracker is not None:
            config_flat = self._resolved(dict(trial.config)).flat()
            tracker.start(tid, config_flat, run_id=f"{self.sweep_dir.name}-{tid}")
        self.write_status()

    def _resolved(self, params: dict[str, Any]):
        from pielab.sweep.trainable import trial_config

        return trial_config(self.base, params)

    def _write_config(self, trial_id: str, params: dict[str, Any]) -> None:
        try:
            text = yaml.safe_dump(self._resolved(params).to_dict(), sort_keys=False)
        except PielabError as exc:  # the trial itself will fail with the same message
            text = f"# this trial's config does not resolve: {exc}\n" + yaml.safe_dump({"params": params})
        write_atomic(self._trial_dir(trial_id) / "config.yaml", text)

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
        row = {k: result.get(k) for k in METRIC_KEYS}
        rec.rows[epoch] = row
        self._absorb(rec, result)
        write_atomic(self._trial_dir(rec.trial_id) / "metrics.csv",
                     csv_text(list(METRIC_KEYS), [rec.rows[e] for e in sorted(rec.rows)]))
        self._write_trial(rec)
        tracker = self._runtime.get("tracker")
        if tracker is not None:
            tracker.log(rec.trial_id, row, epoch)
            tracker.release()  # the first epoch is in: W&B's start-up no longer delays the trials
        self.write_status()

    def _absorb(self, rec: TrialRecord, result: dict[str, Any]) -> None:
        value = result.get(self.metric)
        if is_finite_number(value):
            better = max if self.mode == "max" else min
            rec.best_value = float(value) if rec.best_value is None else better(rec.best_value, float(value))
        for attr, key in (("best_val_acc", "best/val_acc"), ("test_acc", "test/acc"), ("train_time_s", "time/total_s")):
            if is_finite_number(result.get(key)):
                setattr(rec, attr, float(result[key]))
        if is_finite_number(result.get("best/epoch")):
            rec.best_epoch = int(result["best/epoch"])
        rec.epochs = max(rec.epochs, int(result.get("epoch") or 0))
        if result.get(PARAMS_KEY) is not None:
            rec.num_params = int(result[PARAMS_KEY])

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        rec = self.records.get(trial.trial_id)
        if rec is not None:
            rec.retries += 1
            rec.reason = f"retry {rec.retries} after: {self._error_line(trial)}"
            self._write_trial(rec)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        rec = self.records.get(trial.trial_id)
        if rec is None or trial.trial_id in self._runtime.get("kept", ()):
            return
        result = dict(trial.last_result or {})
        state = end_state(result, False, rec.planned_epochs or self._planned(dict(trial.config)))
        if state == END_EARLY:
            rec.reason = self._runtime.get("closing") or (
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
        rec.state, rec.ended = state, now_iso()
        self._write_trial(rec)
        tracker = self._runtime.get("tracker")
        if tracker is not None:
            tracker.finish(rec.trial_id, {
                "state": state, "reason": rec.reason, "best/val_acc": rec.best_val_acc, "best/epoch": rec.best_epoch,
                "test/acc": rec.test_acc, "epochs": rec.epochs, "train_time_s": rec.train_time_s,
                "model/params": rec.num_params,
            }, failed=state == END_FAILED)
        write_results_csv(self.sweep_dir, self.records, self.mode)
        self.write_status()
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
        if self.interrupted():
            return  # Ctrl-C: Tune terminated the running trials on its way out; resume continues them
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
        if ended and self.optuna:
            from pielab.sweep.search import tell_unreported

            tell_unreported(self.optuna["url"], self.optuna["study"], ended, self.mode)

    def on_experiment_end(self, trials, **info) -> None:
        self._close_silently_stopped(trials)
        # Finished: every trial reached an end state and Tune created all it was going to.
        unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        budget_hit = self.deadline.passed()
        stopped = bool(self._runtime.get("stop_reason"))
        finished = not self.interrupted() and not unfinished and (len(trials) >= self.num_trials or budget_hit or stopped)
        self._runtime["finished"] = finished
        tracker = self._runtime.get("tracker")
        if tracker is not None:
            tracker.close()
        write_results_csv(self.sweep_dir, self.records, self.mode)
        self.write_status(final=True)
        if self.display is not None:
            self.display.stop()

    # ------------------------------------------------------------------ files

    def _write_trial(self, rec: TrialRecord) -> None:
        write_json(self._trial_dir(rec.trial_id) / "result.json", rec.to_json())

    def status(self, final: bool = False) -> dict[str, Any]:
        summary = summarize_records(self.records, self.mode)
        elapsed = self.elapsed()
        started_trials = len(self.records)
        running = {tid: {"epoch": rec.epochs, "planned_epochs": rec.planned_epochs, "best_value": rec.best_value}
                   for tid, rec in self.records.items() if rec.state == RUNNING}
        return {
            "name": self.name,
            "sweep_dir": str(self.sweep_dir),
            "metric": self.metric,
            "mode": self.mode,
            "num_trials": self.num_trials,
            "slots": self.slots,
            "started_trials": started_trials,
            "pending": max(0, self.num_trials - started_trials),
            **summary,
            "running": running,
            "started": self._runtime.get("started"),
            "updated": now_iso(),
            "elapsed_s": round(elapsed, 3),
            "time_left_s": self.deadline.left() if self.time_budget_s else None,
            "efficiency": round(summary["trial_time_s"] / (elapsed * self.slots), 4) if elapsed > 0 else None,
            "finished": bool(self._runtime.get("finished")) if final else False,
            "stop_reason": self._runtime.get("stop_reason"),
            "resumes": self._runtime.get("resumes", []),
            "address": self.address,
            "driver": {"host": socket.gethostname(), "pid": os.getpid(), "alive": not final},
            "wandb": (self.tracking or {}).get("mode", "disabled"),
        }

    def write_status(self, final: bool = False) -> None:
        write_json(self.sweep_dir / STATUS_FILE, self.status(final))


class SweepStopper(Stopper):
    """Ends trials when the sweep's time budget is spent, and the sweep when it is hopeless.

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
        return self.deadline.passed()

    def stop_all(self) -> bool:
        return self.recorder.hopeless() is not None


# --------------------------------------------------------------------------- Ray


def _set_quiet_env() -> None:
    """Environment that Ray reads when it starts: loopback only, no usage reporting, quiet Tune."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # without it Ray advertises the network address
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting to an outside server
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own status display instead of Tune's tables
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # trials/ is our result format
    # A checkpoint per epoch with num_to_keep=1 makes Tune snapshot its experiment state at every
    # checkpoint (so a restore never points at a deleted one); that is intended, not worth a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in ("ray.tune.analysis.experiment_analysis", "ray._private.authentication.authentication_token_setup"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "no result.json" (ours is trials/) and the auth notice


def tolerate_already_deleted_checkpoints() -> None:
    """Make Tune's removal of an old checkpoint a no-op when that checkpoint is already gone.

    After ``kill -9`` Tune restores an experiment snapshot that can predate the deletion of the
    oldest kept checkpoint; when the resumed trial saves its next one Tune deletes that path again,
    and Ray's ``_delete_fs_path`` checks the path *outside* its own try block, so the
    ``FileNotFoundError`` escapes into the controller: an ERROR traceback on the terminal, and the
    controller skips the experiment snapshot that should follow the save. A missing path is what
    the deletion wanted, so it is skipped; every other error still goes to Ray's handler.
    """
    try:
        import pyarrow.fs
        from ray.train._internal import checkpoint_manager
    except ImportError:  # another Ray layout: leave it as it is (the traceback is noise, not harm)
        return
    original = getattr(checkpoint_manager, "_delete_fs_path", None)
    if original is None or getattr(original, "_pielab_tolerant", False):
        return

    def delete_unless_gone(fs, fs_path):
        if fs.get_file_info(fs_path).type == pyarrow.fs.FileType.NotFound:
            return
        original(fs=fs, fs_path=fs_path)

    delete_unless_gone._pielab_tolerant = True
    checkpoint_manager._delete_fs_path = delete_unless_gone


def localize_env() -> None:
    """Make the relative data folders in the environment absolute, before Ray starts.

    Ray starts trial workers in their own folders, so ``PIELAB_DATA_DIR=../shared/data`` would name
    nothing there; local workers inherit the driver's environment when Ray starts, so fixing it here
    fixes it for every trial on this machine.
    """
    for var in ("PIELAB_DATA_DIR", "PIELAB_CACHE_DIR"):
        if os.environ.get(var):
            os.environ[var] = str(Path(os.environ[var]).expanduser().resolve())


def localize_paths(spec) -> None:
    """``localize_env`` plus the base config's own relative ``data.path`` / ``data.cache_dir``."""
    localize_env()
    data = spec.base.data
    for attr in ("path", "cache_dir"):
        value = getattr(data, attr)
        if value and not Path(value).expanduser().is_absolute():
            setattr(data, attr, str(Path(value).expanduser().resolve()))


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail within seconds, with one line, when ``--address`` names nothing that answers."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise PielabError(f"--address {address}: expected HOST:PORT (such as 10.0.0.1:6379), ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, socket.timeout):
            reason = f"no answer within {timeout:g} s"
        raise PielabError(
            f"cannot reach a Ray cluster at {address} ({reason}); start one with `ray start --head` or fix --address"
        ) from None


def start_ray(address: str | None) -> bool:
    """Start a local Ray with every socket on 127.0.0.1, or join ``address`` (HOST:PORT, ray://..., auto).

    Returns True when this call connected (the caller then shuts Ray down), False when Ray was
    already initialised in this process. Must run on the main thread: Ray ties the processes it
    starts to the lifetime of the starting thread.
    """
    import ray

    _set_quiet_env()
    localize_env()
    if ray.is_initialized():
        return False
    common = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **common)
        except Exception as exc:  # ConnectionError, auth problems, version mismatch
            raise PielabError(f"cannot join the Ray cluster at {address}: {one_line(str(exc), 200)}") from None
        return True
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **common)
    return True


def check_resources(needs: dict[str, float]) -> None:
    """A local machine that cannot hold one trial is an error now, not a sweep that waits forever."""
    import ray

    have = ray.cluster_resources()
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        want = needs.get(key, 0) or 0
        if want > have.get(ray_key, 0):
            fix = "--set resources.gpu=0" if key == "gpu" else f"--set resources.cpu={int(have.get(ray_key, 1))}"
            raise PielabError(
                f"each trial asks for {want:g} {key.upper()} but this machine has {have.get(ray_key, 0):g}; "
                f"use {fix} or join a cluster with --address"
            )


# --------------------------------------------------------------------------- the Tuner


def _trial_name(trial) -> str:
    return trial.trial_id


def tracking_settings(spec) -> dict[str, Any] | None:
    from pielab.sweep.tracking import resolve_mode

    t = spec.tracking
    mode = resolve_mode(t.wandb, t.mode)
    if mode == "disabled":
        return None
    return {"project": t.project, "entity": t.entity, "mode": mode, "group": spec.name,
            "tags": [spec.base.task, spec.base.model_name]}


def optuna_url(spec, sweep_dir: Path) -> str:
    return spec.storage.optuna or f"sqlite:///{(sweep_dir / OPTUNA_DB).resolve()}"


def trial_base(spec) -> dict:
    """The base config every trial starts from, with the thread count the trial will really use.

    A trial gets ``resources.cpu`` threads unless ``train.threads`` says otherwise; writing that into
    the config makes the recorded config (``trials/<id>/config.yaml``, W&B, exports) rerun bit for bit
    on CPU, where the thread count changes the floating-point reduction order.
    """
    base = spec.base.to_dict()
    if base["train"]["threads"] is None:
        base["train"]["threads"] = max(1, int(spec.resources.cpu))
    return base


def make_trainable(spec, sweep_dir: Path):
    from ray import tune

    from pielab.sweep.trainable import run_trial

    fn = tune.with_parameters(run_trial, base=trial_base(spec), metric=spec.metric, sweep_dir=str(sweep_dir))
    return tune.with_resources(fn, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def make_searcher(spec, sweep_dir: Path, deadline=None):
    from ray.tune.search import ConcurrencyLimiter

    import optuna

    from pielab.sweep.search import PielabOptunaSearch, make_sampler, make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines
    sampler = make_sampler(spec.search.algorithm, spec.search.seed, spec.search.sampler_options(), spec.space)
    searcher = PielabOptunaSearch(
        spec.space, metric=spec.metric, mode=spec.mode, sampler=sampler,
        storage=make_storage(optuna_url(spec, sweep_dir)), study_name=sweep_dir.name,
        base_epochs=spec.base.train.epochs, max_t=spec.max_t if spec.scheduler.name == "asha" else None,
        seeds=spec.seeds, deadline=deadline,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)


def make_scheduler(spec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler.name == "fifo":
        return FIFOScheduler()
    s = spec.scheduler
    return ASHAScheduler(time_attr="epoch", metric=spec.metric, mode=spec.mode, max_t=spec.max_t,
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor)


def make_tuner(spec, sweep_dir: Path, recorder: SweepRecorder):
    from ray import tune

    tune_config = tune.TuneConfig(
        search_alg=make_searcher(spec, sweep_dir, recorder.deadline),
        scheduler=make_scheduler(spec),
        num_samples=spec.num_trials,
        reuse_actors=True,  # a stopped trial's worker runs the next one: no new process, no re-import
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
    )
    run_config = tune.RunConfig(
        name=TUNE_DIR,
        storage_path=str(sweep_dir),
        # Two, not one: Tune snapshots its experiment state after every num_to_keep checkpoints, and
        # with one a crash between writing epoch k+1 and that snapshot leaves the state pointing at
        # the deleted epoch k, so the trial cannot resume (seen in the kill-and-resume test).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[recorder],
        stop=SweepStopper(recorder, recorder.deadline),  # the time budget (spec.time_budget_s) is here
        verbose=0,
        log_to_file=True,  # a trial's stdout/stderr go to tune/<trial>/ (log_to_driver is off)
    )
    return tune.Tuner(make_trainable(spec, sweep_dir), tune_config=tune_config, run_config=run_config)


def _rebind(tuner, recorder_settings: dict[str, Any]) -> SweepRecorder | None:
    """After ``Tuner.restore``: point the unpickled recorder at this folder and this terminal."""
    try:
        callbacks = tuner._local_tuner.get_run_config().callbacks or []
    except AttributeError:
        return None
    for cb in callbacks:
        if isinstance(cb, SweepRecorder):
            for key, value in recorder_settings.items():
                setattr(cb, key, value)
            return cb
    return None


@dataclass
class SweepOutcome:
    sweep_dir: Path
    status: dict[str, Any]
    records: dict[str, TrialRecord]


def run_sweep(spec, sweep_dir: Path, *, address: str | None = None, restore: bool = False,
              display=None, started_at: float | None = None, owns_ray: bool = False) -> SweepOutcome:
    """Run (or continue, ``restore=True``) the sweep ``spec`` in ``sweep_dir``; returns its final status.

    Starts (or joins) Ray unless it is already initialised; ``owns_ray=True`` says the caller started
    it for this sweep, so it is shut down at the end either way.
    """
    import ray
    from ray import tune

    sweep_dir = Path(sweep_dir).resolve()
    started_at = started_at or time.time()
    localize_paths(spec)
    started = start_ray(address) or owns_ray
    tolerate_already_deleted_checkpoints()
    try:
        if not address:
            check_resources({"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
        # The data once, on the driver: every trial on this machine then opens the memory-mapped cache.
        from pielab.data import prepare

        prepare(spec.base.task, spec.base.data)
        settings = dict(
            sweep_dir=sweep_dir, name=spec.name, base=trial_base(spec), metric=spec.metric, mode=spec.mode,
            max_t=spec.max_t if spec.scheduler.name == "asha" else None, num_trials=spec.num_trials,
            slots=spec.max_concurrent, time_budget_s=spec.time_budget_s, scheduler=spec.scheduler.name,
            tracking=tracking_settings(spec), address=address, started_at=started_at,
            optuna={"url": optuna_url(spec, sweep_dir), "study": sweep_dir.name},
        )
        if restore:
            tuner = tune.Tuner.restore(str(sweep_dir / TUNE_DIR), trainable=make_trainable(spec, sweep_dir),
                                       resume_unfinished=True, resume_errored=True)
            recorder = _rebind(tuner, settings)
        else:
            recorder = SweepRecorder(**settings)
            tuner = make_tuner(spec, sweep_dir, recorder)
        if recorder is not None:
            recorder.display = display
        try:
            tuner.fit()
        finally:
            if display is not None:
                display.stop()
    finally:
        if started:
            ray.shutdown()
    status = read_json(sweep_dir / STATUS_FILE) or {}
    return SweepOutcome(sweep_dir, status, load_records(sweep_dir))
