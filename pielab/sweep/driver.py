"""A sweep's driver from start to end, for ``pielab sweep`` / ``pielab resume`` and ``pielab.run_sweep`` /
``pielab.resume_sweep``: one code path, which raises and never exits or prints a traceback.

:func:`start` loads and validates the spec, makes the folder and takes its lease, starts (or joins) Ray
once, and runs :func:`pielab.sweep.runner.run_sweep`; :func:`resume` takes the lease of an existing folder,
refuses damaged or changed state, and continues. Both return a :class:`Driven` (the folder, the spec and
Tune's outcome) that the caller turns into its own ending: the command prints the closing table and picks
the exit code (:mod:`pielab.cli.sweep`), the Python API returns a ``Sweep`` or raises (:mod:`pielab.api.launching`).

What they say on the way goes to ``console`` (anything with ``print(text, **style)``: the command's rich
console, or the API's plain printer); the live view, if any, is ``display(spec)``'s. Ray is started and
shut down by the call only when this process had not initialised it (:func:`pielab.sweep.session.start_ray`).

One driver per folder: the folder's lease (:mod:`pielab.folder.lease`) is held from before anything is written
or loaded there until the call returns (normally, on an error, Ctrl-C or SIGTERM). A driver that loses it
stops as on Ctrl-C, and :attr:`Driven.lost` holds the error to raise.

Raises (besides :class:`~pielab.errors.PielabError` for bad input): :class:`~pielab.errors.SweepCrashed` when
the driver's own loop fails after the sweep started (its ``__cause__`` is the error; the state is saved);
``KeyboardInterrupt`` (:class:`~pielab.sweep.signals.Stopped` for SIGTERM/SIGUSR1) when a signal arrives
outside Tune's loop. A signal inside Tune's loop stops it gracefully: :attr:`Driven.stopped_by` names it.
"""

from __future__ import annotations

import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pielab.errors import ConfigError, PielabError, SweepCrashed
from pielab.folder import (
    END_FINISHED, END_INTERRUPTED, END_TERMINATED, END_USR1, OPTUNA_DB, STARTED_SPEC_FILE, STATUS_FILE, SWEEP_FILE,
    TUNE_DIR, TUNER_FILE, WARM_START_FILE, SweepFolder, is_remote, load_records, location, read_json, write_atomic,
)
from pielab.folder.damage import SPEC as DAMAGE_SPEC, TRIAL as DAMAGE_TRIAL
from pielab.folder.damage import describe as describe_damage, engine_damage, top_level_damage
from pielab.folder.dblease import lease_for, read_lease_for
from pielab.folder.lease import LEASE_FILE, DriverLease, LeaseHeld
from pielab.folder.started_spec import (
    check_unchanged, describe_changes, read_started_spec, record_started_spec, spec_changes,
)
from pielab.folder.storage import remove_tree
from pielab.sweep.signals import interrupt_when, stop_signals_caught
from pielab.text import one_line
from pielab.yamlfile import dump_yaml

# What `pielab resume SWEEP_DIR --set KEY=VALUE` may change: the sweep continues with the same study.
CONTINUE_KEYS = ("num_trials", "time_budget_s", "max_concurrent")

# status.json ``end`` (pielab.folder.layout) of a run stopped by a signal inside Tune's loop -> the signal
STOPPED_BY = {END_INTERRUPTED: "SIGINT", END_TERMINATED: "SIGTERM", END_USR1: "SIGUSR1"}


@dataclass
class Driven:
    """What :func:`start` and :func:`resume` return.

    ``outcome``: the runner's :class:`~pielab.sweep.runner.SweepOutcome` (final status.json, every record);
    None when nothing ran: ``resume`` of a finished sweep, whose status.json ``end`` is then ``already``.
    ``lost``: the lease was lost while it ran (the error to raise once the caller has reported).
    """

    spec: Any  # the SweepSpec it ran
    sweep_dir: Any  # a local Path or an ObjectPath
    outcome: Any = None
    lost: LeaseHeld | None = None
    already: str | None = None

    @property
    def end(self) -> str:
        """status.json's ``end``, else ``finished`` / ``interrupted`` by its ``finished`` flag."""
        status = self.outcome.status if self.outcome is not None else {}
        return status.get("end") or (END_FINISHED if status.get("finished") else END_INTERRUPTED)

    @property
    def stopped_by(self) -> str | None:
        """``SIGINT``, ``SIGTERM`` or ``SIGUSR1`` when a signal stopped the run inside Tune's loop (its state is
        saved; resume continues it), else None."""
        return STOPPED_BY.get(self.end) if self.outcome is not None else None


