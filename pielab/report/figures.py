"""The report's figures (after :mod:`.tables`, before :mod:`.page`), rendered to PNG bytes with matplotlib's object API (no pyplot global state).

Each figure is a :class:`Figure` with a caption that says exactly what was aggregated; a figure that
cannot be drawn (no finished trial, no varying parameter, no Optuna study) comes back with ``png=None``
and the reason, which the HTML page shows instead of a broken image.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FuncFormatter, NullFormatter

from pielab.report.tables import Sweep, load_study
from pielab.text import fmt_value

DPI = 120
MAX_CURVE_PANELS = 6
# Residual on / off keep one colour each across figures, so the depth and gradient figures read together.
COLORS = {True: "#1f77b4", False: "#d62728", None: "#7f7f7f"}


@dataclass
class Figure:
    """One report figure: PNG bytes, or ``png=None`` and the reason it was skipped."""

    filename: str
    title: str
    caption: str
    png: bytes | None = None
    skipped: str = ""


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    # No "Software" metadata: the PNG then carries no URL, and the HTML page stays free of any.
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _residual_label(value: Any) -> str:
    return {True: "residual on", False: "residual off"}.get(value, "residual n/a")


def _line_key(model: str, residual: Any, models: int) -> str:
    return f"{model}, {_residual_label(residual)}" if models > 1 else _residual_label(residual)


def _line_order(key: tuple[Any, Any]) -> tuple[str, int]:
    """Lines sorted by model, then residual on before off (the legend reads the same in every figure)."""
    model, residual = key
    return str(model), {True: 0, False: 1}.get(residual, 2)


def _trial_title(trial: pd.Series, hparams: list[str]) -> str:
    parts = [str(trial["model"])]
    if not pd.isna(trial["depth"]):
        parts.append(f"depth {fmt_value(trial['depth'])}")
    parts.append(_residual_label(trial["residual"]))
    extra = [f"{k.split('.')[-1]}={fmt_value(trial[k])}" for k in hparams if k not in ("model.depth", "model.residual")]
    seed = f"seed {fmt_value(trial['seed'])}"
    return ", ".join(parts) + (" | " + ", ".join(extra) if extra else "") + f" | {seed}"


# --------------------------------------------------------------------------- (1) learning curves


def curves_figure(sweep: Sweep) -> Figure:
    """Loss and accuracy per epoch, train vs validation, for the best trial of the best configurations."""
    fig_info = Figure("fig_curves.png", "Learning curves",
                      "Loss (left) and accuracy (right) per epoch, train and validation, for the best run of each of "
                      f"the best (model, depth, residual) combinations (at most {MAX_CURVE_PANELS}, best first); "
                      f"the dotted line marks the best epoch (the best {sweep.metric}).")
    done = sweep.finished()
    chosen = done.drop_duplicates(subset=["model", "depth", "residual"]).head(MAX_CURVE_PANELS)
    chosen = chosen[[not sweep.metrics[t].empty and "val/acc" in sweep.metrics[t] for t in chosen["trial_id"]]]
    if chosen.empty:
        fig_info.skipped = "no finished trial with per-epoch metrics"
        return fig_info
    rows = len(chosen)
    fig = MplFigure(figsize=(11, 2.8 * rows + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, 2, squeeze=False))
    for (_, trial), (ax_loss, ax_acc) in zip(chosen.iterrows(), axes):
        frame = sweep.metrics[trial["trial_id"]]
        for ax, kind, label in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Accuracy")):
            for split, style in (("train", "-"), ("val", "--")):
                column = f"{split}/{kind}"
                if column in frame:
                    ax.plot(frame["epoch"], frame[column], style, marker="o", markersize=3,
                            label=f"{'Train' if split == 'train' else 'Validation'} {label.lower()}")
            if not pd.isna(trial["best_epoch"]):
                ax.axvline(trial["best_epoch"], color="0.5", linestyle=":", linewidth=1)
            ax.set_xlabel("Epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
            if len(frame) <= 12:
                ax.set_xticks(frame["epoch"].astype(int).tolist())
        ax_loss.set_title(_trial_title(trial, sweep.hparams), fontsize=9, loc="left")
        ax_acc.set_title(f"best {sweep.metric} {fmt_value(trial['score'])} at epoch {fmt_value(trial['best_epoch'])} "
                         f"(trial {trial['trial_id']})", fontsize=9, loc="left")
    fig.suptitle(f"{sweep.name}: learning curves of the best runs", fontsize=12)
    fig_info.png = _png(fig)
    return fig_info


# --------------------------------------------------------------------------- (2) accuracy vs depth


def depth_points(groups: pd.DataFrame) -> pd.DataFrame:
    """The lines of :func:`depth_figure`: each (model, residual, depth)'s best configuration (``groups``'
    ``best`` rows: full-length first, :func:`~pielab.report.tables.group_table`) with its epochs run and its
    full length. Columns: model, residual, depth, val_acc_mean, val_acc_sd, test_acc_mean, test_acc_sd,
    epochs, planned_epochs, full_length."""
    columns = ["model", "residual", "depth", "val_acc_mean", "val_acc_sd", "test_acc_mean", "test_acc_sd", "epochs",
               "planned_epochs", "full_length"]
    if groups.empty:
        return pd.DataFrame(columns=columns)
    return groups[groups["best"]].dropna(subset=["depth"])[columns].sort_values(["model", "depth"]).reset_index(drop=True)


def _epochs_phrase(points: pd.DataFrame) -> str:
    """``"every point ran its full 14 epochs"`` (or the full lengths, when they differ) for a caption."""
    full = points[points["full_length"].astype(bool)]
    lengths = sorted({int(e) for e in full["planned_epochs"].dropna()})
    if not lengths:
        return "no configuration ran its full length"
    said = f"{lengths[0]} epochs" if len(lengths) == 1 else "its " + "/".join(map(str, lengths)) + " epochs"
    return ("every point ran its full " + said) if len(full) == len(points) else (
        f"filled points ran their full {said}; a hollow point, labelled E/F ep, is a depth where no configuration "
        "ran its full length, trained E of its F epochs, so it is not comparable with the filled points")


def depth_figure(sweep: Sweep, groups: pd.DataFrame) -> Figure:
    """Validation and test accuracy against depth, one line per residual setting (and model), compared at equal
    fidelity: each point is the best *full-length* configuration at its depth where there is one; a point
    trained for fewer epochs is drawn hollow and labelled with its epochs, and early-stopped trials are crosses."""
    points = depth_points(groups)
    fig_info = Figure("fig_depth_accuracy.png", "Accuracy vs depth",
                      "Best validation accuracy over epochs (left) and test accuracy at the best epoch (right; "
                      f"the best {sweep.metric} epoch, test measured at the best val/acc epoch up to it) against depth. "
                      "Lines: the best full-length configuration at each depth, mean over its seeds, error bars ±1 sd "
                      f"over seeds (absent for single runs); {_epochs_phrase(points)}. Dots: every finished trial "
                      "(slightly jittered); crosses: trials stopped early (fewer epochs).")
    done = sweep.finished()
    if done.empty or done["depth"].isna().all() or groups["depth"].isna().all():
        fig_info.skipped = "no finished trial with a model.depth"
        return fig_info
    models = done["model"].nunique()
    depths = sorted(done["depth"].dropna().unique())
    fig = MplFigure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=False)
    span = (max(depths) - min(depths)) or 1.0
    for ax, (trial_col, mean_col, sd_col, label) in zip(axes, (
        ("best_val_acc", "val_acc_mean", "val_acc_sd", "Best validation accuracy (%)"),
        ("test_acc", "test_acc_mean", "test_acc_sd", "Test accuracy at best epoch (%)"),
    )):
        keys = sorted({(m, r) for m, r in zip(done["model"], done["residual"])}, key=_line_order)
        for i, (model, residual) in enumerate(keys):
            color = COLORS.get(residual, "#7f7f7f") if models == 1 else f"C{i}"
            trials = done[(done["model"] == model) & (done["residual"].astype(str) == str(residual))]
            jitter = (i - (len(keys) - 1) / 2) * 0.012 * span
            full = trials["full"].astype(bool)
            ax.scatter(trials[full]["depth"] + jitter, 100 * trials[full][trial_col], s=14, alpha=0.35, color=color,
                       linewidths=0)
            ax.scatter(trials[~full]["depth"] + jitter, 100 * trials[~full][trial_col], s=18, alpha=0.5, color=color,
                       marker="x", linewidths=1)
            line = points[(points["model"] == model) & (points["residual"].astype(str) == str(residual))]
            if line.empty:
                continue
            long_ = line[line["full_length"].astype(bool)]
            short = line[~line["full_length"].astype(bool)]
            # dashed where the line reaches a point trained for fewer epochs: not a like-for-like step
            ax.plot(line["depth"] + jitter, 100 * line[mean_col], color=color, linestyle="--", linewidth=1)
            ax.errorbar(long_["depth"] + jitter, 100 * long_[mean_col], yerr=100 * long_[sd_col].fillna(0),
                        color=color, marker="o", capsize=4, linewidth=2, label=_line_key(model, residual, models))
            if not short.empty:
                ax.errorbar(short["depth"] + jitter, 100 * short[mean_col], yerr=100 * short[sd_col].fillna(0),
                            color=color, marker="o", markersize=7, markerfacecolor="white", markeredgewidth=2,
                            capsize=4, linestyle="none", zorder=3)
                for _, row in short.iterrows():
                    ax.annotate(f"{fmt_value(row['epochs'])}/{fmt_value(row['planned_epochs'])} ep",
                                (row["depth"] + jitter, 100 * row[mean_col]), textcoords="offset points",
                                xytext=(-8, 8), ha="right", fontsize=8, color=color)
        ax.set_xticks(depths)
        ax.set_xticklabels([fmt_value(d) for d in depths])
        ax.set_xlabel("Depth (model.depth)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    axes[0].set_title("Validation", fontsize=10)
    axes[1].set_title("Test", fontsize=10)
    fig.suptitle(f"{sweep.name}: accuracy vs depth, residual on and off", fontsize=12)
    fig_info.png = _png(fig)
    return fig_info


# --------------------------------------------------------------------------- (2b) error vs epoch by depth


def _mean_curve(sweep: Sweep, trial_ids: list[str], column: str) -> pd.Series:
    """Mean of ``column`` over the given trials, per epoch (an epoch some seed never reached averages the rest)."""
    parts = [sweep.metrics[t].set_index("epoch")[column] for t in trial_ids
             if t in sweep.metrics and column in sweep.metrics[t]]
    return pd.concat(parts, axis=1).mean(axis=1).sort_index() if parts else pd.Series(dtype=float)


def error_curves(sweep: Sweep, groups: pd.DataFrame) -> dict[tuple[Any, Any], dict[float, pd.DataFrame]]:
    """The data of :func:`error_figure`: ``{(model, residual): {depth: frame}}``, panels plain first.

    Each frame is indexed by epoch with columns ``train_error`` and ``val_error`` in % (100 - accuracy), the
    mean over the seeds of the best configuration at that depth (``groups``' ``best`` rows).
    """
    best = groups[groups["best"]].dropna(subset=["depth"]) if not groups.empty else groups
    panels: dict[tuple[Any, Any], dict[float, pd.DataFrame]] = {}
    if best.empty:
        return panels
    keys = sorted({(m, r) for m, r in zip(best["model"], best["residual"])},
                  key=lambda k: (str(k[0]), {False: 0, True: 1}.get(k[1], 2)))  # plain left, as in He et al.
    for model, residual in keys:
        rows = best[(best["model"] == model) & (best["residual"].astype(str) == str(residual))].sort_values("depth")
        lines = {}
        for _, row in rows.iterrows():
            ids = str(row["trials"]).split()
            frame = pd.DataFrame({f"{split}_error": 100 * (1 - _mean_curve(sweep, ids, f"{split}/acc"))
                                  for split in ("train", "val")}).dropna(how="all")
            if not frame.empty:
                lines[float(row["depth"])] = frame
        if lines:
            panels[(model, residual)] = lines
    return panels


def error_figure(sweep: Sweep, groups: pd.DataFrame) -> Figure:
    """Error (%) against epoch, one line per depth, plain and residual side by side: He et al. (2016), figure 6.

    He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016: on CIFAR-10 the plain
    20/32/44/56-layer networks' errors rise with depth while the ResNets' fall. Each line is
    :func:`error_curves`' mean over seeds; the held-out curve is the validation error, never test (test does
    not select).
    """
    fig_info = Figure("fig_error_curves.png", "Error vs epoch by depth",
                      "Training error (dashed) and validation error (solid), 100 - accuracy in %, per epoch: one line "
                      "per depth (the best configuration at that depth, mean over its seeds), plain networks (residual "
                      "off) and residual ones side by side on a shared y axis, as He et al. (2016) draw it in their "
                      "figure 6 (there: per iteration, test error).")
    panels = error_curves(sweep, groups)
    depths = sorted({d for lines in panels.values() for d in lines})
    if not panels:
        fig_info.skipped = "no finished trial with a model.depth and per-epoch accuracy"
        return fig_info
    if len(depths) < 2:
        fig_info.skipped = "only one depth: nothing to compare across depths"
        return fig_info
    models = len({model for model, _ in panels})
    colors = colormaps["viridis"](np.linspace(0.0, 0.85, len(depths)))
    fig = MplFigure(figsize=(5.5 * len(panels), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, ((model, residual), lines) in zip(axes, panels.items()):
        for depth, frame in lines.items():
            color = colors[depths.index(depth)]
            ax.plot(frame.index, frame["train_error"], "--", color=color, linewidth=1.0)
            ax.plot(frame.index, frame["val_error"], "-", color=color, linewidth=2.0, label=f"depth {fmt_value(depth)}")
        ax.set_title(_line_key(model, residual, models), fontsize=10)
        ax.set_xlabel("Epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right", title="solid: val, dashed: train", title_fontsize=7)
    axes[0].set_ylabel("Error (%)")
    fig.suptitle(f"{sweep.name}: error against epoch for each depth, plain and residual", fontsize=12)
    fig_info.png = _png(fig)
    return fig_info


# --------------------------------------------------------------------------- (3) gradient ratio vs depth


def grad_figure(sweep: Sweep) -> Figure:
    """First/last-layer gradient-norm ratio against depth on a log axis: vanishing gradients in plain nets."""
    fig_info = Figure("fig_grad_ratio.png", "Gradient-norm ratio vs depth",
                      "Ratio of the gradient norm of the first layer group to that of the last "
                      "(grad/first_last_ratio; stem + first block vs last block, head excluded), per trial the mean "
                      "over its epochs. Lines: geometric mean over the finished trials at each depth; bars: their "
                      "min-max range. Far below 1: the first layers barely learn (vanishing gradients).")
    done = sweep.finished().dropna(subset=["depth", "grad_ratio_mean"])
    if done.empty:
        fig_info.skipped = "no finished trial with a model.depth and grad/first_last_ratio"
        return fig_info
    models = done["model"].nunique()
    depths = sorted(done["depth"].unique())
    span = (max(depths) - min(depths)) or 1.0
    fig = MplFigure(figsize=(7, 4.4), layout="constrained")
    ax = fig.subplots()
    keys = sorted({(m, r) for m, r in zip(done["model"], done["residual"])}, key=_line_order)
    for i, (model, residual) in enumerate(keys):
        color = COLORS.get(residual, "#7f7f7f") if models == 1 else f"C{i}"
        part = done[(done["model"] == model) & (done["residual"].astype(str) == str(residual))]
        jitter = (i - (len(keys) - 1) / 2) * 0.012 * span
        stats = part.groupby("depth")["grad_ratio_mean"].agg(
            geo=lambda v: float(np.exp(np.log(v).mean())), low="min", high="max").reset_index()
        ax.scatter(part["depth"] + jitter, part["grad_ratio_mean"], s=14, alpha=0.35, color=color, linewidths=0)
        ax.errorbar(stats["depth"] + jitter, stats["geo"],
                    yerr=[(stats["geo"] - stats["low"]).clip(lower=0), (stats["high"] - stats["geo"]).clip(lower=0)],
                    color=color, marker="o", capsize=4, linewidth=2, label=_line_key(model, residual, models))
    ax.axhline(1.0, color="0.4", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _pos: f"{value:g}")  # 0.001 and 4, not 10^-3 and 4x10^0
    low, high = ax.get_ylim()
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if high / low < 30 else NullFormatter())
    ax.set_xticks(depths)
    ax.set_xticklabels([fmt_value(d) for d in depths])
    ax.set_xlabel("Depth (model.depth)")
    ax.set_ylabel("‖∇ first layers‖ / ‖∇ last layers‖ (log)")
    ax.set_title(f"{sweep.name}: gradient-norm ratio, mean over epochs", fontsize=11)
    ax.grid(alpha=0.3, which="major")
    ax.grid(alpha=0.1, which="minor")
    ax.legend(fontsize=9)
    fig_info.png = _png(fig)
    return fig_info


# --------------------------------------------------------------------------- (4) parameter importance


def _load_study(sweep: Sweep):
    """The sweep's Optuna study, or (None, why not): :func:`pielab.report.tables.load_study`."""
    return load_study(sweep.folder)


