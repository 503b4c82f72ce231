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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pielab.cli.codes import EXIT_FAILED, EXIT_FINISHED, exit_code_for_signal
from pielab.errors import ConfigError, PielabError
from pielab.cli.display import (  # noqa: F401  (best_table and LiveStatus: importable from here as before)
    LiveStatus, best_table, best_text, counts_text, failed_line, make_console, pareto_table, pareto_text,
    running_line,
)
from pielab.folder import (
    END_BUDGET, END_CRASHED, END_DIVERGED, END_FAILED, END_FINISHED, END_INTERRUPTED, END_RESOURCE_BUDGET,
    END_TERMINATED, END_USR1, OPTUNA_DB, RESULTS_FILE, RUNNING, STARTED_SPEC_FILE, STATUS_FILE, SWEEP_FILE, TUNE_DIR,
    TUNER_FILE, WARM_START_FILE, SweepFolder, is_remote, load_records, location, pareto_records, read_json,
    recorded_slot_seconds, summarize_records, write_atomic,
)
from pielab.folder.damage import SPEC as DAMAGE_SPEC, TRIAL as DAMAGE_TRIAL
from pielab.folder.damage import describe as describe_damage, engine_damage, top_level_damage
from pielab.folder.dblease import lease_for, read_lease_for
from pielab.folder.lease import LEASE_FILE, DriverLease, LeaseHeld
from pielab.folder.started_spec import (
    check_unchanged, describe_changes, read_started_spec, record_started_spec, spec_changes,
)
from pielab.folder.storage import local_dir, remove_tree
from pielab.sweep.signals import interrupt_when, stop_signals_caught
from pielab.text import fmt_duration, one_line
from pielab.yamlfile import dump_yaml

# What `pielab resume SWEEP_DIR --set KEY=VALUE` may change: the sweep continues with the same study.
CONTINUE_KEYS = ("num_trials", "time_budget_s", "max_concurrent")



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


def _is_lease_file(name: str) -> bool:
    return name == LEASE_FILE or name.startswith(f".{LEASE_FILE}.")  # the lease and its temporary files


def _others(folder: Path) -> list[str]:
    """What is in ``folder`` besides lease files (a missing folder: nothing)."""
    try:
        return [p.name for p in folder.iterdir() if not _is_lease_file(p.name)]
    except FileNotFoundError:
        return []


def _refuse_existing(folder: Path) -> None:
    hint = f"continue it with `pielab resume {shlex.quote(str(folder))}`" if (folder / SWEEP_FILE).exists() else "it is not empty"
    raise ConfigError(f"--out {folder}: already exists ({hint}); choose another --out")


def _new_sweep_dir(spec, out: str | None) -> tuple[Path, DriverLease]:
    """Create the sweep folder and take its lease before anything else is written there.

    Of two drivers given the same ``--out`` at once, exactly one gets the lease; the other raises
    :class:`LeaseHeld` (or finds the folder already made) and touches nothing.
    """
    endpoint = spec.storage.endpoint  # a local Path, or an ObjectPath on object storage (pielab.folder.storage)
    try:
        if out:
            folder = location(out, endpoint)
            if folder.exists() and (not folder.is_dir() or _others(folder)):
                _refuse_existing(folder)
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
    folder = folder.resolve()
    lease = lease_for(folder, optuna_url=spec.storage.optuna).acquire()  # object storage: in the study's RDB
    if _others(folder):  # another driver made it and finished between our look and our lease
        lease.release()
        _refuse_existing(folder)
    return folder, lease


@contextmanager
def _holding(lease: DriverLease) -> Iterator[DriverLease]:
    """Hold ``lease`` for the block: a lost lease stops the sweep as Ctrl-C does (Tune saves and stops);
    the lease is released however the block ends."""
    try:
        with interrupt_when(lease.lost):  # SIGINT, handled on the main thread: Tune's graceful stop
            yield lease
    except KeyboardInterrupt:
        if lease.lost.is_set():
            raise _lost(lease) from None
        raise
    finally:
        lease.release()


def _lost(lease: DriverLease) -> LeaseHeld:
    holder = read_lease_for(lease.folder, getattr(lease, "url", None))
    who = f" ({holder.describe()})" if holder is not None else ""
    return LeaseHeld(f"{lease.folder}: another driver took this sweep over{who}; this one stopped "
                     f"(it had not renewed its lease within {lease.ttl_s:g} s)")


