"""A sweep's trials as records: :class:`TrialRecord` (``result.json``; the per-epoch rule), the ranking rule
and the best trial, the Pareto front, resource accounting and budgets, and ``results.csv``. The rules are
described in :mod:`pielab.folder.layout`'s docstring, which is the folder format's one description."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from pielab.folder.layout import (
    END_COMPLETED, FINISHED_STATES, PARAMS_KEY, RESULTS_FILE, RUNNING, STATES, is_finite_number,
)
from pielab.folder.storage import SweepPath, read_text, write_atomic


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
    return parse_metrics_csv(read_text(path))


def parse_metrics_csv(text: str | None) -> dict[int, dict[str, Any]]:
    """:func:`read_metrics_csv` of a file's text (None: no file)."""
    rows: dict[int, dict[str, Any]] = {}
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


# The spec's ``budget`` keys (pielab.spec.sweep_spec.BudgetConfig) and the usage field each one caps.
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
    :class:`~pielab.folder.storage.WriteBehind` on object storage)."""
    columns, rows = results_rows(records, mode)
    (write or write_atomic)(sweep_dir / RESULTS_FILE, csv_text(columns, rows))
