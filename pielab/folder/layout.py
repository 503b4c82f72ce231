"""The sweep folder's stable format: its file names, trial states, ``status.json`` keys and end values,
metric and parameter keys, and the small rules on them. This docstring is the format's one description.

pielab's own files are readable without Ray, Optuna or W&B. The driver writes them; ``pielab status``,
``report``, ``export`` and the Python API read them through :class:`pielab.folder.reader.SweepFolder`
(records and their rules: :mod:`pielab.folder.records`), so they name the same best trial.

::

    <sweep>/sweep.yaml                 the resolved spec, space inlined (``pielab resume`` reads it)
    <sweep>/optuna.db                  the Optuna study (unless storage.optuna names another RDB)
    <sweep>/tune/                      Ray Tune's experiment (``Tuner.restore`` continues it)
    <sweep>/wandb/offline-run-*/       one W&B run per trial (offline mode)
    <sweep>/trials/<id>/config.yaml    the trial's resolved config (``pielab train`` accepts it)
    <sweep>/trials/<id>/metrics.csv    one row per epoch, every metric of ``pielab.train.fit``
    <sweep>/trials/<id>/result.json    state, reason, best epoch, test accuracy, sampled params
    <sweep>/status.json                live: trials by state, best so far, time used, the study's name
    <sweep>/results.csv                one row per trial, best first

``result.json`` fields (:class:`TrialRecord`): ``trial_id``, ``state`` (running | completed |
early_stopped | failed | diverged), ``reason``, ``best_value`` (best of the sweep metric over epochs),
``best_epoch`` (the epoch of ``best_value``), ``test_acc`` and ``test_epoch`` (see below),
``best_val_acc`` (best val/acc over epochs, whatever the metric), ``epochs`` (run), ``planned_epochs``,
``train_time_s``, ``num_params`` (model parameters), ``seed``, ``number`` (creation order), ``params``
(the sampled ``{dotted key: value}``), ``retries``, ``preemptions``, ``held_s``, ``started``, ``ended``, ``provenance`` (the code
version, library versions and device the trial ran on, :func:`pielab.provenance.collect`; null until
its first epoch is in); in a multi-objective sweep also
``objectives`` (``{metric: value}``: each objective's value at ``best_epoch``, see below).

``retries``: restarts after the trial's own failure (an exception, its worker process killed), which
use up ``max_failures``. ``preemptions``: restarts after the *node* it ran on was lost (Ray declared the
node dead), which do not: a preempted trial restarts from its checkpoint and is counted apart
(``pielab status``, the report), never as failed.

**Resource accounting.** ``held_s`` is the wall time, in seconds, during which the trial held the
resources Tune reserved for it (``resources.cpu`` / ``resources.gpu`` of the spec, the same for every
trial): the driver's clock from each start of the trial (Tune placed it and started its worker) to
that run's end (completed, stopped, failed, restarted or the driver stopped), summed over every start,
preempted and retried runs included, since their resources were held too. The driver adds the time
at every reported epoch, so a driver crash loses at most the epoch in flight. It includes the
trial's start-up (imports, data loading), not the time it waited for a free slot. CPU-hours and
GPU-hours (:func:`resource_usage`) are ``sum(held_s) * resources / 3600``. A record written before
``held_s`` existed counts its ``train_time_s`` instead.

``status.json`` field ``study``: the name of the sweep's Optuna study, written by the runner (the study
is created under the folder's name at the time, and a folder may be renamed or copied later);
:func:`study_name` reads it and falls back to the folder's name for folders written before it existed.

**The best epoch and the test accuracy.** A trial's best epoch is the epoch of the best value of the
*sweep's* metric, in the sweep's mode (a sweep on ``val/loss``, ``min`` picks the lowest val/loss epoch),
the first such epoch on ties. ``pielab.train.fit`` measures test accuracy only at a new best val/acc
epoch, so ``test_acc`` is the ``test/acc`` reported at the best epoch: the test accuracy of the best
val/acc model *up to* that epoch, measured at ``test_epoch`` (equal to ``best_epoch`` for a sweep on
val/acc; possibly earlier for another metric). :meth:`TrialRecord.add_result` holds that rule.

**The ranking rule** (:func:`rank_records`; the best trial is its first). Only *finished* trials are
ranked: state ``completed`` or ``early_stopped`` (ASHA stopped it; its epochs are real measurements)
with a finite ``best_value``. Best first by ``best_value`` in the sweep's mode; ties go to the trial
that trained more epochs, then to the lower trial id. Running trials are not ranked (their value can
still change and their config is not yet measured in full: ``pielab status`` lists them apart with
their value so far), nor failed or diverged ones (listed with their reason).

**Several objectives** (a spec's ``objectives``; :func:`objectives_of` reads them from ``sweep.yaml``).
The first objective is the sweep's metric and mode: ranking, best trial and ``best_epoch`` use it as
above. A trial's value of each objective is that metric at ``best_epoch`` (``model/params``, constant
per trial, from ``num_params`` when a row lacks it): one epoch's model, so the values belong together.
**The Pareto front** (:func:`pareto_records`) is the set of ``completed`` trials (full length) with a
finite value for every objective that no other such trial dominates (at least as good in every
objective and strictly better in one; equal vectors dominate neither). Early-stopped trials are not on
it: their values are measured at fewer epochs, and a short trial of a small model would otherwise sit
on the front for being stopped (the Optuna study holds them as PRUNED, so its ``best_trials`` is the
same set).

Every file is written atomically (temp file + ``os.replace``; one PUT on object storage): a reader
during a sweep sees the old or the new version, never half of one. Readers never read Ray's internals.

**Where the folder lives** (:mod:`pielab.folder.storage`): a local or NFS path, or a prefix on object
storage (``s3://bucket/prefix/SWEEP``, ``gs://...``). A remote folder has the same layout, read and
written through ``pyarrow.fs``; its Optuna study is on the RDB of ``storage.optuna`` (no ``optuna.db``).
"""

