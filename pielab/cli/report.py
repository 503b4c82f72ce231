"""``pielab report`` and ``pielab export``: what they print around :func:`pielab.report.build_report` and
:func:`pielab.report.export_configs`."""

from __future__ import annotations

import sys

from pielab.report import build_report, export_configs


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"pielab: warning: {line}", file=sys.stderr)


def report_command(sweep_dir: str, out: str | None = None) -> int:
    """``pielab report``: write the report and print where it is."""
    damage: list[str] = []
    paths = build_report(sweep_dir, out, damage=damage)
    _warn(damage)
    html_page = paths["report.html"]
    print(f"Report: {html_page} ({len(paths)} files in {html_page.parent})")
    return 0


def export_command(sweep_dir: str, top: int = 1, out: str | None = None, pareto: bool = False) -> int:
    """``pielab export``: see :func:`export_configs`; prints one line per file written."""
    damage: list[str] = []
    paths = export_configs(sweep_dir, top, out, pareto=pareto, damage=damage)
    _warn(damage)
    if pareto:
        print(f"{len(paths)} Pareto-optimal trial(s)")
    elif len(paths) < top:
        print(f"only {len(paths)} completed trial(s): exported {len(paths)} of {top}")
    for path in paths:
        print(f"Exported: {path}")
    return 0
