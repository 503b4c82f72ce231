"""The sweep folder's stable format: pielab's own files, readable without Ray, Optuna or W&B.

::

    <sweep>/sweep.yaml                 the resolved spec, space inlined (``pielab resume`` reads it)
    <sweep>/optuna.db                  the Optuna study (unless storage.optuna names another RDB)
    <sweep>/tune/                      Ray Tune's experiment (``Tuner.restore`` continues it)
    <sweep>/wandb/offline-run-*/       one W&B run per trial (offline mode)
    <sweep>/trials/<id>/config.yaml    the trial's resolved config (``pielab train`` accepts it)
    <sweep>/trials/<id>/metrics.csv    one row per epoch, every metric of ``pielab.train.fit``
    <sweep>/trials/<id>/result.json    state, reason, best epoch, test accuracy, sampled params
    <sweep>/status.json                live: trials by state, best so far, time used
    <sweep>/results.csv                one row per trial, best first

``result.json`` fields: ``trial_id``, ``state`` (running | completed | early_stopped | failed |
diverged), ``reason``, ``best_value`` (best of the sweep metric), ``best_val_acc``, ``best_epoch``,
``test_acc`` (test accuracy at the best validation epoch), ``epochs`` (run), ``planned_epochs``,
``train_time_s``, ``num_params`` (model parameters), ``seed``, ``number`` (creation order), ``params`` (the sampled
``{dotted key: value}``), ``retries``, ``started``, ``ended``.

Every file is written atomically (temp file + ``os.replace``): a reader during a sweep sees the old
or the new version, never half of one. Reports and ``pielab status`` read only these files, never
Ray's internals.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
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
OPTUNA_DB = "optuna.db"

RUNNING = "running"
STATES = (RUNNING, END_COMPLETED, END_EARLY, END_FAILED, END_DIVERGED)
# A trial in one of these states (with its `ended` time) is over: a resume neither retrains it (the
# trainable) nor rewrites its record (the recorder), whatever Tune's older snapshot says.
ENDED_STATES = (END_COMPLETED, END_EARLY, END_FAILED, END_DIVERGED)
STATE_LABELS = {RUNNING: "running", END_COMPLETED: "done", END_EARLY: "stopped early",
                END_FAILED: "failed", END_DIVERGED: "diverged"}

# The per-epoch metrics of pielab.train.fit, in its order (metrics.csv columns).
METRIC_KEYS = (
    "epoch", "train/loss", "train/acc", "val/loss", "val/acc", "best/val_acc", "best/epoch", "test/acc", "lr",
    "time/epoch_s", "time/total_s", "perf/samples_per_s", "grad/first_norm", "grad/last_norm",
    "grad/first_last_ratio",
)
PARAMS_KEY = "model/params"
SEED_KEY = "train.seed"


# --------------------------------------------------------------------------- small file helpers


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(_json_safe(data), indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


def one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------- one trial's record


@dataclass
class TrialRecord:
    """What pielab knows about one trial; ``result.json`` is its serialised form."""

    trial_id: str
    params: dict[str, Any]
    seed: int | None = None
    number: int | None = None  # creation order in the sweep (0, 1, ...)
    state: str = RUNNING
    reason: str | None = None
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> metrics
    best_value: float | None = None  # best of the sweep metric over epochs
    best_val_acc: float | None = None
    best_epoch: int | None = None
    test_acc: float | None = None
    epochs: int = 0
    planned_epochs: int | None = None
    train_time_s: float = 0.0
    num_params: int | None = None
    retries: int = 0
    started: str | None = None
    ended: str | None = None

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
            "epochs": self.epochs,
            "planned_epochs": self.planned_epochs,
            "train_time_s": round(self.train_time_s, 3),
            "num_params": self.num_params,
            "seed": self.seed,
            "params": self.params,
            "retries": self.retries,
            "started": self.started,
            "ended": self.ended,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], rows: dict[int, dict[str, Any]]) -> "TrialRecord":
        keys = {f for f in cls.__dataclass_fields__ if f != "rows"}
        rec = cls(**{k: v for k, v in data.items() if k in keys})
        rec.rows = rows
        return rec


def read_metrics_csv(path: Path) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                parsed = {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for key in ("epoch", "best/epoch"):  # written back as "3", not "3.0", after a resume
                    if parsed.get(key) is not None:
                        parsed[key] = int(parsed[key])
                if parsed.get("epoch") is not None:
                    rows[parsed["epoch"]] = parsed
    except (OSError, ValueError):
        pass
    return rows


def load_records(sweep_dir: Path) -> dict[str, TrialRecord]:
    """Every trial of a sweep folder, from ``trials/*/result.json`` and ``metrics.csv``."""
    out: dict[str, TrialRecord] = {}
    for folder in sorted((sweep_dir / TRIALS_DIR).glob("*")):
        data = read_json(folder / "result.json")
        if data and "trial_id" in data:
            out[data["trial_id"]] = TrialRecord.from_json(data, read_metrics_csv(folder / "metrics.csv"))
    return out


def summarize_records(records: dict[str, TrialRecord], mode: str) -> dict[str, Any]:
    """Counts by state, the best trial so far and the summed training time."""
    counts = {state: 0 for state in STATES}
    for rec in records.values():
        counts[rec.state] = counts.get(rec.state, 0) + 1
    ranked = rank_records(records, mode)
    best = ranked[0] if ranked else None
    return {
        "counts": counts,
        "best": None if best is None else {
            "trial_id": best.trial_id, "value": best.best_value, "val_acc": best.best_val_acc,
            "epoch": best.best_epoch, "test_acc": best.test_acc, "state": best.state, "params": best.params,
            "seed": best.seed,
        },
        "trial_time_s": round(sum(r.train_time_s for r in records.values()), 3),
    }


def rank_records(records: dict[str, TrialRecord], mode: str) -> list[TrialRecord]:
    """Trials with a value, best first (ties: the one that trained longer, then the earlier one)."""
    valued = [r for r in records.values() if r.best_value is not None and r.state != END_DIVERGED]
    sign = -1.0 if mode == "max" else 1.0
    return sorted(valued, key=lambda r: (sign * r.best_value, -r.epochs, r.trial_id))


def results_rows(records: dict[str, TrialRecord], mode: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and rows of ``results.csv``: one row per trial, ranked, sampled params last."""
    param_keys: list[str] = []
    for rec in records.values():
        for key in rec.params:
            if key not in param_keys:
                param_keys.append(key)
    columns = ["rank", "trial_id", "number", "state", "reason", "best_value", "best_val_acc", "best_epoch", "test_acc",
               "epochs", "planned_epochs", "train_time_s", "num_params", "seed", *param_keys]
    ranked = rank_records(records, mode)
    rest = sorted((r for r in records.values() if r not in ranked), key=lambda r: r.trial_id)
    rows = []
    for i, rec in enumerate([*ranked, *rest], 1):
        row = rec.to_json()
        row.update(rank=i if rec in ranked else None, **rec.params)
        rows.append(row)
    return columns, rows


def write_results_csv(sweep_dir: Path, records: dict[str, TrialRecord], mode: str) -> None:
    columns, rows = results_rows(records, mode)
    write_atomic(sweep_dir / RESULTS_FILE, csv_text(columns, rows))