from __future__ import annotations

import math
from typing import Any


# How a trial ended (result.json ``state``, the Optuna trial's ``end`` user attribute, W&B summary).
END_COMPLETED, END_EARLY, END_FAILED, END_DIVERGED = "completed", "early_stopped", "failed", "diverged"
EPOCHS_KEY = "train.epochs"


def mask_password(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``: for any message or file."""
    import re

    return re.sub(r"([^:/@\s]+:)[^@\s/:]+@", r"\1***@", str(url))


def strip_password(url: str | None) -> str | None:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user@host/db``: what may be stored in a file.
    A sweep resumed from it connects with libpq's own PGPASSWORD or ~/.pgpass."""
    import re

    return None if url is None else re.sub(r"([^:/@\s]+):[^@\s/:]+@", r"\1@", str(url))


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def planned_epochs(config: dict[str, Any], base_epochs: int, max_t: int | None) -> int:
    """How many epochs a trial with these sampled params runs when nothing stops it early."""
    epochs = int(config.get(EPOCHS_KEY, base_epochs))
    return min(epochs, int(max_t)) if max_t else epochs


def end_state(result: dict[str, Any] | None, error: bool, planned: int) -> str:
    """How a trial ended, from its last result: one rule for Optuna, the sweep folder and W&B.

    ``failed`` after an error (Tune gave up retrying, or the trial flagged a bad config or missing
    data, which no retry can fix), ``diverged`` for a flagged NaN/inf loss,
    ``completed`` at its full length (``planned`` epochs), else ``early_stopped`` (the scheduler,
    or the sweep's time budget, ended it).
    """
    if error or (result and result.get("failed")):
        return END_FAILED
    if result and result.get("diverged"):
        return END_DIVERGED
    epoch = (result or {}).get("epoch")
    if epoch is None:
        return END_EARLY  # removed before it reported anything (the sweep ended first)
    return END_COMPLETED if int(epoch) >= planned else END_EARLY


SWEEP_FILE = "sweep.yaml"
STATUS_FILE = "status.json"
RESULTS_FILE = "results.csv"
TRIALS_DIR = "trials"
TUNE_DIR = "tune"
TUNER_FILE = "tuner.pkl"  # in tune/: Ray Tune's pickled Tuner (`Tuner.restore` reads it)
OPTUNA_DB = "optuna.db"
CONFIG_FILE = "config.yaml"  # in trials/<id>/
METRICS_FILE = "metrics.csv"  # in trials/<id>/
RESULT_FILE = "result.json"  # in trials/<id>/
STUDY_KEY = "study"  # status.json: the Optuna study's name
WARM_START_FILE = "warm_start.json"  # where `pielab sweep --from` records the trials its study started with
STARTED_SPEC_FILE = "started_spec.json"  # the spec the sweep started with (pielab.folder.started_spec)
LEASE_FILE = "driver.lease"  # the driver lease of a local folder (pielab.folder.lease)

# status.json ``end``: how the last run of the driver ended (the recorder writes it, the commands map it to
# their closing line and exit code).
END_FINISHED, END_BUDGET, END_SWEEP_FAILED = "finished", "time budget reached", "failed"
END_RESOURCE_BUDGET = "budget reached"  # budget.cpu_hours / budget.gpu_hours used up
END_INTERRUPTED, END_TERMINATED, END_USR1, END_STOPPED = "interrupted", "terminated", "stopped by SIGUSR1", "stopped"
END_BY_SIGNAL = {"SIGINT": END_INTERRUPTED, "SIGTERM": END_TERMINATED, "SIGUSR1": END_USR1}
FINISHED_ENDS = (END_FINISHED, END_BUDGET, END_RESOURCE_BUDGET, END_SWEEP_FAILED)
# The driver's loop raised (Tune's controller, a callback, the searcher): whatever the callbacks wrote on
# the way out, the sweep did not finish. status.json's ``crash`` holds the error's one line.
END_CRASHED = "crashed"
CRASH_KEY = "crash"

RUNNING = "running"
STATES = (RUNNING, END_COMPLETED, END_EARLY, END_FAILED, END_DIVERGED)
# A trial in one of these states (with its `ended` time) is over: a resume neither retrains it (the
# trainable) nor rewrites its record (the recorder), whatever Tune's older snapshot says.
ENDED_STATES = (END_COMPLETED, END_EARLY, END_FAILED, END_DIVERGED)
# Ranked (see the module docstring): a trial that ended normally, its epochs all real measurements.
FINISHED_STATES = (END_COMPLETED, END_EARLY)
# Never ranked; listed with their reason.
FAILED_STATES = (END_FAILED, END_DIVERGED)
STATE_LABELS = {RUNNING: "running", END_COMPLETED: "done", END_EARLY: "stopped early",
                END_FAILED: "failed", END_DIVERGED: "diverged"}

# The per-epoch metrics of pielab.train.fit, in its order (metrics.csv columns).
METRIC_KEYS = (
    "epoch", "train/loss", "train/acc", "val/loss", "val/acc", "best/val_acc", "best/epoch", "test/acc", "lr",
    "time/epoch_s", "time/total_s", "perf/samples_per_s", "grad/first_norm", "grad/last_norm",
    "grad/first_last_ratio",
)
PARAMS_KEY = "model/params"
# The result key that carries a trial's provenance (pielab.provenance.collect, as JSON text so every Tune
# logger takes it as one scalar) from the trial to the driver: in the first result of each run of the trial.
PROVENANCE_KEY = "pielab/provenance"
SEED_KEY = "train.seed"


def study_url(sweep_dir: Any, optuna_storage: str | None) -> str:
    """The URL of a sweep's Optuna study: ``optuna_storage`` (the spec's ``storage.optuna``; sweep.yaml
    holds it without a password, which libpq's PGPASSWORD or ~/.pgpass then supply), else the folder's own
    ``sqlite:///<absolute sweep_dir>/optuna.db`` (whether or not the file exists yet).

    Raises:
        PielabError: ``sweep_dir`` is on object storage and no database is named (SQLite needs a local file).
    """
    from pathlib import Path

    from pielab.errors import PielabError
    from pielab.folder.storage import is_remote

    if optuna_storage:
        return str(optuna_storage)
    if is_remote(sweep_dir):
        raise PielabError(f"{sweep_dir} is on object storage, so the sweep's Optuna study needs a database: "
                          "set storage.optuna (such as postgresql://USER@HOST/DB)")
    return f"sqlite:///{(Path(sweep_dir) / OPTUNA_DB).resolve()}"