def _importance_caveat(message: Warning | str) -> str:
    """What one of Optuna's warnings during the importance computation means for the reader of the figure, said
    in the caption instead of on the terminal (``pielab report`` prints no library warnings)."""
    text = str(message)
    if "computes the importances of params to achieve low" in text:
        return ""  # pielab negates a maximised objective for PED-ANOVA's target on purpose (above)
    if "select the same set of trials" in text or "too small to compute importances" in text:
        return "Here the top trials are all the trials, so every parameter reads as equally important."
    if "have less than" in text and "regimes" in text:
        return ("A conditional parameter has few trials in one of its branches, so its importance is uncertain.")
    return f"Optuna noted: {text.splitlines()[0]}"


def importance_figure(sweep: Sweep) -> Figure:
    """Optuna's PED-ANOVA importances: the evaluator that works without scikit-learn (fANOVA needs it)."""
    fig_info = Figure("fig_importance.png", "Parameter importance", "")
    study, why = _load_study(sweep)
    if study is None:
        fig_info.skipped = why
        return fig_info
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    seen: dict[str, set[str]] = {}  # each parameter's distinct values, in one pass (1,000 trials: O(n), not O(n^2))
    for t in complete:
        for key, value in t.params.items():
            seen.setdefault(key, set()).add(repr(value))
    varying = sorted(k for k, values in seen.items()
                     if len(values) > 1 or any(k not in t.params for t in complete))
    if len(complete) < 2 or not varying:
        fig_info.skipped = (f"{len(complete)} completed Optuna trial(s) and {len(varying)} varying parameter(s); "
                            "importance needs at least 2 and 1")
        return fig_info
    # PED-ANOVA compares the top quantile of trials with all of them; with few trials the default 10% is
    # one trial, so the top set is widened to at least 4 trials (at most half).
    quantile = min(0.5, max(0.1, 4 / len(complete)))
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
        target = None
        if len(study.directions) > 1:
            # A multi-objective study: importance for the first objective (the sweep's metric). PED-ANOVA
            # with a target looks for low values, so a maximised objective is negated.
            sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
            target = lambda t: sign * t.values[0]  # noqa: E731
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying,
                                                                  target=target)
    except Exception as exc:
        fig_info.skipped = f"Optuna could not compute importances ({exc.__class__.__name__}: {exc})"
        return fig_info
    names = list(importances)[::-1]
    values = [importances[n] for n in names]
    fig = MplFigure(figsize=(7, 0.5 * len(names) + 1.6), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(names, values, color="#1f77b4")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize=9)
    ax.set_xlim(0, max(max(values) * 1.18, 0.05))
    ax.set_xlabel("Importance (PED-ANOVA, sums to 1)")
    ax.set_title(f"{sweep.name}: hyperparameter importance for {sweep.metric}", fontsize=11)
    ax.grid(alpha=0.3, axis="x")
    fig_info.caption = (f"Optuna's PED-ANOVA importance over {len(complete)} completed trials of the study "
                        f"'{study.study_name}': how much each parameter's distribution in the top {quantile:.0%} of "
                        "trials differs from its distribution over all of them (fANOVA, Optuna's default, needs "
                        "scikit-learn). Few trials make this noisy."
                        + "".join(f" {_importance_caveat(w.message)}" for w in caught))
    fig_info.png = _png(fig)
    return fig_info


