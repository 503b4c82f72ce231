"""What the sweep commands show on a terminal: status lines, the best-trials table and the live view.

Values go through :func:`pielab.text.fmt_value` and :func:`pielab.text.fmt_duration` (booleans read
``yes``/``no``, as in the report); the best trial, its epoch and its test accuracy follow
:mod:`pielab.folder`'s rules, so these lines name the trial that ``pielab report`` names.
Imports neither Ray nor Optuna; ``rich`` is imported where a console or a table is made.
"""

from __future__ import annotations

import threading
from typing import Any

from pielab.folder import (
    END_COMPLETED, END_DIVERGED, END_EARLY, END_FAILED, RUNNING, STATE_LABELS, TrialRecord, rank_records,
    test_acc_note,
)
from pielab.text import fmt_duration, fmt_value


def make_console():
    """A rich Console: the terminal's width on a terminal; wide, unwrapped lines in logs and pipes."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 200), soft_wrap=True)
    return console


def params_text(params: dict[str, Any]) -> str:
    """``{"train.lr": 0.001, "model.residual": True}`` -> ``train.lr=0.001  model.residual=yes``."""
    return "  ".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def counts_text(counts: dict[str, int], pending: int | None = None, running_label: str | None = "running",
                time_left: float | None = None) -> str:
    """Trials by state on one line (``1 running · 3 done · 2 stopped early · 4 to go``).

    ``running_label=None``: a finished sweep, whose running count (always 0) is left out; so is
    ``pending`` then (the caller passes 0: nothing is to go once a sweep has finished)."""
    labels = {**STATE_LABELS, RUNNING: running_label or "running"}
    shown = (END_COMPLETED, END_EARLY) if running_label is None else (RUNNING, END_COMPLETED, END_EARLY)
    parts = [f"{counts.get(s, 0)} {labels[s]}" for s in (RUNNING, END_COMPLETED, END_EARLY, END_FAILED, END_DIVERGED)
             if counts.get(s, 0) or s in shown]
    if time_left is not None:
        parts.append(f"{fmt_duration(time_left)} of the time budget left")  # the budget, not the count, ends it
    elif pending:
        parts.append(f"{pending} to go")
    return " · ".join(parts)


def best_text(best: dict[str, Any] | None, metric: str) -> str:
    """The best-trial line from ``summarize_records(...)["best"]`` (status.json's ``best``)."""
    if not best:
        return "best so far: -"
    note = test_acc_note(best.get("epoch"), best.get("test_epoch"))
    test = fmt_value(best.get("test_acc")) + ("" if note == "at the best epoch" else f" {note}")
    return (f"best so far: {metric} {fmt_value(best.get('value'))} (trial {best['trial_id']}, "
            f"epoch {fmt_value(best.get('epoch'))}, test acc {test})  {params_text(best.get('params') or {})}")


def best_table(records: dict[str, TrialRecord], metric: str, mode: str, top: int = 5, title: str | None = None):
    """A rich table of the ``top`` ranked trials (the folder's ranking rule), best first."""
    from rich.table import Table

    ranked = rank_records(records, mode)[:top]
    param_keys: list[str] = []
    for rec in ranked:
        param_keys += [k for k in rec.params if k not in param_keys]
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col in ("#", "trial", "state", metric, "epoch", "test acc", "epochs", "time"):
        table.add_column(col, justify="right" if col not in ("trial", "state") else "left")
    for key in param_keys:
        table.add_column(key, justify="right")
    for i, rec in enumerate(ranked, 1):
        test = fmt_value(rec.test_acc)
        if test_acc_note(rec.best_epoch, rec.test_epoch) != "at the best epoch":
            test += f" (epoch {rec.test_epoch})"
        table.add_row(str(i), rec.trial_id, STATE_LABELS.get(rec.state, rec.state), fmt_value(rec.best_value),
                      fmt_value(rec.best_epoch), test, f"{rec.epochs}/{rec.planned_epochs or '?'}",
                      fmt_duration(rec.train_time_s), *(fmt_value(rec.params.get(k)) for k in param_keys))
    return table


def pareto_text(front: list[TrialRecord], records: dict[str, TrialRecord], objectives: list[tuple[str, str]]) -> str:
    """The Pareto front's size in one line (``Pareto front: 3 of 7 completed trials (val/acc max, model/params min)``)."""
    completed = sum(1 for r in records.values() if r.state == END_COMPLETED)
    goals = ", ".join(f"{m} {d}" for m, d in objectives)
    return f"Pareto front: {len(front)} of {completed} completed trial{'' if completed == 1 else 's'} ({goals})"


def pareto_table(front: list[TrialRecord], objectives: list[tuple[str, str]], title: str | None = None):
    """A rich table of the Pareto trials (:func:`pielab.folder.pareto_records` order): each objective's value."""
    from rich.table import Table

    param_keys: list[str] = []
    for rec in front:
        param_keys += [k for k in rec.params if k not in param_keys]
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col in ("trial", *(m for m, _ in objectives), "epoch", "test acc", *param_keys):
        table.add_column(col, justify="left" if col == "trial" else "right")
    for rec in front:
        values = rec.objectives or {}
        table.add_row(rec.trial_id, *(fmt_value(values.get(m)) for m, _ in objectives), fmt_value(rec.best_epoch),
                      fmt_value(rec.test_acc), *(fmt_value(rec.params.get(k)) for k in param_keys))
    return table


def running_line(rec: TrialRecord, metric: str) -> str:
    """One running trial: its epoch and its best ``metric`` so far (running trials are not ranked)."""
    return f"  running {rec.trial_id}: epoch {rec.epochs}/{rec.planned_epochs}, {metric} {fmt_value(rec.best_value)}"


def failed_line(rec: TrialRecord) -> str:
    return f"  {STATE_LABELS.get(rec.state, rec.state)} {rec.trial_id}: {fmt_value(rec.reason)}"


class LiveStatus:
    """The terminal view of a running sweep: one compact panel, not Tune's trial table.

    On a terminal it is a rich ``Live`` display refreshed twice a second from the recorder's state;
    elsewhere (CI logs, a pipe) it prints one line per finished trial. The recorder calls
    :meth:`start`, :meth:`trial_ended` and :meth:`stop` through :class:`DisplayHook`;
    ``recorder.status()`` is status.json's dict.
    """

    def __init__(self, console, name: str, metric: str) -> None:
        self.console = console
        self.name = name
        self.metric = metric
        self._live = None
        self._recorder = None
        self._lock = threading.Lock()

    def start(self, recorder) -> None:
        self._recorder = recorder
        if self.console.is_terminal and self._live is None:
            from rich.live import Live

            self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2,
                              transient=False, redirect_stderr=True, redirect_stdout=True)
            self._live.start()

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        rec = self._recorder
        if rec is None:
            return Text("")
        try:
            status = rec.status()
        except Exception:  # the recorder is being updated on the other thread; next refresh will do
            return Text(f"sweep {self.name}")
        lines = [
            Text(f"sweep {self.name} · {fmt_duration(status['elapsed_s'])} · {status['num_trials']} trials: "
                 f"{counts_text(status['counts'], status['pending'], time_left=status.get('time_left_s'))}",
                 style="bold"),
            Text(best_text(status.get("best"), self.metric)),
        ]
        for tid, info in sorted(status.get("running", {}).items()):
            lines.append(Text(f"  {tid}  epoch {info['epoch']}/{info['planned_epochs']}  "
                              f"{self.metric} {fmt_value(info['best_value'])}", style="dim"))
        return Group(*lines)

    def trial_ended(self, recorder, rec: TrialRecord) -> None:
        if self._live is not None:
            return
        status = recorder.status()
        reason = f" ({rec.reason})" if rec.reason and rec.state != END_COMPLETED else ""
        with self._lock:
            self.console.print(
                f"trial {rec.trial_id} {STATE_LABELS.get(rec.state, rec.state)}{reason}: {self.metric} "
                f"{fmt_value(rec.best_value)} after {rec.epochs} epochs  "
                f"[{counts_text(status['counts'], status['pending'], time_left=status.get('time_left_s'))}]"
            )

    def warn(self, line: str) -> None:
        """One warning line, printed above the live view (or in the log), never swallowed by it."""
        with self._lock:
            self.console.print(line, style="yellow", markup=False, highlight=False)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