def _load_saved_spec(folder: Path):
    from pielab.config import load_yaml
    from pielab.spec.sweep_spec import SweepSpec

    raw, lines = load_yaml(folder / SWEEP_FILE)
    return SweepSpec.from_dict(raw, source=str(folder / SWEEP_FILE), lines=lines,
                               base_dir=None if is_remote(folder) else folder)


# status.json ``end`` (pielab.folder.layout) -> the closing line's verb and the exit code (pielab.cli.codes)
_STOPPED_BY = {END_INTERRUPTED: ("interrupted (Ctrl-C)", "SIGINT"), END_TERMINATED: ("terminated (SIGTERM)", "SIGTERM"),
               END_USR1: ("stopped by SIGUSR1", "SIGUSR1")}


def _finish_report(console, outcome, spec, lease: DriverLease | None = None) -> int:
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
    if lease is not None and lease.lost.is_set():
        raise _lost(lease)
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


def _start_ray_for(spec, address: str | None, folder) -> bool:
    """Start (or join) Ray once the spec has loaded and validated: bad input never pays for Ray. A local Ray's
    processes carry the folder's mark (:mod:`pielab.sweep.leftovers`), so that what a killed driver leaves is
    found and ended by the next resume or status."""
    from pielab.sweep import leftovers, runner

    if not address and not is_remote(folder):
        leftovers.mark(folder)
    return runner.start_ray(address)


def _end_leftovers(folder, console) -> None:
    """End the Ray processes an earlier driver of this (local) folder left behind, and say so."""
    if is_remote(folder):
        return
    from pielab.sweep import leftovers

    ended = leftovers.end(folder)
    if ended:
        console.print(leftovers.describe(ended), markup=False, highlight=False)


def sweep_command(spec_path: str, overrides: list[str], out: str | None, address: str | None, *,
                  resume_if_exists: bool = False, warm_from: str | None = None) -> int:
    """``pielab sweep SPEC [--set k=v]... [--out DIR] [--address ADDR] [--resume-if-exists]``.

    With ``resume_if_exists`` and a sweep already in ``out``: the same spec (after ``--set``)
    continues it as ``pielab resume`` does (a finished one reports so, exit 0); a different spec
    raises :class:`~pielab.folder.started_spec.SpecChanged` naming the changed fields.
    ``warm_from``: an earlier sweep folder whose finished trials the new study receives first
    (:func:`pielab.sweep.search.warm_start`); checked before the new folder is made.
    """
    t0 = time.time()
    from pielab.sweep.session import cluster_address, localize_paths
    from pielab.spec.sweep_spec import load_spec

    address = cluster_address(address)  # a Ray Job's driver has RAY_ADDRESS and no --address

    with stop_signals_caught():
        spec = load_spec(spec_path, overrides or [])  # every file it names is validated before Ray starts
        if out:
            from pielab.spec.sweep_spec import storage_problems

            for key, problem in storage_problems(out, spec.storage.optuna, spec.storage.endpoint, key="--out"):
                raise ConfigError(f"{key}: {problem}")
        localize_paths(spec)  # sweep.yaml then names the data wherever `pielab resume` runs from
        spec_dict = spec.to_dict()
        if resume_if_exists and out and (location(out, spec.storage.endpoint) / SWEEP_FILE).is_file():
            return resume_command(out, started_at=t0, given=(spec, spec_dict, f"--out {location(out)}"))
        source = None
        if warm_from:
            from pielab.sweep.warm import warm_source

            source = warm_source(warm_from, spec)
        folder, lease = _new_sweep_dir(spec, out)
        with _holding(lease):
            return _start_sweep(spec, spec_dict, folder, address, lease, t0, source)


def _start_sweep(spec, spec_dict: dict[str, Any], folder: Path, address: str | None, lease: DriverLease,
                 t0: float, source=None) -> int:
    """Run ``spec`` from its start in ``folder`` (empty but for the held lease); ``source``:
    ``(Optuna study, its SweepFolder)`` whose trials the new study receives first (``--from``)."""
    owns_ray = False
    try:
        write_atomic(folder / SWEEP_FILE, dump_yaml(spec_dict, sort_keys=False))
        record_started_spec(folder, spec_dict)
        console = make_console()
        console.print(spec.describe())
        console.print(f"sweep folder: {folder}")
        if source is not None:
            from pielab.sweep.warm import warm_start_study

            console.print(warm_start_study(spec, folder, *source))
        owns_ray = _start_ray_for(spec, address, folder)
        from pielab.sweep.runner import run_sweep

        display = LiveStatus(console, spec.name, spec.metric)
        outcome = run_sweep(spec, folder, address=address, display=display, started_at=t0, owns_ray=owns_ray)
    except BaseException:
        if owns_ray:
            import ray

            ray.shutdown()
        if not lease.lost.is_set() and set(_others(folder)) <= {SWEEP_FILE, STARTED_SPEC_FILE, WARM_START_FILE,
                                                                OPTUNA_DB}:
            # nothing ran: leave no half-made sweep behind (we hold the lease, so it is ours to remove)
            for name in (SWEEP_FILE, STARTED_SPEC_FILE, WARM_START_FILE, OPTUNA_DB):
                (folder / name).unlink(missing_ok=True)
            lease.release()
            remove_tree(folder)
            raise
        if _driver_error(sys.exc_info()[1]):
            return _driver_failed(folder)
        raise
    return _finish_report(console, outcome, spec, lease)