# --------------------------------------------------------------------------- (5) parallel coordinates


def _axis_values(values: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]], bool]:
    """Positions in [0, 1] for one axis, its tick (position, label) pairs, and whether it is log-scaled."""
    numeric = pd.to_numeric(values, errors="coerce")
    is_bool = values.map(lambda v: isinstance(v, (bool, np.bool_))).all()
    if not is_bool and numeric.notna().all():
        low, high = float(numeric.min()), float(numeric.max())
        log = low > 0 and high / low > 20
        scale = np.log10 if log else (lambda x: x)
        lo, hi = scale(low), scale(high)
        pos = (scale(numeric.to_numpy(dtype=float)) - lo) / ((hi - lo) or 1.0)
        ticks = np.geomspace(low, high, 4) if log else np.linspace(low, high, 4)
        unique = sorted(numeric.unique())
        if len(unique) <= 6:
            ticks = np.array(unique)
        return pos, [((scale(t) - lo) / ((hi - lo) or 1.0), fmt_value(float(t))) for t in ticks], log
    labels = sorted({fmt_value(v) for v in values})
    index = {label: i / max(len(labels) - 1, 1) for i, label in enumerate(labels)}
    return values.map(lambda v: index[fmt_value(v)]).to_numpy(dtype=float), [(p, l) for l, p in index.items()], False


