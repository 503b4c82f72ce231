"""``pielab sweep | resume | status | dashboard``: what the command line calls.

Each command returns an exit code; bad input raises a :class:`~pielab.errors.PielabError` subclass
with one line, which the CLI prints before exiting 2. Ray and Optuna are imported only by the
commands that run them: ``pielab status`` reads the sweep folder's own files and nothing else.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from pielab.errors import ConfigError, PielabError
from pielab.sweep.folder import (
    END_COMPLETED, END_DIVERGED, END_EARLY, END_FAILED, OPTUNA_DB, RESULTS_FILE, RUNNING, STATE_LABELS,
    STATUS_FILE, SWEEP_FILE, TUNE_DIR, TrialRecord, load_records, rank_records, read_json,
    summarize_records, write_atomic,
)

WANDB_SYNC_HINT = "upload the offline W&B runs later with: wandb sync {sweep}/wandb/offline-run-*"


# --------------------------------------------------------------------------- formatting


def _console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # logs and pipes: full lines, wide tables
        console = Console(highlight=False, width=max(console.width, 200), soft_wrap=True)
    return console


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _params_text(params: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _counts_text(counts: dict[str, int], pending: int | None = None, running_label: str = "running",
                 time_left: float | None = None) -> str:
    labels = {**STATE_LABELS, RUNNING: running_label}
    parts = [f"{counts.get(s, 0)} {labels[s]}" for s in (RUNNING, END_COMPLETED, END_EARLY, END_FAILED, END_DIVERGED)
             if counts.get(s, 0) or s in (RUNNING, END_COMPLETED, END_EARLY)]
    if time_left is not None:
        parts.append(f"{_duration(time_left)} of the time budget left")  # the budget, not the count, ends it
    elif pending:
        parts.append(f"{pending} to go")
    return " · ".join(parts)


def _best_text(best: dict[str, Any] | None, metric: str) -> str:
    if not best:
        return "best so far: -"
    return (f"best so far: {metric} {_fmt(best.get('value'))} (trial {best['trial_id']}, epoch {_fmt(best.get('epoch'))}, "
            f"test acc {_fmt(best.get('test_acc'))})  {_params_text(best.get('params') or {})}")


def best_table(records: dict[str, TrialRecord], metric: str, mode: str, top: int = 5, title: str | None = None):
    """A rich table of the ``top`` trials by the sweep metric."""
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
        table.add_row(str(i), rec.trial_id, STATE_LABELS.get(rec.state, rec.state), _fmt(rec.best_value),
                      _fmt(rec.best_epoch), _fmt(rec.test_acc), f"{rec.epochs}/{rec.planned_epochs or '?'}",
                      _duration(rec.train_time_s), *(_fmt(rec.params.get(k)) for k in param_keys))
    return table


class LiveStatus:
    """The terminal view of a running sweep: one compact panel, not Tune's trial table.

    On a terminal it is a rich ``Live`` display refreshed twice a second from the recorder's state;
    elsewhere (CI logs, a pipe) it prints one line per finished trial.
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
            Text(f"sweep {self.name} · {_duration(status['elapsed_s'])} · {status['num_trials']} trials: "
                 f"{_counts_text(status['counts'], status['pending'], time_left=status.get('time_left_s'))}",
                 style="bold"),
            Text(_best_text(status.get("best"), self.metric)),
        ]
        for tid, info in sorted(status.get("running", {}).items()):
            lines.append(Text(f"  {tid}  epoch {info['epoch']}/{info['planned_epochs']}  "
                              f"{self.metric} {_fmt(info['best_value'])}", style="dim"))
        return Group(*lines)

    def trial_ended(self, recorder, rec: TrialRecord) -> None:
        if self._live is not None:
            return
        status = recorder.status()
        reason = f" ({rec.reason})" if rec.reason and rec.state != END_COMPLETED else ""
        with self._lock:
            self.console.print(
                f"trial {rec.trial_id} {STATE_LABELS.get(rec.state, rec.state)}{reason}: {self.metric} "
                f"{_fmt(rec.best_value)} after {rec.epochs} epochs  "
                f"[{_counts_text(status['counts'], status['pending'], time_left=status.get('time_left_s'))}]"
            )

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