def resume_command(sweep_dir: str, *, started_at: float | None = None, given=None,
                   overrides: list[str] | None = None) -> int:
    """``pielab resume SWEEP_DIR``: continue an interrupted sweep (Tune, Optuna and the folder files).

    Takes the folder's lease before it loads anything; refuses (one line, exit 2) a ``sweep.yaml``
    that differs from the spec the sweep started with. ``given``: ``(spec, spec_dict, what)`` from
    ``pielab sweep --resume-if-exists``, compared instead of ``sweep.yaml``.

    ``overrides`` (``--set num_trials=N``, ``time_budget_s``, ``max_concurrent``: :data:`CONTINUE_KEYS`)
    continue the sweep, finished or not, past what it started with: the same Tune experiment and the
    same Optuna study (old trials are not rerun; the same searcher suggests the new ones). Any other
    changed key is refused (:class:`~pielab.folder.started_spec.SpecChanged`, naming it).
    """
    t0 = started_at or time.time()
    with stop_signals_caught():
        sweep = SweepFolder.open(sweep_dir)
        folder = sweep.path
        lease = lease_for(folder, optuna_url=sweep.optuna_storage).acquire()
        with _holding(lease):
            return _resume(folder, lease, t0, given, overrides or [])


def _continue_with(folder: Path, overrides: list[str]):
    """``resume --set``: the saved spec with ``overrides``; refuses a changed key outside
    :data:`CONTINUE_KEYS` and a ``num_trials`` below the trials already started. Returns
    ``(spec, spec_dict, changes)``; the caller records the new spec once it is sure to run."""
    from pielab.config import load_yaml
    from pielab.spec.sweep_spec import SweepSpec

    raw, lines = load_yaml(folder / SWEEP_FILE)
    saved = SweepSpec.from_dict(raw, source=str(folder / SWEEP_FILE), lines=lines, base_dir=folder)
    spec = SweepSpec.from_dict(raw, source=str(folder / SWEEP_FILE), lines=lines, base_dir=folder,
                               overrides=overrides)
    spec_dict = spec.to_dict()
    what = f"{folder} --set {' --set '.join(overrides)}"
    check_unchanged(folder, spec_dict, what=what, allowed=CONTINUE_KEYS)
    started = read_started_spec(folder) or saved.to_dict()
    changes = spec_changes(started, spec_dict)
    refused = [c for c in changes if c[0] not in CONTINUE_KEYS]
    if refused:  # a folder from before started_spec.json: compared with its sweep.yaml
        from pielab.folder.started_spec import SpecChanged

        raise SpecChanged(f"{what}: resume --set changes only {', '.join(CONTINUE_KEYS)}; "
                          f"not {describe_changes(refused)}", refused)
    ran = len(load_records(folder))
    if spec.num_trials < ran:
        raise ConfigError(f"--set num_trials={spec.num_trials}: this sweep already started {ran} trials")
    return spec, spec_dict, changes


def _refuse_damaged(folder: Path, console) -> None:
    """Refuse (one line, exit 2) to resume from damaged files that the driver would trust: the spec, a trial's
    record, Tune's experiment or the study (:mod:`pielab.folder.damage`); say which damaged files it rebuilds."""
    top = top_level_damage(folder)
    trials: list = []
    load_records(folder, damage=trials)
    blocking = [d for d in top if d.kind == DAMAGE_SPEC] + trials + engine_damage(folder)
    if blocking:
        advice = ("restore the file, or remove the damaged trial's folder under trials/ to drop that trial"
                  if all(d.kind == DAMAGE_TRIAL for d in blocking) else
                  f"`pielab status`, `report` and `export` still read it; to search on from its trials start a new "
                  f"sweep with `pielab sweep SPEC --from {shlex.quote(str(folder))}`")
        raise PielabError(f"{folder}: cannot resume: damaged: {describe_damage(blocking)}; {advice}")
    for damaged in top:
        console.print(damaged.line(), style="yellow", markup=False, highlight=False)


