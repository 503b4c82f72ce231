"""The report as one self-contained HTML page (the last of :mod:`.tables` <- :mod:`.figures` <- :mod:`.page`): inline CSS, figures as base64 PNG data URIs.

No external resource of any kind (no CDN, no web fonts, no scripts), so the page opens from a file in a
browser with no server and no network, and can be mailed or attached to a report as is.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import shlex
from typing import Any

import pandas as pd

from pielab.report.figures import Figure
from pielab.report.tables import (
    Sweep, display_groups, display_plain, fidelity_note, provenance_line, reference_note, usage_table,
)
from pielab.folder import FINISHED_STATES, STATES, SWEEP_FILE, TRIALS_DIR, test_acc_note
from pielab.text import fmt_value

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }
th, td { border-bottom: 1px solid #e2e2e2; padding: 0.3em 0.7em; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
tr:hover td { background: #fafafa; }
.scroll { overflow-x: auto; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; max-width: 900px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; margin: 0.4em 0; }
.state { display: inline-block; padding: 0.05em 0.5em; border-radius: 0.8em; background: #eef; margin-right: 0.4em; }
"""


def _when(value: Any) -> str:
    """A timestamp (ISO text or epoch seconds) as ``YYYY-MM-DD HH:MM:SS``; anything else as empty."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(value).replace("T", " ")[:19] if isinstance(value, str) else ""


def sweep_dates(sweep: Sweep) -> tuple[str, str]:
    """(started, last update): status.json's ``started`` / ``updated`` (the runner's), else file modification times."""
    status = sweep.folder.status
    started, updated = _when(status.get("started")), _when(status.get("updated"))
    if not started:
        started = _when((sweep.path / SWEEP_FILE).stat().st_mtime)
    if not updated:
        times = [p.stat().st_mtime for p in (sweep.path / TRIALS_DIR).glob("*/*") if p.is_file()]
        updated = _when(max(times, default=(sweep.path / SWEEP_FILE).stat().st_mtime))
    return started, updated


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _table(frame: pd.DataFrame) -> str:
    """A DataFrame whose cells are already HTML-escaped (``display_*(..., "html")``)."""
    if frame.empty:
        return "<p><em>none</em></p>"
    return '<div class="scroll">' + frame.to_html(index=False, escape=False, border=0, na_rep="") + "</div>"


def _figure(fig: Figure) -> str:
    if fig.png is None:
        return f'<h3>{html.escape(fig.title)}</h3><p class="note">Not drawn: {html.escape(fig.skipped)}.</p>'
    data = base64.b64encode(fig.png).decode("ascii")
    return (f'<figure id="{html.escape(fig.filename)}"><h3>{html.escape(fig.title)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(fig.title)}">'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")


def _percent(value: float) -> str:
    return fmt_value(None) if pd.isna(value) else f"{100 * value:.2f}%"


def _best_block(sweep: Sweep) -> str:
    """The best trial (the folder's ranking rule: the one `pielab status` names), its epoch by the sweep's metric."""
    ranked = sweep.finished()
    if ranked.empty:
        return "<p><em>No finished trial yet.</em></p>"
    best = ranked.iloc[0]
    items = {
        "trial": f"{best['trial_id']} ({best['state']})",
        "model": f"{best['model']}" + (f", depth {fmt_value(best['depth'])}" if not pd.isna(best["depth"]) else "")
        + f", residual {fmt_value(best['residual'])}",
        **{key: fmt_value(best[key]) for key in sweep.hparams},
        "seed": fmt_value(best["seed"]),
        f"best {sweep.metric}": f"{fmt_value(best['score'])} at epoch {fmt_value(best['best_epoch'])} "
                                f"of {fmt_value(best['epochs'])} ({sweep.mode})",
        "test acc": f"{_percent(best['test_acc'])} ({test_acc_note(best['best_epoch'], best['test_epoch'])})",
    }
    if sweep.metric != "val/acc":
        items["best val acc"] = f"{_percent(best['best_val_acc'])} (over all epochs)"
    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items.items())
    return f'<dl class="kv">{rows}</dl><p>Export it with <code>pielab export {html.escape(shlex.quote(str(sweep.path)))}</code>.</p>'


def _pareto_block(sweep: Sweep, front: pd.DataFrame) -> list[str]:
    """The Pareto section of a multi-objective sweep: what the front is, and its trials."""
    if not sweep.objectives:
        return []
    goals = ", ".join(f"{m} ({d})" for m, d in sweep.objectives)
    export = html.escape(f"pielab export {shlex.quote(str(sweep.path))} --pareto")
    return [
        "<h2>Pareto front</h2>",
        f"<p>Objectives: <b>{html.escape(goals)}</b>. The Pareto-optimal trials: completed (full-length) trials that "
        "no other completed trial matches or beats in every objective, each value taken at the trial's best epoch "
        f"by {html.escape(sweep.objectives[0][0])}. Early-stopped trials are not on the front (their values are "
        f"measured at fewer epochs). {_plural(len(front), 'trial')}, best {html.escape(sweep.objectives[0][0])} "
        "first; also in <code>pareto.md</code>, <code>pareto.csv</code>, <code>pareto.tex</code>, drawn in "
        f"<code>fig_pareto.png</code>. Export them with <code>{export}</code>.</p>",
        _table(display_plain(front, "html")),
    ]


def render(sweep: Sweep, groups: pd.DataFrame, trials: pd.DataFrame, failed: pd.DataFrame,
           figures: list[Figure], front: pd.DataFrame | None = None) -> str:
    """The whole page as one string; ``front``: the Pareto table of a multi-objective sweep."""
    counts = sweep.trials["state"].value_counts()
    states = [s for s in STATES if s in counts] + [s for s in counts.index if s not in STATES]
    badges = "".join(f'<span class="state">{html.escape(s)}: {int(counts[s])}</span>' for s in states)
    started, updated = sweep_dates(sweep)
    seeds = sweep.spec.get("seeds") or [0]
    model = (sweep.spec.get("base") or {}).get("model", {}) if isinstance(sweep.spec.get("base"), dict) else {}
    model_name = model.get("name", "") if isinstance(model, dict) else str(model)
    esc = html.escape
    finished = int(sweep.trials["state"].isin(FINISHED_STATES).sum())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pielab report: {esc(sweep.name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Sweep {esc(sweep.name)}</h1>",
        f'<p class="meta">task <b>{esc(sweep.task)}</b> · base model <b>{esc(model_name)}</b> · '
        f"selected on <b>{esc(sweep.metric)}</b> ({esc(sweep.mode)}) · seeds {esc(fmt_value(list(seeds)))} · "
        f"started {esc(started)} · last update {esc(updated)}</p>",
        f"<p>{_plural(len(sweep.trials), 'trial')}: {badges}</p>",
        f'<p class="meta">Folder: <code>{esc(str(sweep.path))}</code></p>',
        f'<p class="meta">Provenance: {esc(provenance_line(sweep))}</p>',
    ]
    if sweep.spec.get("description"):
        parts.append(f"<p>{esc(str(sweep.spec['description']))}</p>")
    parts += [f'<p class="note">{esc(note)}</p>' for note in sweep.notes]
    parts += [
        *_pareto_block(sweep, front if front is not None else pd.DataFrame()),
        "<h2>Best trial</h2>" if not sweep.objectives else f"<h2>Best trial by {esc(sweep.metric)}</h2>",
        _best_block(sweep),
        "<h2>Configurations</h2>",
        f"<p>One row per configuration ({_plural(finished, 'finished trial')}; repeats that differ only in "
        "<code>train.seed</code> are one row, mean ± sample sd over them). Best first; ★ and bold mark the best "
        f"full-length configuration of each (model, depth, residual) (its best early-stopped one where none ran "
        f"its full length: Epochs then reads run/full†). A trial's best epoch is its best {esc(sweep.metric)} epoch; "
        "its test accuracy is fit's test/acc there (measured at the best val/acc epoch up to it). "
        "Also in <code>summary.md</code>, <code>summary.csv</code>, <code>summary.tex</code>.</p>",
        _table(display_groups(groups, sweep.hparams, "html", sweep.metric)),
        *([f'<p class="note">{esc(fidelity_note(groups).strip())}</p>'] if fidelity_note(groups) else []),
        *([f"<p>{esc(reference_note(sweep).strip())}</p>"] if reference_note(sweep) else []),
        "<h2>Figures</h2>",
        *(_figure(fig) for fig in figures),
        "<h2>Resources used</h2>",
        "<p>CPU-hours and GPU-hours: the resources Tune reserved for each trial times the wall time the trial "
        "held them, summed over trials (restarts included). Preempted trials lost their node and restarted from "
        "a checkpoint; they are not failures. Also in <code>usage.md</code>.</p>",
        _table(usage_table(sweep).map(html.escape)),
        "<h2>Failed trials</h2>",
        "<p>Failed and diverged trials, excluded from every ranking.</p>",
        _table(display_plain(failed, "html")),
        "<h2>All trials</h2>",
        "<p>Every trial in every state (running ones with their partial metrics). Also in <code>trials.csv</code>.</p>",
        _table(display_plain(trials, "html")),
        f'<p class="meta">Generated by <code>pielab report</code> on '
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
