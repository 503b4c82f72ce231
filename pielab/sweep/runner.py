"""Run a sweep: Ray (a local instance on loopback, or a cluster) -> Tune (OptunaSearch, ASHA) -> trials.

The orchestration only; the parts live beside it: :mod:`pielab.sweep.session` (starting or joining
Ray, the sweep running now), :mod:`pielab.sweep.tuner` (the Tuner from a spec),
:mod:`pielab.sweep.recorder` (the Tune callback that keeps the sweep folder, and the stopper),
:mod:`pielab.sweep.compat` (the private Ray and Optuna names pielab needs). Tune keeps its experiment
in ``<sweep>/tune`` and the Optuna study lives in ``<sweep>/optuna.db``, so ``pielab resume``
continues all three, from wherever the folder is now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pielab.sweep.compat import (
    count_lost_nodes_as_preemptions, keep_credentials_out_of_runtime_env, tolerate_already_deleted_checkpoints,
)
from pielab.folder import STATUS_FILE, TUNE_DIR, TrialRecord, load_records, location, read_json
from pielab.sweep.recorder import SweepRecorder, SweepStopper
from pielab.sweep.active import ActiveSweep, running
from pielab.sweep.session import check_resources, localize_env, localize_paths, set_quiet_env, start_ray
from pielab.folder.storage import tune_storage
from pielab.sweep.tuner import (
    make_trainable, make_tuner, optuna_url, sampler_recipe, tracking_settings, trial_base,
)

__all__ = [
    "SweepOutcome", "SweepRecorder", "SweepStopper", "localize_env", "localize_paths", "run_sweep", "set_quiet_env",
    "start_ray", "tolerate_already_deleted_checkpoints",
]


@dataclass
class SweepOutcome:
    """What ``run_sweep`` returns: the folder, its final ``status.json`` and every trial's record."""

    sweep_dir: Path
    status: dict[str, Any]
    records: dict[str, TrialRecord]


def run_sweep(spec, sweep_dir: Path, *, address: str | None = None, restore: bool = False,
              display=None, started_at: float | None = None, owns_ray: bool = False,
              extend: dict[str, int] | None = None) -> SweepOutcome:
    """Run (or continue, ``restore=True``) the sweep ``spec`` in ``sweep_dir``; returns its final status.

    The command has prepared the spec once before: its data paths absolute (``localize_paths``, before
    ``sweep.yaml`` was written) and Ray started or joined (``start_ray``); ``owns_ray=True`` says it
    started Ray for this sweep, so it is shut down at the end either way. The rest of the set-up
    happens here, once: the resource check, the data on the driver, the trials' base config (one for
    the recorder and the trainable). ``extend`` (with ``restore``): ``{"num_trials", "max_concurrent"}``
    from ``pielab resume --set``, for the restored search generator.

    Raises:
        RuntimeError: Ray is not initialised in this process (the command did not start it).
    """
    import ray
    from ray import tune

    from pielab.sweep.trainable import remove_stale_staging

    sweep_dir = location(sweep_dir)  # a resolved local Path, or an ObjectPath (s3://, gs://)
    started_at = started_at or time.time()
    if not ray.is_initialized():
        raise RuntimeError("run_sweep needs Ray: start or join it first (pielab.sweep.session.start_ray)")
    started = owns_ray
    tolerate_already_deleted_checkpoints()
    count_lost_nodes_as_preemptions()  # a lost node restarts its trials without using up max_failures
    keep_credentials_out_of_runtime_env()  # no secret in Ray's session logs
    study = None
    try:
        if not address:
            check_resources({"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
        # The data once, on the driver: every trial on this machine then opens the memory-mapped cache.
        from pielab.data import prepare

        prepare(spec.base.task, spec.base.data)
        url = optuna_url(spec, sweep_dir)
        # A moved folder keeps the study it was created with (named after the folder's first name).
        study = ((read_json(sweep_dir / STATUS_FILE) or {}).get("study") if restore else None) or sweep_dir.name
        remove_stale_staging(study)  # checkpoint staging folders of trials killed in an earlier run
        base = trial_base(spec)  # the recorder's and the trainable's: one dict, made once
        settings = dict(
            sweep_dir=sweep_dir, name=spec.name, base=base, metric=spec.metric, mode=spec.mode,
            max_t=spec.max_t if spec.scheduler.name != "fifo" else None, num_trials=spec.num_trials,
            slots=spec.max_concurrent, time_budget_s=spec.time_budget_s, scheduler=spec.scheduler.name,
            tracking=tracking_settings(spec), address=address, started_at=started_at,
            optuna={"url": url, "study": study}, objectives=[list(o) for o in spec.objectives],
            resources={"cpu": float(spec.resources.cpu), "gpu": float(spec.resources.gpu)},
            budget={"cpu_hours": spec.budget.cpu_hours, "gpu_hours": spec.budget.gpu_hours},
        )
        # Tune's pickles (tuner.pkl, the searcher's state) name neither the folder's place nor the
        # database password: while this is active they bind to the folder where it is now.
        with running(ActiveSweep(sweep_dir=sweep_dir, optuna_url=url, recorder=settings, display=display,
                                 extend=extend if restore else None, sampler=sampler_recipe(spec))):
            if restore:
                tune_path, tune_fs = tune_storage(sweep_dir / TUNE_DIR)
                tuner = tune.Tuner.restore(tune_path, trainable=make_trainable(spec, sweep_dir, base),
                                           resume_unfinished=True, resume_errored=True, storage_filesystem=tune_fs)
            else:
                tuner = make_tuner(spec, sweep_dir, SweepRecorder(**settings))
            try:
                tuner.fit()
            except Exception as exc:
                # Tune closes its callbacks on the way out, and the recorder may have called the sweep
                # finished: it did not finish, and `pielab resume` must continue it.
                from pielab.sweep.folder_writer import record_crash

                record_crash(sweep_dir, exc)
                raise
            finally:
                if display is not None:
                    display.stop()
    finally:
        if started:
            ray.shutdown()
        remove_stale_staging(study)  # trials killed in this run (after shutdown their workers are gone)
    status = read_json(sweep_dir / STATUS_FILE) or {}
    return SweepOutcome(sweep_dir, status, load_records(sweep_dir))
