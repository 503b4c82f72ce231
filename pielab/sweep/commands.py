"""``pielab sweep | resume | status | dashboard``: what the command line calls.

What they print is formatted in :mod:`pielab.sweep.display`; what they read of a sweep folder is read
through :mod:`pielab.sweep.folder`. Each command returns an exit code; bad input raises a :class:`~pielab.errors.PielabError` subclass
with one line, which the CLI prints before exiting 2. Ray and Optuna are imported only by the
commands that run them: ``pielab status`` reads the sweep folder's own files and nothing else.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pielab.errors import ConfigError, PielabError
from pielab.sweep.display import (  # noqa: F401  (best_table and LiveStatus: importable from here as before)
    LiveStatus, best_table, best_text, counts_text, failed_line, make_console, running_line,
)
from pielab.sweep.folder import (
    END_DIVERGED, END_FAILED, OPTUNA_DB, RESULTS_FILE, RUNNING, STATUS_FILE, SWEEP_FILE, TUNE_DIR, SweepFolder,
    is_remote, load_records, location, read_json, summarize_records, write_atomic,
)
from pielab.sweep.storage import local_dir, remove_tree
from pielab.text import fmt_duration, one_line

WANDB_SYNC_HINT = "upload the offline W&B runs later with: wandb sync {sweep}/wandb/offline-run-*"


# --------------------------------------------------------------------------- sweep folders


def _new_sweep_dir(spec, out: str | None):
    """The new sweep's folder, created: ``--out``, else ``<storage.path>/<name>-TIMESTAMP``; a local
    Path, or an ObjectPath for object storage (``s3://``, ``gs://``; pielab.sweep.storage)."""
    endpoint = spec.storage.endpoint
    try:
        if out:
            folder = location(out, endpoint)
            if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
                hint = f"continue it with `pielab resume {folder}`" if (folder / SWEEP_FILE).exists() else "it is not empty"
                raise ConfigError(f"--out {folder}: already exists ({hint}); choose another --out")
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            parent = location(spec.storage.path, endpoint)
            folder = parent / f"{spec.name}-{stamp}"
            n = 2
            while folder.exists():
                folder = parent / f"{spec.name}-{stamp}-{n}"
                n += 1
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = out or spec.storage.path
        raise ConfigError(f"cannot create the sweep folder in {where}: {exc.strerror or one_line(str(exc), 300)}") from None
    return folder.resolve()


def _sweep_folder(sweep_dir: str) -> Path:
    """The resolved sweep folder; a missing folder or one without sweep.yaml raises (one line)."""
    return SweepFolder.open(sweep_dir).path


def _load_saved_spec(folder: Path):
    from pielab.config import load_yaml
    from pielab.sweep.spec import SweepSpec

    raw, lines = load_yaml(folder / SWEEP_FILE)
    return SweepSpec.from_dict(raw, source=str(folder / SWEEP_FILE), lines=lines,
                               base_dir=None if is_remote(folder) else folder)


def _finish_report(console, outcome, spec) -> int:
    status = outcome.status
    records = outcome.records
    console.print()
    if records:
        console.print(best_table(records, spec.metric, spec.mode, title=f"best trials of {spec.name}"))
    counts = status.get("counts", {})
    elapsed = status.get("elapsed_s")
    finished = bool(status.get("finished"))
    console.print(f"{len(records)} trials: {counts_text(counts, running_label='running' if finished else 'interrupted')}"
                  f" in {fmt_duration(elapsed)}"
                  + (f" (efficiency {status['efficiency']:.0%})" if status.get("efficiency") else ""))
    if not finished:
        console.print(f"the sweep stopped before it finished; continue it with: pielab resume {outcome.sweep_dir}")
    if status.get("wandb") == "offline":
        console.print(WANDB_SYNC_HINT.format(sweep=local_dir(outcome.sweep_dir)))  # W&B writes locally
    console.print(f"sweep folder: {outcome.sweep_dir}")
    if status.get("stop_reason"):
        console.print(f"the sweep stopped early: {status['stop_reason']}")
        return 1
    if records and all(r.state in (END_FAILED, END_DIVERGED) for r in records.values()):
        first = next(iter(records.values()))
        console.print(f"every trial failed; the first one: {first.reason}")
        return 1
    return 0 if finished else 130  # interrupted (Ctrl-C): the shell's code for SIGINT


# --------------------------------------------------------------------------- commands


def _start_ray_for(spec, address: str | None) -> bool:
    """Start (or join) Ray once the spec has loaded and validated: bad input never pays for Ray."""
    from pielab.sweep import runner

    return runner.start_ray(address)


def sweep_command(spec_path: str, overrides: list[str], out: str | None, address: str | None) -> int:
    """``pielab sweep SPEC [--set k=v]... [--out DIR] [--address ADDR]``."""
    t0 = time.time()
    from pielab.sweep.spec import load_spec

    spec = load_spec(spec_path, overrides or [])  # every file it names is validated before Ray starts
    if out:
        from pielab.sweep.spec import storage_problems

        for key, problem in storage_problems(out, spec.storage.optuna, spec.storage.endpoint, key="--out"):
            raise ConfigError(f"{key}: {problem}")
    owns_ray = _start_ray_for(spec, address)
    from pielab.sweep.runner import localize_paths, run_sweep

    folder = None
    try:
        localize_paths(spec)  # sweep.yaml then names the data wherever `pielab resume` runs from
        folder = _new_sweep_dir(spec, out)
        write_atomic(folder / SWEEP_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))
        console = make_console()
        console.print(spec.describe())
        console.print(f"sweep folder: {folder}")
        display = LiveStatus(console, spec.name, spec.metric)
        outcome = run_sweep(spec, folder, address=address, display=display, started_at=t0, owns_ray=owns_ray)
    except BaseException:
        if owns_ray:
            import ray

            ray.shutdown()
        if folder is not None and folder.is_dir() and {p.name for p in folder.iterdir()} <= {SWEEP_FILE}:
            remove_tree(folder)  # nothing ran: leave no half-made sweep behind
        raise
    return _finish_report(console, outcome, spec)