# --------------------------------------------------------------------------- sweep folders


def _new_sweep_dir(spec, out: str | None) -> Path:
    if out:
        folder = Path(out).expanduser()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            hint = f"continue it with `pielab resume {folder}`" if (folder / SWEEP_FILE).exists() else "it is not empty"
            raise ConfigError(f"--out {folder}: already exists ({hint}); choose another --out")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(spec.storage.path).expanduser() / f"{spec.name}-{stamp}"
        n = 2
        while folder.exists():
            folder = Path(spec.storage.path).expanduser() / f"{spec.name}-{stamp}-{n}"
            n += 1
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the sweep folder {folder}: {exc.strerror or exc}") from None
    return folder.resolve()


def _sweep_folder(sweep_dir: str) -> Path:
    folder = Path(sweep_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such sweep folder")
    if not (folder / SWEEP_FILE).is_file():
        raise ConfigError(f"{folder}: not a sweep folder (no {SWEEP_FILE}); `pielab sweep SPEC --out DIR` makes one")
    return folder.resolve()


def _load_saved_spec(folder: Path):
    from pielab.config import load_yaml
    from pielab.sweep.spec import SweepSpec

    raw, lines = load_yaml(folder / SWEEP_FILE)
    return SweepSpec.from_dict(raw, source=str(folder / SWEEP_FILE), lines=lines, base_dir=folder)


def _finish_report(console, outcome, spec) -> int:
    status = outcome.status
    records = outcome.records
    console.print()
    if records:
        console.print(best_table(records, spec.metric, spec.mode, title=f"best trials of {spec.name}"))
    counts = status.get("counts", {})
    elapsed = status.get("elapsed_s")
    finished = bool(status.get("finished"))
    console.print(f"{len(records)} trials: {_counts_text(counts, running_label='running' if finished else 'interrupted')}"
                  f" in {_duration(elapsed)}"
                  + (f" (efficiency {status['efficiency']:.0%})" if status.get("efficiency") else ""))
    if not finished:
        console.print(f"the sweep stopped before it finished; continue it with: pielab resume {outcome.sweep_dir}")
    if status.get("wandb") == "offline":
        console.print(WANDB_SYNC_HINT.format(sweep=outcome.sweep_dir))
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


def _load_while_ray_starts(load, address: str | None):
    """``load()`` (the spec: it imports torch and the models, seconds) on a thread while Ray starts.

    Ray must start on the main thread (it ties its processes to the starting thread), so the spec
    loads beside it. Returns ``(spec, owns_ray)``; a bad spec still raises its own one-line error.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["spec"] = load()
        except BaseException as exc:  # re-raised on the main thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="pielab-load-spec", daemon=True)
    thread.start()
    from pielab.sweep import runner

    try:
        owns_ray = runner.start_ray(address)
    except BaseException:
        thread.join()
        if "error" in box:
            raise box["error"] from None
        raise
    thread.join()
    if "error" in box:
        if owns_ray:
            import ray

            ray.shutdown()
        raise box["error"]
    return box["spec"], owns_ray


def sweep_command(spec_path: str, overrides: list[str], out: str | None, address: str | None) -> int:
    """``pielab sweep SPEC [--set k=v]... [--out DIR] [--address ADDR]``."""
    t0 = time.time()
    from pielab.sweep.spec import load_spec

    if not Path(spec_path).is_file():  # the common typo fails before Ray starts
        load_spec(spec_path, overrides or [])
    spec, owns_ray = _load_while_ray_starts(lambda: load_spec(spec_path, overrides or []), address)
    from pielab.sweep.runner import localize_paths, run_sweep

    folder = None
    try:
        localize_paths(spec)  # sweep.yaml then names the data wherever `pielab resume` runs from
        folder = _new_sweep_dir(spec, out)
        write_atomic(folder / SWEEP_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))
        console = _console()
        console.print(spec.describe())
        console.print(f"sweep folder: {folder}")
        display = LiveStatus(console, spec.name, spec.metric)
        outcome = run_sweep(spec, folder, address=address, display=display, started_at=t0, owns_ray=owns_ray)
    except BaseException:
        if owns_ray:
            import ray

            ray.shutdown()
        if folder is not None and folder.is_dir() and {p.name for p in folder.iterdir()} <= {SWEEP_FILE}:
            shutil.rmtree(folder, ignore_errors=True)  # nothing ran: leave no half-made sweep behind
        raise
    return _finish_report(console, outcome, spec)


def resume_command(sweep_dir: str) -> int:
    """``pielab resume SWEEP_DIR``: continue an interrupted sweep (Tune, Optuna and the folder files)."""
    t0 = time.time()
    folder = _sweep_folder(sweep_dir)
    status = read_json(folder / STATUS_FILE) or {}
    console = _console()
    if status.get("finished"):
        counts = summarize_records(load_records(folder), status.get("mode", "max"))["counts"]
        console.print(f"sweep {folder} already finished ({_counts_text(counts)}); nothing to resume")
        return 0
    if not (folder / TUNE_DIR / "tuner.pkl").is_file():
        raise PielabError(
            f"{folder}: no Tune experiment state in {TUNE_DIR}/ (it stopped before its first trial); "
            f"start again with `pielab sweep {folder / SWEEP_FILE}`"
        )
    _refuse_if_running(folder, status)
    address = status.get("address")
    spec, owns_ray = _load_while_ray_starts(lambda: _load_saved_spec(folder), address)
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
    """``pielab status SWEEP_DIR``: trials by state, best so far, time used (during or after a sweep)."""
    folder = _sweep_folder(sweep_dir)
    status = read_json(folder / STATUS_FILE) or {}
    spec_raw = yaml.safe_load((folder / SWEEP_FILE).read_text()) or {}
    metric = status.get("metric") or spec_raw.get("metric", "val/acc")
    mode = status.get("mode") or spec_raw.get("mode", "max")
    records = load_records(folder)  # the live truth: result.json files are rewritten at every epoch
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
        state = f"interrupted: continue with `pielab resume {folder}`" if records or status else "not started"
    console = _console()
    console.print(f"sweep {status.get('name') or spec_raw.get('name')} ({folder}): {state}")
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
    console.print(f"{num_trials} trials: {_counts_text(summary['counts'], pending, running_label)}")
    console.print(f"time used: {_duration(elapsed)} wall, {_duration(summary['trial_time_s'])} of training "
                  f"in {slots} slots" + (f" (efficiency {eff:.0%})" if eff else ""))
    console.print(_best_text(summary["best"], metric))
    running = [r for r in records.values() if r.state == RUNNING]
    if alive is not False:
        for rec in running:
            console.print(f"  running {rec.trial_id}: epoch {rec.epochs}/{rec.planned_epochs}, {metric} {_fmt(rec.best_value)}")
    if records:
        console.print(best_table(records, metric, mode, top=10, title="best trials"))
    failed = [r for r in records.values() if r.state in (END_FAILED, END_DIVERGED)]
    for rec in failed[:5]:
        console.print(f"  {STATE_LABELS[rec.state]} {rec.trial_id}: {rec.reason}")
    if (folder / RESULTS_FILE).exists():
        console.print(f"per-trial table: {folder / RESULTS_FILE}")
    return 0


def dashboard_command(sweep_dir: str, host: str, port: int) -> int:
    """``pielab dashboard SWEEP_DIR``: optuna-dashboard for the sweep's study, on 127.0.0.1 by default."""
    folder = _sweep_folder(sweep_dir)
    spec_raw = yaml.safe_load((folder / SWEEP_FILE).read_text()) or {}
    url = (spec_raw.get("storage") or {}).get("optuna")
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
