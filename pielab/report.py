"""Tables, figures, one HTML page and exported configs from a sweep folder (``pielab report`` / ``pielab export``).

It reads only the sweep folder's stable format, never Ray's internals, so a report can be made from a
sweep that is still running, was interrupted, or was copied off the cluster::

    SWEEP_DIR/sweep.yaml                       the resolved sweep spec (name, base, space, metric, mode, seeds)
    SWEEP_DIR/optuna.db                        the Optuna study (parameter importances only)
    SWEEP_DIR/status.json                      timestamps (optional)
    SWEEP_DIR/trials/<id>/config.yaml          the trial's resolved config (what `pielab train` accepts)
    SWEEP_DIR/trials/<id>/metrics.csv          one row per epoch (pielab.train.METRIC_KEYS)
    SWEEP_DIR/trials/<id>/result.json          state, reason, best_value, best_val_acc, best_epoch, test_acc, epochs,
                                               num_params, params (sampled) ... (see pielab.sweep.folder)

``trials/`` is the source of truth: ``results.csv`` is a convenience copy that an interrupted sweep may
lack, so it is not read. A trial counts as *finished* when its state is ``completed`` or
``early_stopped`` (ASHA stopped it; its best epoch is still a real measurement); only finished trials
are ranked, grouped and exported. Running trials appear in the per-trial table with their partial
metrics; failed and diverged ones in their own table with the reason.

Trials that differ only in ``train.seed`` form a *group* (the repeats of one configuration, ``seeds:
[0, 1]``); tables show the mean and the sample standard deviation over a group.

Optuna is imported lazily and only for the importance figure (``pielab.sweep`` is the package that
owns it); the rest needs pandas, matplotlib and YAML.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from pielab.config import config_from_dict, flatten, load_yaml
from pielab.errors import PielabError

FINISHED = ("completed", "early_stopped")
FAILED = ("failed", "diverged")
STATES = ("completed", "early_stopped", "running", "failed", "diverged")

# Config keys that never change a result: they do not split groups and are not "hyperparameters".
IGNORED_KEYS = ("train.seed", "train.device", "train.threads", "data.path", "data.cache_dir")
IGNORED_PREFIXES = ("tracking.",)
# Shown in their own columns, so left out of the hyperparameter columns.
OWN_COLUMNS = ("model.name", "model.depth", "model.residual")


# --------------------------------------------------------------------------- reading a sweep folder


@dataclass
class Sweep:
    """A sweep folder read into memory: the spec, one row per trial, and each trial's epochs."""

    path: Path
    spec: dict[str, Any]
    trials: pd.DataFrame  # one row per trial; see _trial_row for the columns
    metrics: dict[str, pd.DataFrame]  # trial id -> metrics.csv (possibly empty)
    configs: dict[str, dict[str, Any]]  # trial id -> config.yaml as written (nested)
    hparams: list[str]  # dotted config keys that vary across trials (seed and OWN_COLUMNS excluded)
    notes: list[str] = field(default_factory=list)  # what was skipped and why, for the HTML page

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.path.name)

    @property
    def metric(self) -> str:
        return metric_mode(self.spec)[0]

    @property
    def mode(self) -> str:
        return metric_mode(self.spec)[1]

    @property
    def task(self) -> str:
        base = self.spec.get("base")
        return str(base.get("task", "")) if isinstance(base, dict) else ""

    def finished(self) -> pd.DataFrame:
        """Finished trials, best first by the sweep's metric and mode; ties go to the trial that trained
        longer, then to the lower id (the rule of ``pielab.sweep.folder.rank_records``, so ``pielab status``,
        the report and the export agree on the best trial)."""
        done = self.trials[self.trials["state"].isin(FINISHED) & self.trials["score"].notna()]
        return done.sort_values(["score", "epochs", "trial_id"], ascending=[self.mode == "min", False, True],
                                kind="stable")