def _resume(folder: Path, lease: DriverLease, t0: float, given, overrides: list[str]) -> int:
    changes: list = []
    _refuse_damaged(folder, make_console())
    _end_leftovers(folder, make_console())  # we hold the lease: the earlier driver is gone
    if given is not None:
        spec, spec_dict, what = given
        check_unchanged(folder, spec_dict, what=what)
    elif overrides:
        spec, spec_dict, changes = _continue_with(folder, overrides)
    else:
        spec = _load_saved_spec(folder)
        spec_dict = spec.to_dict()
        check_unchanged(folder, spec_dict, what=str(folder / SWEEP_FILE))
    status = read_json(folder / STATUS_FILE) or {}
    console = make_console()
    if changes and (folder / TUNE_DIR / TUNER_FILE).is_file():
        # from now on this is the spec the sweep continues with (a later plain resume compares with it)
        write_atomic(folder / SWEEP_FILE, dump_yaml(spec_dict, sort_keys=False))
        record_started_spec(folder, spec_dict)
        console.print(f"continuing sweep {spec.name} with {describe_changes(changes)} (the same Optuna study)")
    elif status.get("finished"):
        counts = summarize_records(load_records(folder), status.get("mode", "max"))["counts"]
        how = status.get("end") if status.get("end") not in (None, END_FINISHED) else "every trial ran"
        console.print(f"sweep {folder} already finished ({how}; {counts_text(counts, running_label=None)}); nothing to resume")
        return EXIT_FINISHED if status.get("end") != "failed" else EXIT_FAILED
    if not (folder / TUNE_DIR / TUNER_FILE).is_file():
        if given is not None and set(_others(folder)) <= {SWEEP_FILE, STARTED_SPEC_FILE}:
            # --resume-if-exists after a stop before the first trial: nothing to continue, start it
            return _start_sweep(spec, spec_dict, folder, status.get("address"), lease, t0)
        raise PielabError(
            f"{folder}: no Tune experiment state in {TUNE_DIR}/ (it stopped before its first trial); "
            f"start again with `pielab sweep {shlex.quote(str(folder / SWEEP_FILE))}`"
        )
    if not (folder / STARTED_SPEC_FILE).is_file():
        record_started_spec(folder, spec_dict)  # a folder from before the record: from now on, this is it
    from pielab.sweep.session import cluster_address

    address = cluster_address(status.get("address"))
    owns_ray = _start_ray_for(spec, address, folder)
    from pielab.sweep.runner import run_sweep

    console.print(f"resuming sweep {spec.name} in {folder}")
    display = LiveStatus(console, spec.name, spec.metric)
    extend = {"num_trials": spec.num_trials, "max_concurrent": spec.max_concurrent} if changes else None
    try:
        outcome = run_sweep(spec, folder, address=address, restore=True, display=display, started_at=t0,
                            owns_ray=owns_ray, extend=extend)
    except BaseException:
        if owns_ray:
            import ray

            ray.shutdown()
        if _driver_error(sys.exc_info()[1]):
            return _driver_failed(folder)
        raise
    return _finish_report(console, outcome, spec, lease)


def _driver_error(exc: BaseException | None) -> bool:
    """An error of the driver's own loop (Tune, a callback, the searcher), not bad input or a stop."""
    return isinstance(exc, Exception) and not isinstance(exc, PielabError)


def _driver_failed(folder) -> int:
    """The driver's loop raised after the sweep started: the traceback (what a bug report needs), then one
    line saying that the state is saved and how to continue; exit 1. The runner has marked the sweep
    crashed in status.json, so `pielab status` shows it interrupted and `pielab resume` continues it.
    A full disk is not a bug: one line naming the disk and its free space, no traceback."""
    import traceback

    from pielab.files import disk_full, free_space

    if disk_full(sys.exc_info()[1]):
        where = folder if is_remote(folder) else Path(folder)
        free = "" if is_remote(folder) else f" ({free_space(where)})"
        print(f"pielab: error: no space left on the disk of {folder}{free}: the sweep stopped, each trial's last "
              f"checkpoint is kept; free space, or copy the folder to a larger disk, then: "
              f"pielab resume {shlex.quote(str(folder))}", file=sys.stderr)
        return EXIT_FAILED
    traceback.print_exc()
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
        _end_leftovers(folder.path, console)
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