Display = Callable[[Any], Any]  # spec -> the live view the runner forwards to (or None)


def _no_display(spec) -> None:
    return None


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


# --------------------------------------------------------------------------- starting and resuming


def _start_ray_for(spec, address: str | None, folder) -> bool:
    """Start (or join) Ray once the spec has loaded and validated, and the study's database (when it is a
    server) has answered: bad input and a database that is down never pay for Ray. A local Ray's
    processes carry the folder's mark (:mod:`pielab.sweep.leftovers`), so that what a killed driver leaves is
    found and ended by the next resume or status."""
    from pielab.sweep import leftovers, runner

    url = spec.storage.optuna
    if url and not url.startswith("sqlite"):
        from pielab.sweep.search import check_storage

        check_storage(url)
    if not address and not is_remote(folder):
        leftovers.mark(folder)
    return runner.start_ray(address)


def end_leftovers(folder, console) -> None:
    """End the Ray processes an earlier driver of this (local) folder left behind, and say so."""
    if is_remote(folder):
        return
    from pielab.sweep import leftovers

    ended = leftovers.end(folder)
    if ended:
        console.print(leftovers.describe(ended), markup=False, highlight=False)


def start(spec_source: str | Path | dict[str, Any], overrides: list[str] | dict[str, Any] | None, out: str | None,
          address: str | None, *, console, display: Display = _no_display, resume_if_exists: bool = False,
          warm_from: str | None = None) -> Driven:
    """``pielab sweep SPEC [--set k=v]... [--out DIR] [--address ADDR] [--resume-if-exists] [--from OLD]``.

    ``spec_source``: a spec file, or a dict in the spec's YAML form (relative paths in it are relative to the
    current directory). ``overrides``: ``["key=value", ...]`` as ``--set`` gives them, or ``{key: value}``.

    With ``resume_if_exists`` and a sweep already in ``out``: the same spec (after ``--set``)
    continues it as ``pielab resume`` does (a finished one reports so, exit 0); a different spec
    raises :class:`~pielab.folder.started_spec.SpecChanged` naming the changed fields.
    ``warm_from``: an earlier sweep folder whose finished trials the new study receives first
    (:func:`pielab.sweep.search.warm_start`); checked before the new folder is made.
    """
    t0 = time.time()
    from pielab.files import check_writable
    from pielab.sweep.session import cluster_address, localize_paths
    from pielab.spec.sweep_spec import SweepSpec, load_spec

    if out and not is_remote(out):  # object storage is checked when the folder is made
        check_writable(Path(out))
    if resume_if_exists and not out:
        raise PielabError("--resume-if-exists needs --out DIR (the folder that a rerun continues)")
    address = cluster_address(address)  # a Ray Job's driver has RAY_ADDRESS and no --address

    with stop_signals_caught():
        # every file it names is validated before Ray starts
        if isinstance(spec_source, dict):
            spec = SweepSpec.from_dict(spec_source, source="the spec", overrides=overrides or [], base_dir=Path.cwd())
        else:
            spec = load_spec(spec_source, overrides or [])
        if out:
            from pielab.spec.sweep_spec import storage_problems

            for key, problem in storage_problems(out, spec.storage.optuna, spec.storage.endpoint, key="--out"):
                raise ConfigError(f"{key}: {problem}")
        localize_paths(spec)  # sweep.yaml then names the data wherever `pielab resume` runs from
        spec_dict = spec.to_dict()
        if resume_if_exists and out and (location(out, spec.storage.endpoint) / SWEEP_FILE).is_file():
            return resume(out, console=console, display=display, started_at=t0,
                          given=(spec, spec_dict, f"--out {location(out)}"))
        source = None
        if warm_from:
            from pielab.sweep.warm import warm_source

            source = warm_source(warm_from, spec)
        folder, lease = _new_sweep_dir(spec, out)
        with _holding(lease):
            return _start_sweep(spec, spec_dict, folder, address, lease, t0, console, display, source)


