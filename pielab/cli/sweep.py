"""``pielab sweep | resume | status | dashboard``: what the command line calls.

What they print is formatted in :mod:`pielab.cli.display`; what they read of a sweep folder is read
through :mod:`pielab.folder`. Each command returns an exit code (the table is in
:mod:`pielab.cli`); bad input raises a :class:`~pielab.errors.PielabError` subclass with one line,
which the CLI prints before exiting 2. Ray and Optuna are imported only by the commands that run
them: ``pielab status`` reads the sweep folder's own files and nothing else.

One driver per folder: ``pielab sweep`` and ``pielab resume`` hold the folder's lease
(:mod:`pielab.folder.lease`) from before they write or load anything there until they exit (normally,
on an error, Ctrl-C or SIGTERM). A driver that loses it (frozen past the TTL while another took over)
stops as on Ctrl-C and exits 2.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pielab.cli.codes import EXIT_FAILED, EXIT_FINISHED, exit_code_for_signal
from pielab.errors import PielabError, SweepCrashed
from pielab.cli.display import (  # noqa: F401  (best_table and LiveStatus: importable from here as before)
    LiveStatus, best_table, best_text, counts_text, failed_line, make_console, pareto_table, pareto_text,
    running_line,
)
from pielab.folder import (
    END_BUDGET, END_CRASHED, END_DIVERGED, END_FAILED, END_FINISHED, END_INTERRUPTED, END_RESOURCE_BUDGET,
    END_TERMINATED, END_USR1,
    RESULTS_FILE, RUNNING, STATUS_FILE, SweepFolder, is_remote, load_records, pareto_records, read_json,
    recorded_slot_seconds, summarize_records,
)
from pielab.folder.damage import engine_damage
from pielab.folder.storage import local_dir
from pielab.text import fmt_duration


def usage_text(usage: dict[str, Any] | None, budget: dict[str, Any] | None = None) -> str:
    """``resources used: 0.0102 CPU-hours, 0 GPU-hours (budget: 0.01 CPU-hours)`` from status.json's
    ``usage`` and ``budget`` (or :meth:`SweepFolder.usage`); the rule is in :mod:`pielab.folder`."""
    usage = usage or {}
    text = (f"resources used: {usage.get('cpu_hours', 0.0):.4g} CPU-hours, {usage.get('gpu_hours', 0.0):.4g} GPU-hours "
            f"({fmt_duration(usage.get('held_s', 0.0))} of trials holding their resources)")
    limits = [f"{v:g} {k.replace('_hours', '').upper()}-hours" for k, v in (budget or {}).items() if v is not None]
    return text + (f"; budget: {', '.join(limits)}" if limits else "")


def preempted_text(summary: dict[str, Any]) -> str:
    """How many trials lost their node and were restarted (counted apart from failed ones)."""
    n, times = int(summary.get("preempted") or 0), int(summary.get("preemptions") or 0)
    return (f"preempted: {n} trial{'s' if n != 1 else ''} restarted from a checkpoint after its node was lost "
            f"({times} time{'s' if times != 1 else ''}; not counted as failures or retries)")


def wandb_sync_hint(sweep_dir) -> str | None:
    """The ``wandb sync`` line for the sweep's offline runs, or None when there are none. The folder is
    shell-quoted and the glob left outside the quotes, so the line pastes into a shell as printed.
    W&B writes locally: a sweep on object storage keeps its runs in ``./SWEEP/wandb`` (storage.local_dir)."""
    sweep_dir = local_dir(sweep_dir)
    if not any((sweep_dir / "wandb").glob("offline-run-*")):
        return None
    return f"upload the offline W&B runs later with: wandb sync {shlex.quote(str(sweep_dir / 'wandb'))}/offline-run-*"


# --------------------------------------------------------------------------- sweep folders


# status.json ``end`` (pielab.folder.layout) -> the closing line's verb and the exit code (pielab.cli.codes)
_STOPPED_BY = {END_INTERRUPTED: ("interrupted (Ctrl-C)", "SIGINT"), END_TERMINATED: ("terminated (SIGTERM)", "SIGTERM"),
               END_USR1: ("stopped by SIGUSR1", "SIGUSR1")}


def _finish_report(console, outcome, spec, lost: Exception | None = None) -> int:
    status = outcome.status
    records = outcome.records
    console.print()
    if records:
        console.print(best_table(records, spec.metric, spec.mode, title=f"best trials of {spec.name}"))
        if spec.multi_objective:
            console.print(pareto_text(pareto_records(records, spec.objectives), records, spec.objectives))
    counts = status.get("counts", {})
    elapsed = status.get("elapsed_s")
    finished = bool(status.get("finished"))
    end = status.get("end") or (END_FINISHED if finished else END_INTERRUPTED)
    console.print(f"{len(records)} trials: {counts_text(counts, running_label=None if finished else 'interrupted')}"
                  f" in {fmt_duration(elapsed)}"
                  + (f" (efficiency {status['efficiency']:.0%})" if status.get("efficiency") else ""))
    console.print(usage_text(status.get("usage"), status.get("budget")))
    if status.get("preempted"):
        console.print(preempted_text(status))
    sync = wandb_sync_hint(outcome.sweep_dir)
    if sync:
        console.print(sync)
    console.print(f"sweep folder: {outcome.sweep_dir}")
    if lost is not None:  # another driver took the folder over: exit 2 with its line
        raise lost
    if end in _STOPPED_BY:
        what, signame = _STOPPED_BY[end]
        console.print(f"the sweep was {what} before it finished; its state is saved; "
                      f"continue it with: pielab resume {shlex.quote(str(outcome.sweep_dir))}")
        return exit_code_for_signal(getattr(signal, signame, signal.SIGINT))
    if status.get("stop_reason"):
        console.print(f"the sweep failed: it stopped early: {status['stop_reason']}")
        return EXIT_FAILED
    if records and all(r.state in (END_FAILED, END_DIVERGED) for r in records.values()):
        first = next(iter(records.values()))
        console.print(f"the sweep failed: every trial failed; the first one: {first.reason}")
        return EXIT_FAILED
    if end == END_RESOURCE_BUDGET:
        console.print(f"the sweep finished: its budget was reached: {status.get('budget_reason') or 'resource budget'}")
        return EXIT_FINISHED
    if end == END_BUDGET:
        console.print(f"the sweep finished: its time budget of {fmt_duration(spec.time_budget_s)} was reached")
        return EXIT_FINISHED
    if finished:
        console.print("the sweep finished: every trial ran")
        return EXIT_FINISHED
    console.print(f"the sweep stopped before it finished; continue it with: pielab resume {shlex.quote(str(outcome.sweep_dir))}")
    return EXIT_FAILED


# --------------------------------------------------------------------------- commands


def _live(console):
    """The command's live view of a running sweep, for :mod:`pielab.sweep.driver`."""
    return lambda spec: LiveStatus(console, spec.name, spec.metric)