def metric_mode(spec: dict[str, Any]) -> tuple[str, str]:
    """The sweep's selection metric and mode (``mode`` defaults as in the spec: max for accuracies)."""
    metric = str(spec.get("metric") or "val/acc")
    mode = spec.get("mode")
    return metric, mode if mode in ("max", "min") else ("max" if metric.endswith("acc") else "min")


def _is_ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def _hashable(value: Any) -> Any:
    """Config values as dictionary keys (lists such as ResNet layouts become tuples)."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or half-written by a live trial: treat as absent
        return {}
    return data if isinstance(data, dict) else {}


def _read_metrics(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):  # absent, empty, or mid-write
        return pd.DataFrame()
    if "epoch" in frame:
        frame = frame.sort_values("epoch").reset_index(drop=True)
    return frame


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _last(frame: pd.DataFrame, column: str) -> float:
    if column not in frame or frame[column].dropna().empty:
        return math.nan
    return _number(frame[column].dropna().iloc[-1])


def _first_present(*values: Any) -> float:
    for value in values:
        number = _number(value)
        if not math.isnan(number):
            return number
    return math.nan


def _grad_ratios(frame: pd.DataFrame) -> tuple[float, float]:
    """(mean over epochs, first epoch) of ``grad/first_last_ratio``, ignoring non-finite and non-positive values."""
    if "grad/first_last_ratio" not in frame:
        return math.nan, math.nan
    ratio = pd.to_numeric(frame["grad/first_last_ratio"], errors="coerce")
    ratio = ratio[ratio.map(lambda v: math.isfinite(v) and v > 0)]
    return (float(ratio.mean()) if len(ratio) else math.nan, float(ratio.iloc[0]) if len(ratio) else math.nan)


def _score(metric: str, mode: str, frame: pd.DataFrame, best_val_acc: float) -> float:
    """The trial's best value of the sweep's metric (what the sweep optimised)."""
    if metric == "val/acc":
        return best_val_acc
    if metric not in frame or frame[metric].dropna().empty:
        return math.nan
    column = pd.to_numeric(frame[metric], errors="coerce")
    return float(column.max() if mode == "max" else column.min())


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


def _trial_row(trial_id: str, config: dict[str, Any], result: dict[str, Any], frame: pd.DataFrame,
               metric: str, mode: str) -> dict[str, Any]:
    """One row of ``Sweep.trials``: result.json where it has a value, else the last row of metrics.csv.

    Hyperparameter values come from the resolved config.yaml, not from the sampled dict in result.json:
    the config is what the trial actually ran (Optuna stores non-primitive choices as text).
    """
    flat = flatten(config)
    state = str(result.get("state") or "running")  # no result.json yet: the trial has not ended
    best_val_acc = _first_present(result.get("best_val_acc"), _last(frame, "best/val_acc"),
                                  frame["val/acc"].max() if "val/acc" in frame else None)
    params = _first_present(result.get("num_params"))
    if math.isnan(params):
        params = _count_params(config)
    grad_mean, grad_first = _grad_ratios(frame)
    return {
        "trial_id": trial_id,
        "state": state,
        "reason": str(result.get("reason") or ""),
        "model": flat.get("model.name", ""),
        "depth": _number(flat.get("model.depth")),
        "residual": flat.get("model.residual") if isinstance(flat.get("model.residual"), bool) else None,
        "seed": flat.get("train.seed"),
        "best_val_acc": best_val_acc,
        "best_epoch": _first_present(result.get("best_epoch"), _last(frame, "best/epoch")),
        "test_acc": _first_present(result.get("test_acc"), _last(frame, "test/acc")),
        "epochs": _first_present(result.get("epochs"), result.get("epochs_run"), _last(frame, "epoch"), 0),
        "train_time_s": _first_present(result.get("train_time_s"), _last(frame, "time/total_s")),
        "params": params,
        "grad_ratio_mean": grad_mean,
        "grad_ratio_epoch1": grad_first,
        "score": _first_present(result.get("best_value"), _score(metric, mode, frame, best_val_acc)),
        "_flat": flat,
    }


def _varying_keys(flats: list[dict[str, Any]], order: list[str]) -> list[str]:
    """Config keys with more than one value across trials, in the space's order first."""
    keys = sorted({k for flat in flats for k in flat})
    varying = [k for k in keys if not _is_ignored(k) and k not in OWN_COLUMNS
               and len({_hashable(flat.get(k)) for flat in flats}) > 1]
    ranked = [k for k in order if k in varying]
    return ranked + [k for k in varying if k not in ranked]


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Read a sweep folder; a folder that is not one, or has no trials yet, raises PielabError (one line)."""
    path = Path(sweep_dir)
    if not path.is_dir():
        raise PielabError(f"{path} is a file, not a sweep folder" if path.exists() else f"{path}: no such folder")
    if not (path / "sweep.yaml").is_file() or not (path / "trials").is_dir():
        missing = "sweep.yaml" if not (path / "sweep.yaml").is_file() else "trials/"
        raise PielabError(f"{path} is not a sweep folder (no {missing})")
    spec, _ = load_yaml(path / "sweep.yaml")
    space = spec.get("space") if isinstance(spec.get("space"), dict) else {}
    space_keys = list((space.get("parameters") or {}) if isinstance(space, dict) else {})
    metric, mode = metric_mode(spec)

    rows, metrics, configs, notes = [], {}, {}, []
    for trial_dir in sorted(p for p in (path / "trials").iterdir() if p.is_dir()):
        trial_id = trial_dir.name
        if not (trial_dir / "config.yaml").is_file():
            notes.append(f"trial {trial_id} skipped: no config.yaml yet")
            continue
        try:
            config, _ = load_yaml(trial_dir / "config.yaml")
        except PielabError as exc:
            notes.append(f"trial {trial_id} skipped: {exc}")
            continue
        frame = _read_metrics(trial_dir / "metrics.csv")
        result = _read_json(trial_dir / "result.json")
        rows.append(_trial_row(trial_id, config, result, frame, metric, mode))
        metrics[trial_id], configs[trial_id] = frame, config
    if not rows:
        raise PielabError(f"{path}: no trials yet (trials/ has no trial with a config.yaml)")

    flats = [row.pop("_flat") for row in rows]
    hparams = _varying_keys(flats, space_keys)
    group_ids: dict[Any, int] = {}
    for row, flat in zip(rows, flats):
        for key in hparams:
            row[key] = flat.get(key)
        signature = tuple(sorted((k, _hashable(v)) for k, v in flat.items() if not _is_ignored(k)))
        row["group"] = group_ids.setdefault(signature, len(group_ids) + 1)
    trials = pd.DataFrame(rows)
    return Sweep(path=path, spec=spec, trials=trials, metrics=metrics, configs=configs, hparams=hparams, notes=notes)


# --------------------------------------------------------------------------- tables


def _sd(values: pd.Series) -> float:
    """Sample standard deviation over repeats; undefined (NaN) for a single run."""
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def group_table(sweep: Sweep) -> pd.DataFrame:
    """One row per configuration (finished trials that differ only in ``train.seed``), best first.

    Numeric columns stay numeric (accuracies as fractions) so the CSV is machine-readable; ``best``
    marks the best configuration of each (model, depth, residual).
    """
    done = sweep.finished()
    columns = ["group", "model", "depth", "residual", *sweep.hparams, "val_acc_mean", "val_acc_sd", "best_epoch",
               "test_acc_mean", "test_acc_sd", "epochs", "train_time_s", "params", "n_seeds", "score_mean",
               "best", "trials"]
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
            "epochs": part["epochs"].mean(), "train_time_s": part["train_time_s"].mean(),
            "params": first["params"], "n_seeds": int(part["seed"].nunique(dropna=False)),
            "score_mean": part["score"].mean(), "trials": " ".join(part["trial_id"]),
        })
    table = pd.DataFrame(rows).sort_values("score_mean", ascending=sweep.mode == "min", kind="stable")
    family = table[["model", "depth", "residual"]].astype(str).agg("|".join, axis=1)
    table["best"] = ~family.duplicated()  # sorted best first: the first row of each family is its best
    return table.reset_index(drop=True)[columns]


def trial_table(sweep: Sweep) -> pd.DataFrame:
    """Every trial, every state, best first within the finished ones (the per-trial CSV)."""
    order = {state: i for i, state in enumerate(STATES)}
    trials = sweep.trials.copy()
    trials["_state_rank"] = trials["state"].map(lambda s: order.get(s, len(order)))
    trials["_score"] = trials["score"] if sweep.mode == "max" else -trials["score"]
    trials = trials.sort_values(["_state_rank", "_score"], ascending=[True, False], kind="stable")
    columns = ["trial_id", "state", "group", "model", "depth", "residual", *sweep.hparams, "seed", "best_val_acc",
               "best_epoch", "test_acc", "epochs", "train_time_s", "params", "grad_ratio_mean", "grad_ratio_epoch1",
               "reason"]
    return trials[columns].reset_index(drop=True)


def failed_table(sweep: Sweep) -> pd.DataFrame:
    """Failed and diverged trials with their reason: excluded from every ranking."""
    failed = sweep.trials[sweep.trials["state"].isin(FAILED)]
    return failed[["trial_id", "state", "reason", "model", "depth", "residual", *sweep.hparams, "seed",
                   "epochs"]].reset_index(drop=True)


@dataclass(frozen=True)
class Style:
    """How one output format writes a cell: escaping, bold, ± and the best marker."""

    escape: Callable[[str], str]
    bold: str
    pm: str
    star: str


def _escape_tex(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(ch, ch) for ch in text)


def _escape_md(text: str) -> str:
    return text.replace("|", r"\|")


STYLES = {
    "md": Style(_escape_md, "**{}**", " ± ", "★"),
    "tex": Style(_escape_tex, r"\textbf{{{}}}", r" $\pm$ ", r"$\star$"),
    "html": Style(html.escape, "<strong>{}</strong>", " ± ", "★"),
}


def fmt_value(value: Any) -> str:
    """A config or table value as a person reads it (``0.001``, ``yes``, ``34``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    return str(value)


def _pct(mean: float, sd: float, pm: str) -> str:
    if math.isnan(mean):
        return ""
    return f"{100 * mean:.2f}" + ("" if math.isnan(sd) else f"{pm}{100 * sd:.2f}")


def _params(value: float) -> str:
    if math.isnan(value):
        return ""
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else str(int(value))


def display_groups(table: pd.DataFrame, hparams: list[str], fmt: str) -> pd.DataFrame:
    """The group table as strings for one format: accuracies in % with mean ± sd, the best rows in bold."""
    style = STYLES[fmt]

    def pct(mean: float, sd: float) -> str:
        return style.escape(_pct(mean, sd, "\0")).replace("\0", style.pm)

    rows = []
    for _, r in table.iterrows():
        val = pct(r["val_acc_mean"], r["val_acc_sd"])
        rows.append({
            "Model": fmt_value(r["model"]),
            "Depth": fmt_value(r["depth"]),
            "Residual": fmt_value(r["residual"]),
            **{k: fmt_value(r[k]) for k in hparams},
            "Val acc (%)": style.bold.format(val) if r["best"] else val,
            "Best epoch": _epochs(r["best_epoch"]),
            "Test acc (%)": pct(r["test_acc_mean"], r["test_acc_sd"]),
            "Epochs": _epochs(r["epochs"]),
            "Time (s)": "" if pd.isna(r["train_time_s"]) else f"{r['train_time_s']:.0f}",
            "Params": _params(r["params"]),
            "Seeds": str(r["n_seeds"]),
            "Best": style.star if r["best"] else "",
        })
    columns = ["Model", "Depth", "Residual", *hparams, "Val acc (%)", "Best epoch", "Test acc (%)", "Epochs",
               "Time (s)", "Params", "Seeds", "Best"]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("Model", "Residual", *hparams):  # the formatted cells above are escaped already
        frame[column] = frame[column].map(style.escape)
    frame.columns = [style.escape(c) for c in columns]
    return frame


def _epochs(value: float) -> str:
    """An epoch count or a mean of them over seeds (``7`` or ``7.5``)."""
    return "" if pd.isna(value) else f"{value:.1f}".removesuffix(".0")


def display_plain(table: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Any table as escaped strings for one format, accuracies in %."""
    style = STYLES[fmt]
    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        if column in ("best_val_acc", "test_acc"):
            cells = table[column].map(lambda v: "" if pd.isna(v) else f"{100 * v:.2f}")
            name = column.replace("_acc", " acc (%)").replace("_", " ")
        elif column == "params":
            cells, name = table[column].map(_params), column
        elif column == "train_time_s":
            cells, name = table[column].map(lambda v: "" if pd.isna(v) else f"{v:.0f}"), "time (s)"
        else:
            cells, name = table[column].map(fmt_value), column.replace("_", " ") if "." not in column else column
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


# --------------------------------------------------------------------------- writing outputs


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_all(files: dict[Path, bytes | str]) -> None:
    """Write files prepared in memory; nothing is written until everything has been rendered."""
    for path, data in files.items():
        write_atomic(path, data)


def build_report(sweep_dir: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Render every table, figure and the HTML page of a sweep into ``out`` (default SWEEP_DIR/report).

    Returns {output name: path}. Everything is rendered in memory first, then written file by file
    atomically, so a failure leaves the previous report untouched.
    """
    from pielab import report_figures, report_html

    sweep = load_sweep(sweep_dir)
    out_dir = Path(out) if out is not None else sweep.path / "report"
    groups, trials, failed = group_table(sweep), trial_table(sweep), failed_table(sweep)
    if groups.empty:
        sweep.notes.append("no finished trials yet: the summary table and the figures are empty")

    caption = f"Sweep {sweep.name}: best {sweep.metric} per configuration (mean ± sd over seeds), best first"
    files: dict[str, bytes | str] = {
        "summary.csv": groups.to_csv(index=False),
        "summary.md": to_markdown(display_groups(groups, sweep.hparams, "md")),
        "summary.tex": to_latex(display_groups(groups, sweep.hparams, "tex"), caption, f"tab:{sweep.name}-summary"),
        "trials.csv": trials.to_csv(index=False),
        "failed.csv": failed.to_csv(index=False),
        "failed.md": to_markdown(display_plain(failed, "md")),
    }
    figures = report_figures.make_figures(sweep, groups)  # a skipped figure's reason is shown in its place
    files.update({fig.filename: fig.png for fig in figures if fig.png is not None})
    files["report.html"] = report_html.render(sweep, groups, trials, failed, figures)
    paths = {name: out_dir / name for name in files}
    _write_all({paths[name]: data for name, data in files.items()})
    return paths


def report_command(sweep_dir: str, out: str | None = None) -> int:
    """``pielab report``: write the report and print where it is."""
    paths = build_report(sweep_dir, out)
    page = paths["report.html"]
    print(f"Report: {page} ({len(paths)} files in {page.parent})")
    return 0


# --------------------------------------------------------------------------- export


def export_paths(out: Path, count: int) -> list[Path]:
    """``FILE`` for one config; ``FILE-stem_1.yaml`` .. ``_K.yaml`` beside it for K > 1 (one config per file,
    because ``pielab train`` takes a single-document YAML)."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{rank}.yaml") for rank in range(1, count + 1)]


def export_configs(sweep_dir: str | Path, top: int = 1, out: str | Path | None = None) -> list[Path]:
    """Write the best ``top`` finished trials' resolved configs as YAML that ``pielab train`` accepts.

    Each file is the trial's ``config.yaml`` validated through ``config_from_dict`` (so it trains as is,
    with its full ``train.epochs`` and its ``train.seed``), under a comment header that records the trial
    id, its best validation accuracy, the epoch it was reached at (``best_epoch``) and the test accuracy
    there: to reproduce the trial, train the file and compare val/acc epoch by epoch up to ``best_epoch``.
    All files are rendered before any is written; each write is atomic.
    """
    if top < 1:
        raise PielabError(f"--top must be at least 1, got {top}")
    sweep = load_sweep(sweep_dir)
    ranked = sweep.finished()
    if ranked.empty:
        counts = ", ".join(f"{n} {s}" for s, n in sweep.trials["state"].value_counts().items())
        raise PielabError(f"{sweep.path}: no completed trial to export yet ({counts})")
    ranked = ranked.head(top)
    target = Path(out) if out is not None else sweep.path / "best_configs.yaml"
    paths = export_paths(target, len(ranked))
    # Sweep trials with train.threads null run with their CPU share as torch's thread count, and a different
    # thread count changes float summation order: the header says so rather than altering the config.
    resources = sweep.spec.get("resources") if isinstance(sweep.spec.get("resources"), dict) else {}
    cpus = _number(resources.get("cpu"))
    trial_threads = max(1, int(cpus)) if not math.isnan(cpus) else None
    files: dict[Path, str] = {}
    for rank, ((_, trial), path) in enumerate(zip(ranked.iterrows(), paths), start=1):
        try:
            config = config_from_dict(sweep.configs[trial["trial_id"]])
        except PielabError as exc:
            raise PielabError(f"trial {trial['trial_id']}: its config.yaml no longer validates: {exc}") from None
        sampled = ", ".join(f"{k}={fmt_value(trial[k])}" for k in sweep.hparams)
        header = [
            f"# pielab export: rank {rank} of {len(ranked)} in sweep {sweep.name} ({sweep.path})",
            f"# trial: {trial['trial_id']} ({trial['state']}), seed {fmt_value(trial['seed'])}",
            f"# model: {trial['model']}, depth {fmt_value(trial['depth'])}, residual {fmt_value(trial['residual'])}",
            f"# best_val_acc: {trial['best_val_acc']:.4f}",
            f"# best_epoch: {fmt_value(trial['best_epoch'])}",
            f"# test_acc: {trial['test_acc']:.4f}  (at best_epoch)",
            f"# epochs_run: {fmt_value(trial['epochs'])} of train.epochs={config.train.epochs}",
        ]
        if sweep.metric != "val/acc":
            header.append(f"# best {sweep.metric}: {trial['score']:.4f}")
        if sampled:
            header.append(f"# searched: {sampled}")
        header.append(f"# train it: pielab train {path.name} --out DIR")
        if config.train.threads is None and trial_threads is not None:
            header.append(f"# the trial ran with {trial_threads} torch thread(s) (its resources.cpu); for a bitwise "
                          f"CPU reproduction add --set train.threads={trial_threads}")
        files[path] = "\n".join(header) + "\n" + yaml.safe_dump(config.to_dict(), sort_keys=False)
    _write_all(files)
    return paths


def export_command(sweep_dir: str, top: int = 1, out: str | None = None) -> int:
    """``pielab export``: see :func:`export_configs`; prints one line per file written."""
    paths = export_configs(sweep_dir, top, out)
    if len(paths) < top:
        print(f"only {len(paths)} completed trial(s): exported {len(paths)} of {top}")
    for path in paths:
        print(f"Exported: {path}")
    return 0