def resume_command(sweep_dir: str) -> int:
    """``pielab resume SWEEP_DIR``: continue an interrupted sweep (Tune, Optuna and the folder files)."""
    t0 = time.time()
    folder = _sweep_folder(sweep_dir)
    status = read_json(folder / STATUS_FILE) or {}
    console = make_console()
    if status.get("finished"):
        counts = summarize_records(load_records(folder), status.get("mode", "max"))["counts"]
        console.print(f"sweep {folder} already finished ({counts_text(counts)}); nothing to resume")
        return 0
    if not (folder / TUNE_DIR / "tuner.pkl").is_file():
        raise PielabError(
            f"{folder}: no Tune experiment state in {TUNE_DIR}/ (it stopped before its first trial); "
            f"start again with `pielab sweep {folder / SWEEP_FILE}`"
        )
    _refuse_if_running(folder, status)
    address = status.get("address")
    spec = _load_saved_spec(folder)
    owns_ray = _start_ray_for(spec, address)
    from pielab.sweep.runner import run_sweep

    console.print(f"resuming sweep {spec.name} in {folder}")
    display = LiveStatus(console, spec.name, spec.metric)
    try:
        outcome = run_sweep(spec, folder, address=address, restore=True, display=display, started_at=t0,
                            owns_ray=owns_ray)
    except BaseException:
        if owns_ray:
            import ray

            ray.shutdown()
        raise
    return _finish_report(console, outcome, spec)


def _driver_alive(status: dict[str, Any]) -> bool | None:
    """Whether the process that writes this sweep is still running (None: on another machine)."""
    driver = status.get("driver") or {}
    if not driver.get("alive"):
        return False
    if driver.get("host") != socket.gethostname() or not driver.get("pid"):
        return None
    try:
        os.kill(int(driver["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse_if_running(folder: Path, status: dict[str, Any]) -> None:
    if _driver_alive(status) and status.get("driver", {}).get("pid") != os.getpid():
        raise PielabError(f"{folder}: the sweep is still running (pid {status['driver']['pid']}); "
                          f"watch it with `pielab status {folder}`")


def status_command(sweep_dir: str) -> int:
    """``pielab status SWEEP_DIR``: trials by state, best so far, time used (during or after a sweep).

    Reads the folder through :class:`~pielab.sweep.folder.SweepFolder`: the records (rewritten at every
    epoch, so the live truth) and the ranking rule that ``pielab report`` uses.
    """
    folder = SweepFolder.open(sweep_dir)
    status, spec_raw = folder.status, folder.spec
    metric, mode = folder.metric, folder.mode
    records = folder.records()
    summary = summarize_records(records, mode)
    num_trials = status.get("num_trials") or spec_raw.get("num_trials") or len(records)
    pending = max(0, int(num_trials) - len(records))

    alive = _driver_alive(status) if status else False
    if status.get("finished"):
        state = "finished"
    elif alive:
        state = "running"
    elif alive is None:
        state = "running on another machine, or interrupted"
    else:
        state = f"interrupted: continue with `pielab resume {folder.path}`" if records or status else "not started"
    console = make_console()
    console.print(f"sweep {folder.name} ({folder.path}): {state}")
    elapsed = status.get("elapsed_s")
    if alive and status.get("updated"):
        try:
            from datetime import datetime

            elapsed = float(elapsed or 0) + max(0.0, time.time() - datetime.fromisoformat(status["updated"]).timestamp())
        except (TypeError, ValueError):
            pass
    slots = status.get("slots") or spec_raw.get("max_concurrent") or 1
    eff = summary["trial_time_s"] / (elapsed * slots) if elapsed else None
    running_label = "running" if alive is not False else "interrupted"
    console.print(f"{num_trials} trials: {counts_text(summary['counts'], pending, running_label)}")
    console.print(f"time used: {fmt_duration(elapsed)} wall, {fmt_duration(summary['trial_time_s'])} of training "
                  f"in {slots} slots" + (f" (efficiency {eff:.0%})" if eff else ""))
    console.print(best_text(summary["best"], metric))
    if alive is not False:
        for rec in records.values():
            if rec.state == RUNNING:
                console.print(running_line(rec, metric))
    if records:
        console.print(best_table(records, metric, mode, top=10, title="best trials"))
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
    storage = sweep.spec.get("storage")
    url = storage.get("optuna") if isinstance(storage, dict) else None
    if not url:
        db = folder / OPTUNA_DB
        if not db.is_file():
            raise PielabError(f"{folder}: no {OPTUNA_DB} yet (the sweep has not asked Optuna for a trial)")
        url = f"sqlite:///{db}"
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