def sweep_command(spec_path: str, overrides: list[str], out: str | None, address: str | None, *,
                  resume_if_exists: bool = False, warm_from: str | None = None) -> int:
    """``pielab sweep SPEC [--set k=v]... [--out DIR] [--address ADDR] [--resume-if-exists] [--from OLD]``:
    :func:`pielab.sweep.driver.start` (which raises on bad input), then the closing report and the exit code.

    With ``resume_if_exists`` and a sweep already in ``out``: the same spec (after ``--set``)
    continues it as ``pielab resume`` does (a finished one reports so, exit 0); a different spec
    raises :class:`~pielab.folder.started_spec.SpecChanged` naming the changed fields.
    ``warm_from``: an earlier sweep folder whose finished trials the new study receives first
    (:func:`pielab.sweep.search.warm_start`); checked before the new folder is made.
    """
    from pielab.sweep import driver

    console = make_console()
    try:
        driven = driver.start(spec_path, overrides, out, address, console=console, display=_live(console),
                              resume_if_exists=resume_if_exists, warm_from=warm_from)
    except SweepCrashed as exc:
        return _driver_failed(exc)
    return _finish(console, driven)


def resume_command(sweep_dir: str, *, overrides: list[str] | None = None) -> int:
    """``pielab resume SWEEP_DIR [--set k=v]...``: :func:`pielab.sweep.driver.resume` (continue an interrupted
    sweep, or one finished with ``--set num_trials=N`` ...), then the closing report and the exit code."""
    from pielab.sweep import driver

    console = make_console()
    try:
        driven = driver.resume(sweep_dir, console=console, display=_live(console), overrides=overrides)
    except SweepCrashed as exc:
        return _driver_failed(exc)
    return _finish(console, driven)