def _start_sweep(spec, spec_dict: dict[str, Any], folder: Path, address: str | None, lease: DriverLease,
                 t0: float, console, display: Display, source=None) -> Driven:
    """Run ``spec`` from its start in ``folder`` (empty but for the held lease); ``source``:
    ``(Optuna study, its SweepFolder)`` whose trials the new study receives first (``--from``)."""
    owns_ray = False
    try:
        write_atomic(folder / SWEEP_FILE, dump_yaml(spec_dict, sort_keys=False))
        record_started_spec(folder, spec_dict)
        console.print(spec.describe())
        console.print(f"sweep folder: {folder}")
        if source is not None:
            from pielab.sweep.warm import warm_start_study

            console.print(warm_start_study(spec, folder, *source))
        owns_ray = _start_ray_for(spec, address, folder)
        from pielab.sweep.runner import run_sweep

        outcome = run_sweep(spec, folder, address=address, display=display(spec), started_at=t0, owns_ray=owns_ray)
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
            raise SweepCrashed(folder) from sys.exc_info()[1]
        raise
    return _driven(spec, folder, outcome, lease)


def resume(sweep_dir: str | Path, *, console, display: Display = _no_display, started_at: float | None = None,
           given=None, overrides: list[str] | dict[str, Any] | None = None) -> Driven:
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
            return _resume(folder, lease, t0, given, overrides or [], console, display)


def _continue_with(folder: Path, overrides: list[str] | dict[str, Any]):
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
    given = overrides if isinstance(overrides, (list, tuple)) else [f"{k}={v}" for k, v in overrides.items()]
    what = f"{folder} --set {' --set '.join(given)}"
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


def _resume(folder: Path, lease: DriverLease, t0: float, given, overrides, console, display: Display) -> Driven:
    changes: list = []
    _refuse_damaged(folder, console)
    end_leftovers(folder, console)  # we hold the lease: the earlier driver is gone
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
    if changes and (folder / TUNE_DIR / TUNER_FILE).is_file():
        # from now on this is the spec the sweep continues with (a later plain resume compares with it)
        write_atomic(folder / SWEEP_FILE, dump_yaml(spec_dict, sort_keys=False))
        record_started_spec(folder, spec_dict)
        console.print(f"continuing sweep {spec.name} with {describe_changes(changes)} (the same Optuna study)")
    elif status.get("finished"):  # nothing to run: the caller says so (pielab.cli.sweep._finish)
        return Driven(spec, folder, already=str(status.get("end") or END_FINISHED))
    if not (folder / TUNE_DIR / TUNER_FILE).is_file():
        if given is not None and set(_others(folder)) <= {SWEEP_FILE, STARTED_SPEC_FILE}:
            # --resume-if-exists after a stop before the first trial: nothing to continue, start it
            return _start_sweep(spec, spec_dict, folder, status.get("address"), lease, t0, console, display)
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
    extend = {"num_trials": spec.num_trials, "max_concurrent": spec.max_concurrent} if changes else None
    try:
        outcome = run_sweep(spec, folder, address=address, restore=True, display=display(spec), started_at=t0,
                            owns_ray=owns_ray, extend=extend)
    except BaseException:
        if owns_ray:
            import ray

            ray.shutdown()
        if _driver_error(sys.exc_info()[1]):
            raise SweepCrashed(folder) from sys.exc_info()[1]
        raise
    return _driven(spec, folder, outcome, lease)


def _driver_error(exc: BaseException | None) -> bool:
    """An error of the driver's own loop (Tune, a callback, the searcher), not bad input or a stop."""
    return isinstance(exc, Exception) and not isinstance(exc, PielabError)




def _driven(spec, folder, outcome, lease: DriverLease) -> Driven:
    """The run's :class:`Driven`, with the lost lease's error while the lease is still ours to read."""
    return Driven(spec, folder, outcome, lost=_lost(lease) if lease.lost.is_set() else None)
