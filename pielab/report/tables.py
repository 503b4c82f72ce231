"""The report's data and tables: a sweep folder read through :mod:`pielab.folder`, and the
summary, per-trial and failed-trial tables in CSV, Markdown, LaTeX and HTML cells.

The first module of the report package: :mod:`.figures` and :mod:`.page` import it, it imports
neither. It reads the sweep folder only through :class:`pielab.folder.SweepFolder`, so the report,
``pielab export`` and ``pielab status`` share one record per trial and one ranking rule (the folder's
docstring states it: finished trials, ``completed`` or ``early_stopped``, best first by the sweep's
metric and mode). Running trials appear in the per-trial table with their partial metrics; failed and
diverged ones in their own table with the reason. ``results.csv`` is a convenience copy that an
interrupted sweep may lack, so it is not read.

A multi-objective sweep (a spec's ``objectives``) also has its Pareto front, as the folder defines it
(:func:`pielab.folder.pareto_records`): ``Sweep.pareto_ids``, a ``pareto`` column in the per-trial
table, and :func:`pareto_table` (each objective's value per Pareto trial).

Trials that differ only in ``train.seed`` form a *group* (the repeats of one configuration, ``seeds:
[0, 1]``); tables show the mean and the sample standard deviation over a group.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from pielab.config import config_from_dict, flatten, load_yaml
from pielab.errors import PielabError
from pielab.folder import (
    CONFIG_FILE, OPTUNA_DB, STATUS_FILE, STUDY_KEY, END_COMPLETED, FAILED_STATES, STATES, TRIALS_DIR, SweepFolder, TrialRecord, pareto_records, rank_records,
    trial_resources,
)
from pielab.text import fmt_value

# Config keys that never change a result: they do not split groups and are not "hyperparameters".
IGNORED_KEYS = ("train.seed", "train.device", "train.threads", "data.path", "data.cache_dir")
IGNORED_PREFIXES = ("tracking.",)
# Shown in their own columns, so left out of the hyperparameter columns.
OWN_COLUMNS = ("model.name", "model.depth", "model.residual")


# --------------------------------------------------------------------------- reading a sweep folder


@dataclass
class Sweep:
    """A sweep folder read into memory: the folder, one row per trial, and each trial's epochs."""

    folder: SweepFolder
    records: dict[str, TrialRecord]  # trial id -> the folder's record (every trial with a config.yaml)
    trials: pd.DataFrame  # one row per trial; see _trial_row for the columns
    metrics: dict[str, pd.DataFrame]  # trial id -> metrics.csv (possibly empty)
    configs: dict[str, dict[str, Any]]  # trial id -> config.yaml as written (nested)
    hparams: list[str]  # dotted config keys that vary across trials (seed and OWN_COLUMNS excluded)
    notes: list[str] = field(default_factory=list)  # what was skipped and why, for the HTML page
    pareto_ids: list[str] = field(default_factory=list)  # the Pareto front (multi-objective), first objective best first
    flats: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial id -> config.yaml by dotted key

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, mode) per objective of a multi-objective sweep; empty for a single-objective one."""
        return self.folder.objectives

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def spec(self) -> dict[str, Any]:
        return self.folder.spec

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def metric(self) -> str:
        return self.folder.metric

    @property
    def mode(self) -> str:
        return self.folder.mode

    @property
    def task(self) -> str:
        base = self.spec.get("base")
        return str(base.get("task", "")) if isinstance(base, dict) else ""

    def finished(self) -> pd.DataFrame:
        """The ranked trials (``pielab.folder``'s rule), best first: row 0 is the best trial."""
        return self.trials[self.trials["rank"].notna()].sort_values("rank", kind="stable")


def _is_ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def _hashable(value: Any) -> Any:
    """Config values as dictionary keys (lists such as ResNet layouts become tuples)."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def number(value: Any) -> float:
    """``value`` as a float; NaN for None and anything that is not a number."""
    try:
        return math.nan if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return math.nan


def _grad_ratios(frame: pd.DataFrame) -> tuple[float, float]:
    """(mean over epochs, first epoch) of ``grad/first_last_ratio``, ignoring non-finite and non-positive values."""
    if "grad/first_last_ratio" not in frame:
        return math.nan, math.nan
    ratio = pd.to_numeric(frame["grad/first_last_ratio"], errors="coerce")
    ratio = ratio[ratio.map(lambda v: math.isfinite(v) and v > 0)]
    return (float(ratio.mean()) if len(ratio) else math.nan, float(ratio.iloc[0]) if len(ratio) else math.nan)


def _count_params(config: dict[str, Any]) -> float:
    """Parameter count from the config, for trials whose result.json does not record it (meta device: no memory)."""
    try:
        import torch

        from pielab.models import get_model

        resolved = config_from_dict(config)
        with torch.device("meta"):
            model = get_model(resolved.model_name, **resolved.model_kwargs())
        return float(sum(p.numel() for p in model.parameters()))
    except Exception:  # an unknown model or a config from another version: the column stays empty
        return math.nan


def _trial_row(rec: TrialRecord, config: dict[str, Any], frame: pd.DataFrame, rank: int | None) -> dict[str, Any]:
    """One row of ``Sweep.trials``: the folder's record, plus model columns from the trial's config.yaml.

    Hyperparameter values come from the resolved config.yaml, not from the sampled dict in result.json:
    the config is what the trial actually ran (Optuna stores non-primitive choices as text).
    """
    flat = flatten(config)
    params = number(rec.num_params)
    if math.isnan(params):
        params = _count_params(config)
    grad_mean, grad_first = _grad_ratios(frame)
    return {
        "trial_id": rec.trial_id,
        "state": rec.state,
        "reason": rec.reason or "",
        "model": flat.get("model.name", ""),
        "depth": number(flat.get("model.depth")),
        "residual": flat.get("model.residual") if isinstance(flat.get("model.residual"), bool) else None,
        "seed": flat.get("train.seed", rec.seed),
        "best_val_acc": number(rec.best_val_acc),
        "best_epoch": number(rec.best_epoch),
        "test_acc": number(rec.test_acc),
        "test_epoch": number(rec.test_epoch),
        "epochs": float(rec.epochs),
        "planned_epochs": number(rec.planned_epochs),
        # ran its configuration's full length: comparable with any other full-length trial of the sweep
        "full": rec.state == END_COMPLETED,
        "train_time_s": number(rec.train_time_s),
        "params": params,
        "grad_ratio_mean": grad_mean,
        "grad_ratio_epoch1": grad_first,
        "score": number(rec.best_value),
        "rank": rank,
        "_flat": flat,
    }


def _varying_keys(flats: list[dict[str, Any]], order: list[str]) -> list[str]:
    """Config keys with more than one value across trials, in the space's order first."""
    keys = sorted({k for flat in flats for k in flat})
    varying = [k for k in keys if not _is_ignored(k) and k not in OWN_COLUMNS
               and len({_hashable(flat.get(k)) for flat in flats}) > 1]
    ranked = [k for k in order if k in varying]
    return ranked + [k for k in varying if k not in ranked]


def load_sweep(sweep_dir: str | Path | SweepFolder, *, allow_empty: bool = False) -> Sweep:
    """Read a sweep folder (a path, a URI, or a :class:`SweepFolder` already opened); a folder that is not one,
    or has no trials yet, raises PielabError (one line). ``allow_empty`` (the Python API, which reads a sweep
    that has just started): no trials yet gives a ``Sweep`` with an empty ``trials`` frame instead."""
    folder = sweep_dir if isinstance(sweep_dir, SweepFolder) else SweepFolder.open(sweep_dir)
    if not (folder.path / TRIALS_DIR).is_dir() and not allow_empty:
        raise PielabError(f"{folder.path} is not a sweep folder (no {TRIALS_DIR}/)")
    space = folder.spec.get("space") if isinstance(folder.spec.get("space"), dict) else {}
    space_keys = list((space.get("parameters") or {}) if isinstance(space, dict) else {})

    records, metrics, configs, notes = {}, {}, {}, []
    for trial_id, rec in folder.records().items():
        config_path = folder.trial_dir(trial_id) / CONFIG_FILE
        if not config_path.is_file():
            notes.append(f"trial {trial_id} skipped: no {CONFIG_FILE} yet")
            continue
        try:
            config, _ = load_yaml(config_path)
        except PielabError as exc:
            notes.append(f"trial {trial_id} skipped: {exc}")
            continue
        records[trial_id], configs[trial_id] = rec, config
        metrics[trial_id] = pd.DataFrame([rec.rows[e] for e in sorted(rec.rows)])
    notes[:0] = folder.damage_lines()  # damaged files first: what they leave out changes what the report says
    if not records and allow_empty:
        return Sweep(folder=folder, records={}, trials=pd.DataFrame(columns=_EMPTY_COLUMNS), metrics={}, configs={},
                     hparams=[], notes=notes)
    if not records:
        raise PielabError(f"{folder.path}: no trials yet ({TRIALS_DIR}/ has no trial with a {CONFIG_FILE})"
                          + (f"; {folder.damage_lines()[0]}" if folder.damage else ""))

    ranks = {rec.trial_id: i for i, rec in enumerate(rank_records(records, folder.mode), 1)}
    pareto_ids = [rec.trial_id for rec in pareto_records(records, folder.objectives)]
    rows = [_trial_row(rec, configs[tid], metrics[tid], ranks.get(tid)) for tid, rec in records.items()]
    flats = [row.pop("_flat") for row in rows]
    hparams = _varying_keys(flats, space_keys)
    group_ids: dict[Any, int] = {}
    for row, flat in zip(rows, flats):
        for key in hparams:
            row[key] = flat.get(key)
        signature = tuple(sorted((k, _hashable(v)) for k, v in flat.items() if not _is_ignored(k)))
        row["group"] = group_ids.setdefault(signature, len(group_ids) + 1)
    trials = pd.DataFrame(rows)
    trials["rank"] = pd.array(trials["rank"], dtype="Int64")
    for metric, _ in folder.objectives:  # each objective's value (at the best epoch), by the folder's rule
        trials[metric] = [number((records[t].objectives or {}).get(metric)) for t in trials["trial_id"]]
    if folder.objectives:
        trials["pareto"] = trials["trial_id"].isin(pareto_ids)
    return Sweep(folder=folder, records=records, trials=trials, metrics=metrics, configs=configs, hparams=hparams,
                 notes=notes, pareto_ids=pareto_ids, flats=dict(zip(trials["trial_id"], flats)))


# The columns of _trial_row, for a sweep without trials yet (load_sweep(allow_empty=True)).
_EMPTY_COLUMNS = ["trial_id", "state", "reason", "model", "depth", "residual", "seed", "best_val_acc", "best_epoch",
                  "test_acc", "test_epoch", "epochs", "planned_epochs", "full", "train_time_s", "params",
                  "grad_ratio_mean", "grad_ratio_epoch1", "score", "rank", "group"]


def load_study(folder: SweepFolder):
    """The sweep's Optuna study (``optuna.db`` or ``storage.optuna``), or (None, why not): the importance
    figure's and the Python API's (``Sweep.study()``). Optuna is imported here, only when called."""
    try:
        import optuna
    except ImportError:
        return None, "optuna is not installed"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        url = folder.study_url(must_exist=True)
    except PielabError:
        return None, f"the sweep folder has no {OPTUNA_DB}"
    name = folder.study  # recorded by the runner (pielab.folder.study_name)
    try:
        names = optuna.study.get_all_study_names(storage=url)  # names only: summaries read every trial
        if name not in names:
            return None, (f"no study named {name!r} (from {STATUS_FILE} {STUDY_KEY!r}, else the folder's name) in the "
                          f"Optuna storage (found: {', '.join(names) or 'none'})")
        return optuna.load_study(study_name=name, storage=url), ""
    except Exception as exc:  # a locked, foreign or unreachable database must not stop the report
        return None, f"could not open the Optuna study ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})"


# --------------------------------------------------------------------------- tables


def _sd(values: pd.Series) -> float:
    """Sample standard deviation over repeats; undefined (NaN) for a single run."""
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def group_table(sweep: Sweep) -> pd.DataFrame:
    """One row per configuration (finished trials that differ only in ``train.seed``), best first.

    Numeric columns stay numeric (accuracies as fractions) so the CSV is machine-readable. ``epochs`` is the
    mean over seeds of the epochs run, ``planned_epochs`` the configuration's full length, ``full_length``
    whether every seed ran it (a scheduler such as ASHA or the budget stopped the others early).

    ``best`` marks the best configuration of each (model, depth, residual) *at equal fidelity*: the best
    full-length configuration of that family, and only when the family has none, its best early-stopped
    one (``full_length`` false then says so). Ranked by score alone, a configuration stopped after 2 of 14
    epochs would stand for its depth beside 14-epoch ones and make the depth look worse than it is.
    """
    done = sweep.finished()
    columns = ["group", "model", "depth", "residual", *sweep.hparams, "val_acc_mean", "val_acc_sd", "best_epoch",
               "test_acc_mean", "test_acc_sd", "epochs", "planned_epochs", "full_length", "train_time_s", "params",
               "n_seeds", "score_mean", "best", "trials"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for group, part in done.groupby("group", sort=False):
        first = part.iloc[0]
        rows.append({
            "group": group, "model": first["model"], "depth": first["depth"], "residual": first["residual"],
            **{k: first[k] for k in sweep.hparams},
            "val_acc_mean": part["best_val_acc"].mean(), "val_acc_sd": _sd(part["best_val_acc"]),
            "best_epoch": part["best_epoch"].mean(),
            "test_acc_mean": part["test_acc"].mean(), "test_acc_sd": _sd(part["test_acc"]),
            "epochs": part["epochs"].mean(), "planned_epochs": part["planned_epochs"].max(),
            "full_length": bool(part["full"].all()), "train_time_s": part["train_time_s"].mean(),
            "params": first["params"], "n_seeds": int(part["seed"].nunique(dropna=False)),
            "score_mean": part["score"].mean(), "trials": " ".join(part["trial_id"]),
        })
    table = pd.DataFrame(rows).sort_values("score_mean", ascending=sweep.mode == "min", kind="stable")
    family = table[["model", "depth", "residual"]].astype(str).agg("|".join, axis=1)
    # sorted best first: a family's best is its first full-length row, else its first row
    eligible = table["full_length"] | ~table["full_length"].groupby(family).transform("any")
    table["best"] = table.index.isin(family[eligible].drop_duplicates().index)
    reference = reference_results(sweep)
    if reference:
        for field_ in REFERENCE_FIELDS:
            table[f"reference_{field_}"] = table["model"].map(lambda m: number((reference.get(m) or {}).get(field_)))
        columns += [f"reference_{f}" for f in REFERENCE_FIELDS]
    return table.reset_index(drop=True)[columns]


# The fields of a spec's ``reference:`` entry that the summary table shows (pielab.spec.sweep_spec.ReferenceResult).
REFERENCE_FIELDS = ("val_acc", "best_val_acc", "epochs", "time_s")


def fidelity_note(table: pd.DataFrame) -> str:
    """The summary table's footnote when some configuration was stopped early (else ""): what ``E/F†`` in the
    Epochs column means and which rows ★ compares."""
    if table.empty or "full_length" not in table.columns or table["full_length"].all():
        return ""
    return ("† stopped early (by the scheduler or the budget): E/F is the epochs run (mean over seeds) of the "
            "configuration's full F, so its accuracy is not comparable with full-length rows; ★ marks each "
            "(model, depth, residual)'s best full-length configuration, or its best early-stopped one where "
            "none ran its full length.\n")


def reference_results(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """The spec's ``reference:`` section (model name -> the published result), or {} when it has none."""
    reference = sweep.spec.get("reference")
    return {k: v for k, v in reference.items() if isinstance(v, dict)} if isinstance(reference, dict) else {}


def reference_note(sweep: Sweep) -> str:
    """What the Reference column is, for the table's reader (empty when the spec has no ``reference:``)."""
    reference = reference_results(sweep)
    if not reference:
        return ""
    hardware = sorted({str(v["hardware"]) for v in reference.values() if v.get("hardware")})
    where = f" ({', '.join(hardware)})" if hardware else ""
    return (f"Reference: the published result{where} from the spec's reference section: val acc in %, its best "
            "epoch's when stated, epochs and training time; it may have been selected on another split.\n\n")


def provenance_line(sweep: Sweep) -> str:
    """The code, library versions and devices of the sweep's trials, stated once: ``code 8aab583, python
    3.12.3, torch 2.14.1, ...; device: CPU AMD EPYC (2 cores) (6 trials)``. Trials that ran with other
    versions are listed apart; trials without a recorded provenance (older folders) are counted."""
    from pielab.provenance import describe_device, describe_versions

    versions: dict[str, int] = {}
    devices: dict[str, int] = {}
    missing = 0
    for rec in sweep.records.values():
        if not isinstance(rec.provenance, dict):
            missing += 1
            continue
        text = describe_versions(rec.provenance)
        versions[text] = versions.get(text, 0) + 1
        device = describe_device(rec.provenance.get("device"))
        devices[device] = devices.get(device, 0) + 1
    if not versions:
        return "provenance: not recorded"
    parts = [text if len(versions) == 1 else f"{text} ({n} trials)" for text, n in versions.items()]
    line = "; ".join(parts) + "; device: " + ", ".join(f"{d} ({n} trial{'s' * (n != 1)})" for d, n in devices.items())
    return line + (f"; {missing} trial(s) without a record" if missing else "")


def trial_table(sweep: Sweep) -> pd.DataFrame:
    """Every trial, every state: the ranked ones first in rank order, then by state (the per-trial CSV)."""
    order = {state: i for i, state in enumerate(STATES)}
    trials = sweep.trials.copy()
    trials["_state_rank"] = trials["state"].map(lambda s: order.get(s, len(order)))
    trials = trials.sort_values(["rank", "_state_rank", "trial_id"], na_position="last", kind="stable")
    columns = ["rank", *(["pareto"] if sweep.objectives else []), "trial_id", "state", "group", "model", "depth",
               "residual", *sweep.hparams, "seed", *(m for m, _ in sweep.objectives[1:]), "best_value", "best_val_acc", "best_epoch", "test_acc", "test_epoch", "epochs", "train_time_s",
               "params", "grad_ratio_mean", "grad_ratio_epoch1", "reason"]
    return trials.rename(columns={"score": "best_value"})[columns].reset_index(drop=True)


def pareto_table(sweep: Sweep) -> pd.DataFrame:
    """The Pareto-optimal trials (the folder's front), best first by the first objective: each objective's
    value at the trial's best epoch, then what identifies the configuration. Empty for one objective."""
    columns = ["trial_id", "model", "depth", "residual", *sweep.hparams, "seed",
               *(m for m, _ in sweep.objectives), "best_epoch", "test_acc", "epochs", "train_time_s"]
    if not sweep.pareto_ids:
        return pd.DataFrame(columns=columns)
    by_id = sweep.trials.set_index("trial_id", drop=False)
    return by_id.loc[sweep.pareto_ids, columns].reset_index(drop=True)


def failed_table(sweep: Sweep) -> pd.DataFrame:
    """Failed and diverged trials with their reason: excluded from every ranking."""
    failed = sweep.trials[sweep.trials["state"].isin(FAILED_STATES)]
    return failed[["trial_id", "state", "reason", "model", "depth", "residual", *sweep.hparams, "seed",
                   "epochs"]].reset_index(drop=True)


@dataclass(frozen=True)
class Style:
    """How one output format writes a cell: escaping, bold, ±, the best marker and the early-stopped mark."""

    escape: Callable[[str], str]
    bold: str
    pm: str
    star: str
    dagger: str


def _escape_tex(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(ch, ch) for ch in text)


def _escape_md(text: str) -> str:
    return text.replace("|", r"\|")


STYLES = {
    "md": Style(_escape_md, "**{}**", " ± ", "★", "†"),
    "tex": Style(_escape_tex, r"\textbf{{{}}}", r" $\pm$ ", r"$\star$", r"$^\dagger$"),
    "html": Style(html.escape, "<strong>{}</strong>", " ± ", "★", "†"),
}


def _pct(mean: float, sd: float, pm: str) -> str:
    if math.isnan(mean):
        return fmt_value(None)
    return f"{100 * mean:.2f}" + ("" if math.isnan(sd) else f"{pm}{100 * sd:.2f}")


def _params(value: float) -> str:
    if math.isnan(value):
        return fmt_value(None)
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else str(int(value))


def display_groups(table: pd.DataFrame, hparams: list[str], fmt: str, metric: str = "val/acc") -> pd.DataFrame:
    """The group table as strings for one format: accuracies in % with mean ± sd, the best rows in bold.

    For a sweep on another ``metric`` than val/acc, a column of that metric (mean over seeds) comes first
    and carries the bold: it is what the rows are ranked by.
    """
    style = STYLES[fmt]
    own = metric != "val/acc"
    metric_column = f"Best {metric}"

    def pct(mean: float, sd: float) -> str:
        return style.escape(_pct(mean, sd, "\0")).replace("\0", style.pm)

    rows = []
    for _, r in table.iterrows():
        val = pct(r["val_acc_mean"], r["val_acc_sd"])
        score = style.escape(fmt_value(r["score_mean"]))
        rows.append({
            metric_column: style.bold.format(score) if r["best"] else score,
            "Model": fmt_value(r["model"]),
            "Depth": fmt_value(r["depth"]),
            "Residual": fmt_value(r["residual"]),
            **{k: fmt_value(r[k]) for k in hparams},
            "Val acc (%)": style.bold.format(val) if r["best"] and not own else val,
            "Best epoch": _epochs(r["best_epoch"]),
            "Test acc (%)": pct(r["test_acc_mean"], r["test_acc_sd"]),
            "Epochs": _epochs(r["epochs"]) if r.get("full_length", True) is not False
            else f"{_epochs(r['epochs'])}/{_epochs(r['planned_epochs'])}{style.dagger}",
            "Time (s)": _seconds(r["train_time_s"]),
            "Params": _params(r["params"]),
            "Seeds": str(r["n_seeds"]),
            "Best": style.star if r["best"] else "",
            "Reference": _reference_cell(r),
        })
    columns = ["Model", "Depth", "Residual", *hparams, *([metric_column] if own else []), "Val acc (%)", "Best epoch", "Test acc (%)", "Epochs",
               "Time (s)", "Params", "Seeds", "Best", *(["Reference"] if "reference_val_acc" in table.columns else [])]
    frame = pd.DataFrame(rows, columns=columns)  # without its own column, the metric's cells are dropped here
    for column in ("Model", "Residual", *hparams):  # the formatted cells above are escaped already
        frame[column] = frame[column].map(style.escape)
    frame.columns = [style.escape(c) for c in columns]
    return frame


def _reference_cell(row: pd.Series) -> str:
    """The published result of this row's model: ``84.60 (best 84.95), 20 ep, 610 s``; empty without one."""
    if "reference_val_acc" not in row.index or pd.isna(row["reference_val_acc"]):
        return ""
    text = f"{100 * row['reference_val_acc']:.2f}"
    if not pd.isna(row["reference_best_val_acc"]):
        text += f" (best {100 * row['reference_best_val_acc']:.2f})"
    if not pd.isna(row["reference_epochs"]):
        text += f", {_epochs(row['reference_epochs'])} ep"
    if not pd.isna(row["reference_time_s"]):
        text += f", {_seconds(row['reference_time_s'])} s"
    return text


def _epochs(value: float) -> str:
    """An epoch count or a mean of them over seeds (``7`` or ``7.5``)."""
    return fmt_value(None) if pd.isna(value) else f"{value:.1f}".removesuffix(".0")


def _seconds(value: float) -> str:
    return fmt_value(None) if pd.isna(value) else f"{value:.0f}"


def _percent(value: float) -> str:
    return fmt_value(None) if pd.isna(value) else f"{100 * value:.2f}"


def display_plain(table: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Any table as escaped strings for one format, accuracies in %."""
    style = STYLES[fmt]
    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        if column in ("best_val_acc", "test_acc"):
            cells = table[column].map(_percent)
            name = column.replace("_acc", " acc (%)").replace("_", " ")
        elif column in ("params", "model/params"):
            cells, name = table[column].map(_params), column
        elif column == "train_time_s":
            cells, name = table[column].map(_seconds), "time (s)"
        else:
            cells = table[column].map(lambda v: fmt_value(None if v is pd.NA else v))
            name = column.replace("_", " ") if "." not in column else column
        out[style.escape(name)] = cells.map(style.escape)
    return out


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' ``to_markdown`` needs ``tabulate``, which we do not ship)."""
    if frame.empty:
        return "_(none)_\n"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def to_latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table`` (cells already escaped by ``display_*``); needs ``\\usepackage{booktabs}``."""
    align = "".join("l" if c in ("Model", "Residual", "Best") else "r" for c in frame.columns)
    caption = _escape_tex(caption).replace("±", r"$\pm$")
    body = frame.to_latex(index=False, escape=False, column_format=align, caption=caption, label=label)
    return "% generated by `pielab report`; needs \\usepackage{booktabs}\n" + body




def usage_table(sweep: Sweep) -> pd.DataFrame:
    """What the sweep used and what it lost, one row per quantity (``Quantity``, ``Value``; plain text):
    CPU-hours and GPU-hours (the folder's accounting rule: each trial's reserved resources times the
    wall time it held them), the resources per trial, the budget and how the sweep ended, trials
    preempted (restarted after their node was lost: counted apart from failures) and retried."""
    usage = sweep.folder.usage(sweep.records)
    res = trial_resources(sweep.spec)
    records = sweep.records.values()
    rows = [
        ("CPU-hours", f"{usage['cpu_hours']:.4g}"),
        ("GPU-hours", f"{usage['gpu_hours']:.4g}"),
        ("trial-hours (resources held)", f"{usage['held_s'] / 3600:.4g}"),
        ("per trial", f"{res['cpu']:g} CPU, {res['gpu']:g} GPU"),
    ]
    budget = sweep.spec.get("budget") if isinstance(sweep.spec.get("budget"), dict) else {}
    for key, label in (("cpu_hours", "CPU-hours budget"), ("gpu_hours", "GPU-hours budget")):
        if budget.get(key) is not None:
            rows.append((label, f"{budget[key]:g}"))
    status = sweep.folder.status
    if status.get("end"):
        rows.append(("ended", str(status.get("budget_reason") or status["end"])))
    rows += [
        ("preempted trials (node lost)", str(sum(1 for r in records if r.preemptions))),
        ("restarts after a lost node", str(sum(r.preemptions for r in records))),
        ("retries after a trial failure", str(sum(r.retries for r in records))),
    ]
    return pd.DataFrame(rows, columns=["Quantity", "Value"])
