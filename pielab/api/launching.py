"""Launching from Python: :func:`run_sweep` and :func:`resume_sweep`, what ``pielab sweep`` and ``pielab resume``
do, through the same driver (:mod:`pielab.sweep.driver`); ``pielab.train`` is :func:`pielab.train.run`.

They raise instead of exiting: bad input is a :class:`~pielab.errors.PielabError` subclass with the command's
one line (``ConfigError`` lists every problem of a spec), a crash of the driver's loop after the sweep started
is :class:`~pielab.errors.SweepCrashed`, and Ctrl-C (SIGINT, a notebook's interrupt), SIGTERM or SIGUSR1
stops the sweep as in a shell: Tune saves its state, then :class:`~pielab.errors.SweepInterrupted` (a
``KeyboardInterrupt``) says how to resume. Ray is left as the caller had it: started and shut down by the call
when this process had not initialised it, kept when it had (``ray.init`` before, ``address`` ignored then).
Ray is imported only when a sweep runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pielab.api.reading import Sweep, load_sweep
from pielab.errors import SweepInterrupted

__all__ = ["run_sweep", "resume_sweep"]


class _Say:
    """The driver's console for the API: its few lines (the spec, the folder, what resume finds) as plain text
    on stdout, or nothing when ``quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def print(self, text: Any = "", **_style: Any) -> None:
        if not self.quiet:
            print(text, flush=True)


def _ended(driven) -> Sweep:
    """The finished run as a :class:`Sweep`, or the error the command would have exited with."""
    if driven.lost is not None:  # another driver took the folder over
        raise driven.lost
    if driven.stopped_by:
        raise SweepInterrupted(driven.sweep_dir, driven.stopped_by)
    return load_sweep(driven.sweep_dir)


def run_sweep(spec: str | Path | dict[str, Any], overrides: dict[str, Any] | list[str] | None = None,
              out: str | Path | None = None, address: str | None = None, *, quiet: bool = False) -> Sweep:
    """Run a sweep to its end, as ``pielab sweep SPEC [--set k=v]... [--out DIR] [--address ADDR]`` does.

    Args:
        spec: a sweep spec file (``sweeps/X.yaml``), or a dict in the spec's YAML form (``name``, ``base``,
            ``space``, ``search``, ``num_trials``, ...; relative paths in it are relative to the current folder).
        overrides: ``{"train.epochs": 1, "num_trials": 4}`` or ``["train.epochs=1", ...]``, as ``--set``.
        out: the sweep folder to make (new or empty; a local path or an ``s3://`` / ``gs://`` URI); default
            ``<storage.path>/<name>-TIMESTAMP``.
        address: a Ray cluster to join (``HOST:PORT``, ``auto``); default a local Ray on 127.0.0.1, or the one
            this process already initialised.
        quiet: print nothing (by default a few lines: the spec, the sweep folder).

    Returns:
        The sweep folder as a :class:`~pielab.api.reading.Sweep` (``status``: ``finished``; trials that failed
        are in ``trials_dataframe()`` with their reason).

    Raises:
        ConfigError: a bad spec or override (every problem, one line each). PielabError: an ``out`` that exists
            or cannot be written, data that cannot be found, a cluster that cannot be joined, another driver
            holding or taking over the folder. SweepInterrupted: Ctrl-C / SIGTERM / SIGUSR1 stopped it (state
            saved; :func:`resume_sweep` continues it). SweepCrashed: the driver's loop failed (state saved).
    """
    from pielab.sweep import driver

    driven = driver.start(spec if isinstance(spec, dict) else str(spec), overrides, None if out is None else str(out),
                          address, console=_Say(quiet))
    return _ended(driven)


def resume_sweep(path: str | Path, overrides: dict[str, Any] | list[str] | None = None, *,
                 quiet: bool = False) -> Sweep:
    """Continue an interrupted sweep, as ``pielab resume SWEEP_DIR [--set k=v]...`` does: the same Tune
    experiment and Optuna study; trials already run are not rerun. A finished sweep is returned as it is.

    Args:
        path: the sweep folder (local or ``s3://`` / ``gs://``).
        overrides: only ``num_trials``, ``time_budget_s`` and ``max_concurrent`` may change (the sweep then
            continues past what it started with, finished or not), as ``{"num_trials": 8}`` or ``["num_trials=8"]``.
        quiet: print nothing.

    Returns:
        The sweep folder as a :class:`~pielab.api.reading.Sweep`.

    Raises:
        PielabError: not a sweep folder, damaged state it would trust, a changed ``sweep.yaml``, another key
            changed (``SpecChanged``), another driver holding the folder. SweepInterrupted, SweepCrashed: as
            :func:`run_sweep`.
    """
    from pielab.sweep import driver

    return _ended(driver.resume(str(path), console=_Say(quiet), overrides=overrides))
