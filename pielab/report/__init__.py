"""Tables, figures, one HTML page and exported configs from a sweep folder (``pielab report`` / ``pielab export``).

It reads only the sweep folder's stable format through :mod:`pielab.folder` (never Ray's
internals), so a report can be made from a sweep that is still running, was interrupted, or was copied
off the cluster; the best trial it names is the one ``pielab status`` names.

The modules import each other in a line: :mod:`.tables` (the data and the tables) <- :mod:`.figures`
<- :mod:`.page` (the HTML page); :mod:`.export` uses only :mod:`.tables`; this module ties them
together. Optuna is imported lazily and only for the importance figure.
"""

from __future__ import annotations

from pathlib import Path

from pielab.files import write_atomic
from pielab.folder.storage import local_dir
from pielab.report.export import export_configs, export_paths
from pielab.report.tables import (
    Sweep, _escape_md, display_groups, display_plain, failed_table, fidelity_note, group_table, load_sweep, pareto_table,
    provenance_line, reference_note, to_latex, to_markdown, trial_table, usage_table,
)

__all__ = ["Sweep", "build_report", "export_configs", "export_paths", "load_sweep"]


def build_report(sweep_dir: str | Path, out: str | Path | None = None,
                 damage: list[str] | None = None) -> dict[str, Path]:
    """Render every table, figure and the HTML page of a sweep into ``out`` (default SWEEP_DIR/report;
    for a sweep on object storage, ``./SWEEP/report``: reports are always written locally).

    Returns {output name: path}. Everything is rendered in memory first, then written file by file
    atomically, so a failure leaves the previous report untouched.

    ``damage``: a list that receives one line per damaged file of the folder (:mod:`pielab.folder.damage`;
    the report's page lists them too).

    Raises:
        PielabError: not a sweep folder, or one without trials yet (one line).
    """
    # matplotlib loads here, not at import: `pielab export` needs none of it.
    from pielab.report import figures, page

    sweep = load_sweep(sweep_dir)
    if damage is not None:
        damage.extend(sweep.folder.damage_lines())
    out_dir = Path(out) if out is not None else local_dir(sweep.path) / "report"
    groups, trials, failed = group_table(sweep), trial_table(sweep), failed_table(sweep)
    if groups.empty:
        sweep.notes.append("no finished trials yet: the summary table and the figures are empty")

    caption = f"Sweep {sweep.name}: best {sweep.metric} per configuration (mean ± sd over seeds), best first"
    files: dict[str, bytes | str] = {
        "summary.csv": groups.to_csv(index=False),
        "summary.md": to_markdown(display_groups(groups, sweep.hparams, "md", sweep.metric))
        + f"\n{_escape_md(fidelity_note(groups))}{_escape_md(reference_note(sweep))}{_escape_md(provenance_line(sweep))}\n",
        "summary.tex": to_latex(display_groups(groups, sweep.hparams, "tex", sweep.metric),
                                caption + (r"; $^\dagger$ stopped early: epochs run / full length"
                                           if fidelity_note(groups) else ""), f"tab:{sweep.name}-summary"),
        "trials.csv": trials.to_csv(index=False),
        "failed.csv": failed.to_csv(index=False),
        "failed.md": to_markdown(display_plain(failed, "md")),
        "usage.md": to_markdown(usage_table(sweep)),  # CPU-/GPU-hours, preempted trials
    }
    front = pareto_table(sweep)
    if sweep.objectives:  # a multi-objective sweep: its Pareto-optimal trials (pielab.folder's front)
        goals = ", ".join(f"{m} ({d})" for m, d in sweep.objectives)
        files.update({
            "pareto.csv": front.to_csv(index=False),
            "pareto.md": to_markdown(display_plain(front, "md")),
            "pareto.tex": to_latex(display_plain(front, "tex"),
                                   f"Sweep {sweep.name}: Pareto-optimal trials over {goals}, completed trials only",
                                   f"tab:{sweep.name}-pareto"),
        })
    rendered = figures.make_figures(sweep, groups)  # a skipped figure's reason is shown in its place
    files.update({fig.filename: fig.png for fig in rendered if fig.png is not None})
    files["report.html"] = page.render(sweep, groups, trials, failed, rendered, front)
    paths = {name: out_dir / name for name in files}
    for name, data in files.items():
        write_atomic(paths[name], data)
    return paths