def _finish(console, driven) -> int:
    if driven.outcome is None:  # resume of a finished sweep: nothing ran
        status = read_json(driven.sweep_dir / STATUS_FILE) or {}
        counts = summarize_records(load_records(driven.sweep_dir), status.get("mode", "max"))["counts"]
        how = driven.already if driven.already != END_FINISHED else "every trial ran"
        console.print(f"sweep {driven.sweep_dir} already finished ({how}; {counts_text(counts, running_label=None)}); "
                      "nothing to resume")
        return EXIT_FINISHED if driven.already != "failed" else EXIT_FAILED
    return _finish_report(console, driven.outcome, driven.spec, driven.lost)


def _driver_failed(crash: SweepCrashed) -> int:
    """The driver's loop raised after the sweep started: the traceback (what a bug report needs), then one
    line saying that the state is saved and how to continue; exit 1. The runner has marked the sweep
    crashed in status.json, so `pielab status` shows it interrupted and `pielab resume` continues it.
    A full disk is not a bug: one line naming the disk and its free space, no traceback."""
    import traceback

    from pielab.files import disk_full, free_space

    folder, error = crash.sweep_dir, crash.__cause__
    if disk_full(error):
        where = folder if is_remote(folder) else Path(folder)
        free = "" if is_remote(folder) else f" ({free_space(where)})"
        print(f"pielab: error: no space left on the disk of {folder}{free}: the sweep stopped, each trial's last "
              f"checkpoint is kept; free space, or copy the folder to a larger disk, then: "
              f"pielab resume {shlex.quote(str(folder))}", file=sys.stderr)
        return EXIT_FAILED
    traceback.print_exception(error)
    print(f"pielab: the sweep stopped on an error in its driver; its state is saved; continue it with: "
          f"pielab resume {shlex.quote(str(folder))}", file=sys.stderr)
    return EXIT_FAILED