def parallel_figure(sweep: Sweep) -> Figure:
    """Every finished trial as a line through its searched values, coloured by its score."""
    fig_info = Figure("fig_parallel.png", "Parallel coordinates",
                      f"Each line is one finished trial (every seed), through its searched values, coloured by its "
                      f"best {sweep.metric}; the last axis is that score. Categorical and boolean values are evenly "
                      "spaced; a positive range wider than 20x is on a log axis.")
    done = sweep.finished()
    axes_keys = list(sweep.hparams)
    for key, column in (("model.residual", "residual"), ("model.depth", "depth"), ("model.name", "model")):
        if column in done and done[column].nunique() > 1 and key not in axes_keys:
            axes_keys.insert(0, key)
    if len(done) < 2 or not axes_keys:
        fig_info.skipped = f"{len(done)} finished trial(s) and {len(axes_keys)} varying parameter(s); needs 2 and 1"
        return fig_info
    column_of = {"model.residual": "residual", "model.depth": "depth", "model.name": "model"}
    score_label = f"best {sweep.metric}"
    data = {key: done[column_of.get(key, key)] for key in axes_keys}
    data[score_label] = done["score"]
    fig = MplFigure(figsize=(max(7.0, 2.1 * len(data)), 4.6), layout="constrained")
    ax = fig.subplots()
    positions, axis_labels = {}, []
    for j, (key, values) in enumerate(data.items()):
        pos, ticks, log = _axis_values(values.reset_index(drop=True))
        positions[key] = pos
        axis_labels.append(key + (" (log)" if log else ""))
        ax.axvline(j, color="0.3", linewidth=1)
        for y, label in ticks:
            ax.text(j + 0.04, y, label, fontsize=8, va="center", ha="left",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
    matrix = np.column_stack([positions[k] for k in data])
    scores = done["score"].to_numpy(dtype=float)
    norm_lo, norm_hi = float(np.nanmin(scores)), float(np.nanmax(scores))
    cmap = colormaps["viridis"]
    order = np.argsort(scores if sweep.mode == "max" else -scores)  # best drawn last, on top
    for i in order:
        t = (scores[i] - norm_lo) / ((norm_hi - norm_lo) or 1.0)
        if sweep.mode == "min":
            t = 1 - t
        ax.plot(range(len(data)), matrix[i], color=cmap(t), alpha=0.85, linewidth=1.6)
    mappable = ScalarMappable(norm=Normalize(norm_lo, norm_hi), cmap=cmap if sweep.mode == "max" else cmap.reversed())
    fig.colorbar(mappable, ax=ax, label=score_label, pad=0.02)
    ax.set_xticks(range(len(data)))
    ax.set_xticklabels(axis_labels, fontsize=9)
    ax.set_yticks([])
    ax.set_xlim(-0.15, len(data) - 0.55)
    ax.set_ylim(-0.06, 1.06)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{sweep.name}: searched values of {len(done)} finished trials", fontsize=11)
    fig_info.png = _png(fig)
    return fig_info


# --------------------------------------------------------------------------- (6) Pareto front


def _objective_label(metric: str, mode: str) -> str:
    return f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"


def pareto_figure(sweep: Sweep) -> Figure:
    """The finished trials in objective space, the Pareto front highlighted: one panel per pair of objectives."""
    objectives = sweep.objectives
    pairs = [(i, j) for i in range(len(objectives)) for j in range(i + 1, len(objectives))]
    fig_info = Figure(
        "fig_pareto.png", "Pareto front",
        "Each point is one finished trial at its best epoch by the first objective "
        f"({objectives[0][0]}); colour: residual on or off, label: depth. Filled: completed trials; hollow: "
        "stopped early (measured at fewer epochs, so never on the front). Ringed in black and joined: the "
        "Pareto front over all objectives (completed trials that no other completed trial matches or beats "
        "in every objective)." + (" With three or more objectives, a front trial can look dominated in one "
                                  "panel: it is better in an objective that panel does not show." if len(pairs) > 1
                                  else ""))
    done = sweep.finished()
    metrics = [m for m, _ in objectives]
    done = done.dropna(subset=metrics) if not done.empty else done
    if done.empty:
        fig_info.skipped = "no finished trial with a value for every objective"
        return fig_info
    front = done[done["trial_id"].isin(sweep.pareto_ids)]
    fig = MplFigure(figsize=(6.2 * len(pairs), 4.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(pairs), squeeze=False)[0])
    for ax, (i, j) in zip(axes, pairs):
        (mx, dx), (my, dy) = objectives[j], objectives[i]  # the first objective up the y axis
        for residual in sorted(done["residual"].unique(), key=lambda r: {True: 0, False: 1}.get(r, 2)):
            part = done[done["residual"].astype(str) == str(residual)]
            color = COLORS.get(residual, "#7f7f7f")
            for completed, marker_face in ((True, color), (False, "none")):
                sub = part[(part["state"] == "completed") == completed]
                if sub.empty:
                    continue
                label = _residual_label(residual) + ("" if completed else ", stopped early")
                ax.scatter(sub[mx], sub[my], s=46, facecolors=marker_face, edgecolors=color, linewidths=1.2,
                           label=label, zorder=2)
            for _, trial in part.iterrows():
                if not pd.isna(trial["depth"]):
                    ax.annotate(f"d{fmt_value(trial['depth'])}", (trial[mx], trial[my]), xytext=(4, 3),
                                textcoords="offset points", fontsize=7, color="0.25")
        if not front.empty:
            ordered = front.sort_values([mx, my], ascending=[dx == "min", dy == "max"])
            if len(objectives) == 2:
                ax.plot(ordered[mx], ordered[my], color="black", linewidth=1, linestyle="--", zorder=1,
                        drawstyle="steps-post" if (dx == "min") == (dy == "max") else "steps-pre")
            ax.scatter(front[mx], front[my], s=130, facecolors="none", edgecolors="black", linewidths=1.6,
                       label=f"Pareto front ({len(front)})", zorder=3)
        values_x = pd.to_numeric(done[mx], errors="coerce")
        if (values_x > 0).all() and values_x.max() / values_x.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel(_objective_label(mx, dx))
        ax.set_ylabel(_objective_label(my, dy))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{sweep.name}: Pareto front of {len(front)} of {int((done['state'] == 'completed').sum())} "
                 "completed trials", fontsize=12)
    fig_info.png = _png(fig)
    return fig_info


def make_figures(sweep: Sweep, groups: pd.DataFrame) -> list[Figure]:
    """All figures, in the order the HTML page shows them: six, and the Pareto front for a multi-objective sweep."""
    figures = [curves_figure(sweep), depth_figure(sweep, groups), error_figure(sweep, groups), grad_figure(sweep),
               importance_figure(sweep), parallel_figure(sweep)]
    if sweep.objectives:
        figures.insert(0, pareto_figure(sweep))
    return figures
