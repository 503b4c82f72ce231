"""The sweep folder's stable format, and the one reader of it: pielab's own files, readable without Ray,
Optuna or W&B. The runner writes these files; ``pielab status``, ``pielab report`` and ``pielab export``
read them only through this module, so they name the same best trial.

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

**Where the folder lives** (:mod:`pielab.sweep.storage`): a local or NFS path, or a prefix on object
storage (``s3://bucket/prefix/SWEEP``, ``gs://...``). A remote folder has the same layout, read and
written through ``pyarrow.fs``; its Optuna study is on the RDB of ``storage.optuna`` (no ``optuna.db``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

# Shared helpers, re-exported here because the sweep modules import them from this module. The file
# helpers are pielab.files' through pielab.sweep.storage: the same on a local folder and on object storage.
from pielab.errors import PielabError
from pielab.sweep.storage import (  # noqa: F401  (re-exported)
    ObjectPath, SweepPath, is_remote, location, read_json, read_text, write_atomic, write_json,
)
from pielab.text import one_line  # noqa: F401  (re-exported)


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
OPTUNA_DB = "optuna.db"
CONFIG_FILE = "config.yaml"  # in trials/<id>/
METRICS_FILE = "metrics.csv"  # in trials/<id>/
RESULT_FILE = "result.json"  # in trials/<id>/
STUDY_KEY = "study"  # status.json: the Optuna study's name

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


# --------------------------------------------------------------------------- small file helpers


def csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def now_iso(timestamp: float | None = None) -> str:
    moment = datetime.now() if timestamp is None else datetime.fromtimestamp(timestamp)
    return moment.astimezone().isoformat(timespec="seconds")



def _finite(value: Any) -> float | None:
    return float(value) if is_finite_number(value) else None


def _epoch(value: Any) -> int | None:
    return int(value) if is_finite_number(value) else None


# --------------------------------------------------------------------------- one trial's record


@dataclass
class TrialRecord:
    """What pielab knows about one trial; ``result.json`` is its serialised form (fields: module docstring)."""

    trial_id: str
    params: dict[str, Any]
    seed: int | None = None
    number: int | None = None  # creation order in the sweep (0, 1, ...)
    state: str = RUNNING
    reason: str | None = None
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> metrics
    best_value: float | None = None  # best of the sweep metric over epochs
    best_val_acc: float | None = None
    best_epoch: int | None = None  # the epoch of best_value
    test_acc: float | None = None  # test/acc reported at best_epoch
    test_epoch: int | None = None  # the epoch whose model test_acc measured (fit's best/epoch at best_epoch)
    epochs: int = 0
    planned_epochs: int | None = None
    train_time_s: float = 0.0
    num_params: int | None = None
    retries: int = 0
    preemptions: int = 0  # restarts after its node was lost (not counted in retries)
    held_s: float = 0.0  # wall seconds it held its reserved resources (module docstring)
    started: str | None = None
    ended: str | None = None
    provenance: dict[str, Any] | None = None  # pielab.provenance.collect() in the trial's own process
    objectives: dict[str, float | None] | None = None  # multi-objective: {metric: value at best_epoch}

    def add_result(self, result: dict[str, Any], metric: str, mode: str, objectives: Sequence[str] = ()) -> bool:
        """Fold one epoch's metrics into the record: the one per-epoch update rule of the sweep folder.

        Args:
            result: one epoch of ``pielab.train.fit`` (``epoch``, ``val/acc``, ``best/val_acc``,
                ``best/epoch``, ``test/acc``, ``time/total_s`` ..., optionally ``model/params``), as Tune
                reports it or as a ``metrics.csv`` row. Missing or non-finite values change nothing.
            metric: the sweep's metric (a key of ``result``); mode: ``"max"`` or ``"min"``.
            objectives: a multi-objective sweep's metrics (the first is ``metric``); each one's value at
                the best epoch goes to ``objectives``. Empty for a single-objective sweep.

        Returns:
            True when this epoch is the trial's new best by ``metric`` (strictly better, so on ties the
            first epoch stays best, as ``fit`` keeps its first best val/acc epoch). Then ``best_value``,
            ``best_epoch``, ``test_acc`` and ``test_epoch`` come from this epoch (module docstring).
        """
        value = result.get(metric)
        improved = is_finite_number(value) and (
            self.best_value is None or (value > self.best_value if mode == "max" else value < self.best_value))
        if improved:
            self.best_value = float(value)
            self.best_epoch = _epoch(result.get("epoch"))
            self.test_acc = _finite(result.get("test/acc"))
            self.test_epoch = _epoch(result.get("best/epoch"))
        if is_finite_number(result.get(PARAMS_KEY)):
            self.num_params = int(result[PARAMS_KEY])
        if improved and len(objectives) > 1:
            self.objectives = {m: self._value_of(m, result) for m in objectives}
        for key in ("best/val_acc", "val/acc"):  # fit's running best; a bare val/acc for other writers
            acc = _finite(result.get(key))
            if acc is not None and (self.best_val_acc is None or acc > self.best_val_acc):
                self.best_val_acc = acc
        if is_finite_number(result.get("time/total_s")):
            self.train_time_s = float(result["time/total_s"])
        self.epochs = max(self.epochs, _epoch(result.get("epoch")) or 0)
        return bool(improved)

    def _value_of(self, metric: str, row: dict[str, Any]) -> float | None:
        if metric == PARAMS_KEY and not is_finite_number(row.get(metric)):
            return None if self.num_params is None else float(self.num_params)  # metrics.csv has no such column
        return _finite(row.get(metric))

    def objective_values(self, objectives: Sequence[str]) -> list[float] | None:
        """Each objective's value (the module docstring's rule), or None when one is missing."""
        if self.objectives is None:
            return None
        values = [self.objectives.get(m) for m in objectives]
        return [float(v) for v in values] if all(is_finite_number(v) for v in values) else None

    def refold(self, metric: str, mode: str, objectives: Sequence[str] = ()) -> None:
        """Derive the metric fields again from ``rows`` (metrics.csv) by :meth:`add_result`'s rule.

        Readers call it so that a folder whose result.json was written by an older rule (its
        ``best_epoch`` was the best val/acc epoch whatever the metric), or lags metrics.csv by one
        epoch mid-write, reads as the rule says. Without a finite ``metric`` in any row it does nothing.
        """
        if not any(is_finite_number(row.get(metric)) for row in self.rows.values()):
            return
        self.best_value = self.best_epoch = self.test_acc = self.test_epoch = None
        kept = self.objectives
        for epoch in sorted(self.rows):
            self.add_result(self.rows[epoch], metric, mode, objectives)
        if len(objectives) > 1 and kept:
            # metrics.csv holds only fit's metrics: keep what result.json recorded for any other objective
            for key, value in kept.items():
                if (self.objectives or {}).get(key) is None and value is not None:
                    self.objectives = {**(self.objectives or {}), key: value}

    @property
    def ranked(self) -> bool:
        """Whether the ranking rule (module docstring) ranks this trial."""
        return self.state in FINISHED_STATES and is_finite_number(self.best_value)

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "number": self.number,
            "state": self.state,
            "reason": self.reason,
            "best_value": self.best_value,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "test_acc": self.test_acc,
            "test_epoch": self.test_epoch,
            "epochs": self.epochs,
            "planned_epochs": self.planned_epochs,
            "train_time_s": round(self.train_time_s, 3),
            "num_params": self.num_params,
            "seed": self.seed,
            "params": self.params,
            "retries": self.retries,
            "preemptions": self.preemptions,
            "held_s": round(self.held_s, 3),
            "started": self.started,
            "ended": self.ended,
            "provenance": self.provenance,
            **({"objectives": self.objectives} if self.objectives is not None else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], rows: dict[int, dict[str, Any]]) -> "TrialRecord":
        keys = {f for f in cls.__dataclass_fields__ if f != "rows"}
        rec = cls(**{k: v for k, v in data.items() if k in keys})
        rec.rows = rows
        return rec


def test_acc_note(best_epoch: Any, test_epoch: Any) -> str:
    """Which model ``test_acc`` measured, in words, for every table and status line that shows it.

    ``"at the best epoch"`` when ``test_epoch`` is the best epoch (always, for a sweep on val/acc); else
    ``"at epoch T, the best val/acc epoch up to epoch B"`` (fit measures test accuracy only there).
    """
    if not is_finite_number(best_epoch) or not is_finite_number(test_epoch) or int(best_epoch) == int(test_epoch):
        return "at the best epoch"
    return f"at epoch {int(test_epoch)}, the best val/acc epoch up to epoch {int(best_epoch)}"


def read_metrics_csv(path: SweepPath) -> dict[int, dict[str, Any]]:
    """``metrics.csv`` as ``{epoch: {column: float or None}}`` (``epoch`` and ``best/epoch`` as int);
    empty when the file is missing or unreadable."""
    rows: dict[int, dict[str, Any]] = {}
    text = read_text(path)
    if text is None:
        return rows
    try:
        for row in csv.DictReader(io.StringIO(text, newline="")):
            parsed = {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
            for key in ("epoch", "best/epoch"):  # written back as "3", not "3.0", after a resume
                if parsed.get(key) is not None:
                    parsed[key] = int(parsed[key])
            if parsed.get("epoch") is not None:
                rows[parsed["epoch"]] = parsed
    except ValueError:
        pass
    return rows


def _read_trials(sweep_dir: SweepPath, metric: str | None, mode: str | None,
                 objectives: Sequence[str] = ()) -> dict[str, TrialRecord]:
    out: dict[str, TrialRecord] = {}
    for folder in sorted((location(sweep_dir) / TRIALS_DIR).glob("*"), key=lambda p: p.name):
        if not folder.is_dir():
            continue
        rows = read_metrics_csv(folder / METRICS_FILE)
        data = read_json(folder / RESULT_FILE)
        if data and "trial_id" in data:
            rec = TrialRecord.from_json(data, rows)
        elif metric is not None and (rows or (folder / CONFIG_FILE).is_file()):
            rec = TrialRecord(trial_id=folder.name, params={}, rows=rows)  # started, no result.json yet
        else:
            continue
        if metric is not None and mode is not None:
            rec.refold(metric, mode, objectives)
        out[rec.trial_id] = rec
    return out


def load_records(sweep_dir: SweepPath) -> dict[str, TrialRecord]:
    """Every trial of a sweep folder, from ``trials/*/result.json`` and ``metrics.csv``, as written
    (the recorder's restore). Readers use :meth:`SweepFolder.records`, which also applies the rules."""
    return _read_trials(sweep_dir, None, None)


def rank_records(records: dict[str, TrialRecord], mode: str) -> list[TrialRecord]:
    """The ranked trials (the module docstring's rule), best first."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted((r for r in records.values() if r.ranked),
                  key=lambda r: (sign * r.best_value, -r.epochs, r.trial_id))


def best_record(records: dict[str, TrialRecord], mode: str) -> TrialRecord | None:
    """The best trial: the first of :func:`rank_records`, or None when no trial is ranked yet."""
    ranked = rank_records(records, mode)
    return ranked[0] if ranked else None


def _dominates(a: list[float], b: list[float]) -> bool:
    """``a`` at least as good as ``b`` in every objective and strictly better in one (both oriented to min)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_records(records: dict[str, TrialRecord], objectives: Sequence[tuple[str, str]]) -> list[TrialRecord]:
    """The Pareto front (the module docstring's rule), ordered best first by the first objective.

    ``objectives``: (metric, mode) pairs, two or more. Empty for fewer objectives (a single-objective
    sweep has a best trial, not a front).
    """
    if len(objectives) < 2:
        return []
    metrics = [m for m, _ in objectives]
    signs = [-1.0 if mode == "max" else 1.0 for _, mode in objectives]
    candidates = []
    for rec in records.values():
        values = rec.objective_values(metrics) if rec.state == END_COMPLETED else None
        if values is not None:
            candidates.append((rec, [s * v for s, v in zip(signs, values)]))
    front = [(rec, v) for rec, v in candidates if not any(_dominates(w, v) for _, w in candidates)]
    return [rec for rec, _ in sorted(front, key=lambda item: (*item[1], item[0].trial_id))]


def summarize_records(records: dict[str, TrialRecord], mode: str,
                      objectives: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """Counts by state, the best trial (``best``, or None) and the summed training time (status.json);
    with two or more ``objectives`` also ``pareto``: the front's trial ids, in :func:`pareto_records` order."""
    counts = {state: 0 for state in STATES}
    for rec in records.values():
        counts[rec.state] = counts.get(rec.state, 0) + 1
    best = best_record(records, mode)
    return {
        "counts": counts,
        "best": None if best is None else {
            "trial_id": best.trial_id, "value": best.best_value, "val_acc": best.best_val_acc,
            "epoch": best.best_epoch, "test_acc": best.test_acc, "test_epoch": best.test_epoch, "state": best.state,
            "params": best.params, "seed": best.seed,
        },
        "trial_time_s": round(sum(r.train_time_s for r in records.values()), 3),
        # preempted trials are counted apart from failed ones: a lost node is not the trial's fault
        "preempted": sum(1 for r in records.values() if r.preemptions),
        "preemptions": sum(r.preemptions for r in records.values()),
        **({"pareto": [r.trial_id for r in pareto_records(records, objectives)]} if len(objectives) > 1 else {}),
    }


def trial_resources(spec: dict[str, Any]) -> dict[str, float]:
    """What Tune reserved for each trial, from the spec (sweep.yaml): ``{"cpu": n, "gpu": m}``
    (the spec's defaults, 1 CPU and 0 GPUs, for missing keys)."""
    res = spec.get("resources") if isinstance(spec.get("resources"), dict) else {}
    return {key: float(res.get(key)) if is_finite_number(res.get(key)) else default
            for key, default in (("cpu", 1.0), ("gpu", 0.0))}


def recorded_slot_seconds(status: dict[str, Any], default_slots: float) -> float:
    """The slot-seconds a ``status.json`` accounts for: its ``slot_s`` (each run at its own slot count), or, in
    a folder from before that field, its wall time x its ``slots`` (``default_slots`` when absent)."""
    if status.get("slot_s"):
        return float(status["slot_s"])
    return float(status.get("elapsed_s") or 0.0) * float(status.get("slots") or default_slots)


def held_seconds(rec: TrialRecord) -> float:
    """The seconds ``rec`` held its resources: ``held_s``, else (a record from before it) ``train_time_s``.

    Rounded to the millisecond as trial.json stores it, so that the driver's in-memory sum (status.json)
    and a reader's sum of the stored records (``pielab report``, results.csv) give the same hours."""
    return round(rec.held_s if rec.held_s else rec.train_time_s, 3)


def resource_usage(records: dict[str, TrialRecord], resources: dict[str, float],
                   extra_s: dict[str, float] | None = None) -> dict[str, float]:
    """CPU-hours and GPU-hours a sweep used (module docstring: resource accounting).

    Args:
        records: the sweep's trials; resources: :func:`trial_resources`;
        extra_s: seconds not yet in a record (the driver adds a running trial's time since its last epoch).

    Returns:
        ``{"held_s": seconds summed over trials, "cpu_hours": float, "gpu_hours": float}``.
    """
    held = sum(held_seconds(r) for r in records.values()) + sum((extra_s or {}).values())
    return {"held_s": round(held, 3), "cpu_hours": round(held * resources.get("cpu", 0.0) / 3600, 6),
            "gpu_hours": round(held * resources.get("gpu", 0.0) / 3600, 6)}


# The spec's ``budget`` keys (pielab.sweep.spec.BudgetConfig) and the usage field each one caps.
BUDGET_KEYS = {"cpu_hours": "CPU-hours", "gpu_hours": "GPU-hours"}


def budget_reached(usage: dict[str, float], budget: dict[str, Any] | None) -> str | None:
    """Why the sweep's resource budget is spent (``"CPU-hours budget of 0.01 reached (0.0101 used)"``),
    or None. ``budget``: the spec's ``budget`` mapping (``cpu_hours`` / ``gpu_hours``, null for none)."""
    for key, label in BUDGET_KEYS.items():
        limit = (budget or {}).get(key)
        if is_finite_number(limit) and usage.get(key, 0.0) >= float(limit):
            return f"{label} budget of {limit:g} reached ({usage[key]:.4g} used)"
    return None


def results_rows(records: dict[str, TrialRecord], mode: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and rows of ``results.csv``: one row per trial, ranked first, sampled params last."""
    param_keys: list[str] = []
    for rec in records.values():
        for key in rec.params:
            if key not in param_keys:
                param_keys.append(key)
    columns = ["rank", "trial_id", "number", "state", "reason", "best_value", "best_val_acc", "best_epoch", "test_acc",
               "test_epoch", "epochs", "planned_epochs", "train_time_s", "held_s", "preemptions", "num_params", "seed",
               *param_keys]
    ranked = rank_records(records, mode)
    rest = sorted((r for r in records.values() if r not in ranked), key=lambda r: r.trial_id)
    rows = []
    for i, rec in enumerate([*ranked, *rest], 1):
        row = rec.to_json()
        row.update(rank=i if rec in ranked else None, **rec.params)
        rows.append(row)
    return columns, rows


def write_results_csv(sweep_dir: SweepPath, records: dict[str, TrialRecord], mode: str, *, write=None) -> None:
    """Write ``results.csv``; ``write(path, text)``: how (default :func:`write_atomic`; the recorder's
    :class:`~pielab.sweep.storage.WriteBehind` on object storage)."""
    columns, rows = results_rows(records, mode)
    (write or write_atomic)(sweep_dir / RESULTS_FILE, csv_text(columns, rows))


# --------------------------------------------------------------------------- the sweep as a whole


def metric_mode(spec: dict[str, Any], status: dict[str, Any] | None = None) -> tuple[str, str]:
    """The sweep's metric and mode: sweep.yaml's, else status.json's, else ``val/acc``; a missing mode
    is ``max`` for a metric that ends in ``acc`` and ``min`` otherwise (as the spec defaults it)."""
    status = status or {}
    objectives = objectives_of(spec, status)
    if objectives:
        return objectives[0]
    metric = str(spec.get("metric") or status.get("metric") or "val/acc")
    mode = spec.get("mode") or status.get("mode")
    return metric, mode if mode in ("max", "min") else ("max" if metric.endswith("acc") else "min")


def objectives_of(spec: dict[str, Any], status: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """A multi-objective sweep's (metric, mode) pairs from sweep.yaml's ``objectives`` (else status.json's);
    empty for a single-objective sweep."""
    given = spec.get("objectives") or (status or {}).get("objectives") or []
    out = []
    for item in given if isinstance(given, list) else []:
        if isinstance(item, dict) and item.get("metric"):
            metric = str(item["metric"])
            mode = item.get("mode") if item.get("mode") in ("max", "min") else (
                "max" if metric.endswith("acc") else "min")
            out.append((metric, mode))
    return out if len(out) > 1 else []


def study_name(sweep_dir: str | SweepPath) -> str:
    """The name of the sweep's Optuna study: status.json's ``study`` field (the runner records the name
    it created the study under), else the folder's name (what the runner used before it recorded it)."""
    folder = location(sweep_dir)
    recorded = (read_json(folder / STATUS_FILE) or {}).get(STUDY_KEY)
    return str(recorded) if isinstance(recorded, str) and recorded else folder.name


@dataclass
class SweepFolder:
    """A sweep folder opened for reading: its spec, its status and its trials, by this module's rules.

    ``pielab status``, ``pielab report`` and ``pielab export`` all read through it.
    """

    path: SweepPath  # a local Path, or an ObjectPath (str() is its s3:// or gs:// URI)
    spec: dict[str, Any]  # sweep.yaml as written (the resolved spec)
    status: dict[str, Any]  # status.json, or {} before the runner first wrote it

    @classmethod
    def open(cls, sweep_dir: str | SweepPath) -> "SweepFolder":
        """Open ``sweep_dir`` (a path, or an ``s3://`` / ``gs://`` URI); raises :class:`PielabError`
        (one line) for a missing folder, a file, a folder without ``sweep.yaml``, a ``sweep.yaml`` that
        is not a YAML mapping, or object storage that cannot be reached."""
        from pielab.config import load_yaml

        path = location(sweep_dir)
        try:
            if not path.is_dir():
                raise PielabError(f"{path} is a file, not a sweep folder" if path.exists()
                                  else f"{path}: no such sweep folder")
            if not (path / SWEEP_FILE).is_file():
                raise PielabError(f"{path} is not a sweep folder (no {SWEEP_FILE}); "
                                  "`pielab sweep SPEC --out DIR` makes one")
        except OSError as exc:  # object storage: no such bucket, refused credentials, no connection
            raise PielabError(f"{path}: cannot read it: {one_line(str(exc), 300)}") from None
        spec, _ = load_yaml(path / SWEEP_FILE)
        return cls(path=path, spec=spec, status=read_json(path / STATUS_FILE) or {})

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.status.get("name") or self.path.name)

    @property
    def metric(self) -> str:
        return metric_mode(self.spec, self.status)[0]

    @property
    def mode(self) -> str:
        return metric_mode(self.spec, self.status)[1]

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, mode) of each objective of a multi-objective sweep; empty for a single-objective one."""
        return objectives_of(self.spec, self.status)

    @property
    def study(self) -> str:
        return study_name(self.path)

    def trial_dir(self, trial_id: str) -> SweepPath:
        return self.path / TRIALS_DIR / trial_id

    def records(self) -> dict[str, TrialRecord]:
        """Every trial, by trial id: result.json and metrics.csv with the metric fields derived by
        :meth:`TrialRecord.refold`; a trial folder with a config or metrics but no result.json yet
        reads as a running trial."""
        return _read_trials(self.path, self.metric, self.mode, [m for m, _ in self.objectives])

    def ranked(self, records: dict[str, TrialRecord] | None = None) -> list[TrialRecord]:
        return rank_records(self.records() if records is None else records, self.mode)

    def best(self, records: dict[str, TrialRecord] | None = None) -> TrialRecord | None:
        return best_record(self.records() if records is None else records, self.mode)

    def usage(self, records: dict[str, TrialRecord] | None = None) -> dict[str, float]:
        """CPU-hours and GPU-hours used so far (:func:`resource_usage` with the spec's resources)."""
        return resource_usage(self.records() if records is None else records, trial_resources(self.spec))

    def pareto(self, records: dict[str, TrialRecord] | None = None) -> list[TrialRecord]:
        """The Pareto front (:func:`pareto_records`); empty for a single-objective sweep."""
        return pareto_records(self.records() if records is None else records, self.objectives)