def status_command(sweep_dir: str) -> int:
    """``pielab status SWEEP_DIR``: trials by state, best so far, time used (during or after a sweep).

    Reads the folder through :class:`~pielab.folder.SweepFolder`: the records (rewritten at every
    epoch, so the live truth) and the ranking rule that ``pielab report`` uses.
    """
    folder = SweepFolder.open(sweep_dir)
    status, spec_raw = folder.status, folder.spec
    metric, mode = folder.metric, folder.mode
    records = folder.records()
    engine = engine_damage(folder.path)
    objectives = folder.objectives
    summary = summarize_records(records, mode, objectives)
    num_trials = status.get("num_trials") or spec_raw.get("num_trials") or len(records)
    finished = bool(status.get("finished"))
    left_out = sorted({d.trial_id for d in folder.damage if d.trial_id})  # trials whose files are damaged
    pending = 0 if finished else max(0, int(num_trials) - len(records) - len(left_out))

    # Who drives it now: the lease (any host), not a pid, which only this host could check.
    holder = folder.driver()
    word = folder.state(records, holder)
    alive = word == "running"
    if word == "finished":
        end = status.get("end")
        state = "finished" + (f" ({end})" if end and end != END_FINISHED else "")
    elif alive:
        state = f"running on host {holder.host} (pid {holder.pid}, lease renewed {max(0.0, holder.age()):.0f} s ago)"
    elif word == "interrupted":
        how = {END_TERMINATED: " by SIGTERM", END_USR1: " by SIGUSR1"}.get(status.get("end") or "", "")
        if status.get("end") == END_CRASHED:
            how = f" by an error in the driver ({status.get('crash') or 'no message'})"
        state = (f"interrupted{how}: continue with `pielab resume {shlex.quote(str(folder.path))}`" if not engine
                 else f"interrupted{how}; it cannot be resumed: {engine[0].path} is damaged ({engine[0].why})")
    else:
        state = "not started"
    console = make_console()
    console.print(f"sweep {folder.name} ({folder.path}): {state}")
    if not alive:
        from pielab.sweep.driver import end_leftovers  # Ray-free: the leftovers are found by their environment

        end_leftovers(folder.path, console)
    for damaged in [*folder.damage, *engine]:
        console.print(damaged.line(), style="yellow", markup=False, highlight=False)
    elapsed = status.get("elapsed_s")
    slots = status.get("slots") or spec_raw.get("max_concurrent") or 1
    slot_s = recorded_slot_seconds(status, slots)
    if alive and not finished and status.get("updated"):
        try:
            from datetime import datetime

            since = max(0.0, time.time() - datetime.fromisoformat(status["updated"]).timestamp())
            elapsed, slot_s = float(elapsed or 0) + since, slot_s + since * slots
        except (TypeError, ValueError):
            pass
    eff = summary["trial_time_s"] / slot_s if slot_s else None
    running_label = "running" if alive else "interrupted"
    console.print(f"{num_trials} trials: {counts_text(summary['counts'], pending, None if finished else running_label)}"
                  + (f" · {len(left_out)} left out (damaged)" if left_out else ""))
    console.print(f"time used: {fmt_duration(elapsed)} wall, {fmt_duration(summary['trial_time_s'])} of training "
                  f"in {slots} slots" + (f" (efficiency {eff:.0%})" if eff else ""))
    budget = spec_raw.get("budget") if isinstance(spec_raw.get("budget"), dict) else None
    console.print(usage_text(folder.usage(records), budget))
    if finished and status.get("budget_reason"):
        console.print(f"ended: {status['budget_reason']}")
    if summary.get("preempted"):
        console.print(preempted_text(summary))
    console.print(best_text(summary["best"], metric)
                  + (f" (among the readable trials: {', '.join(left_out)} left out)" if left_out else ""))
    if alive:
        for rec in records.values():
            if rec.state == RUNNING:
                console.print(running_line(rec, metric))
    if objectives:
        front = folder.pareto(records)
        console.print(pareto_text(front, records, objectives))
        if front:
            console.print(pareto_table(front, objectives, title="Pareto-optimal trials"))
    if records:
        console.print(best_table(records, metric, mode, top=10, title=f"best trials by {metric}" if objectives
                                 else "best trials"))
    failed = [r for r in records.values() if r.state in (END_FAILED, END_DIVERGED)]
    for rec in failed[:5]:
        console.print(failed_line(rec))
    if (folder.path / RESULTS_FILE).exists():
        console.print(f"per-trial table: {folder.path / RESULTS_FILE}")
    return 0


def dashboard_command(sweep_dir: str, host: str, port: int) -> int:
    """``pielab dashboard SWEEP_DIR``: optuna-dashboard for the sweep's study, on 127.0.0.1 by default."""
    sweep = SweepFolder.open(sweep_dir)
    folder = sweep.path
    url = sweep.study_url(must_exist=True)
    try:
        import optuna_dashboard
    except ImportError:
        raise PielabError("optuna-dashboard is not installed: pip install optuna-dashboard") from None
    print(f"optuna-dashboard for {folder} at http://{host}:{port}/ (Ctrl-C stops it)", file=sys.stderr)
    try:
        optuna_dashboard.run_server(url, host=host, port=int(port))
    except OSError as exc:
        raise PielabError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        pass
    return 0
