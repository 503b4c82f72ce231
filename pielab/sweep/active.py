"""The sweep this driver is running now, for objects unpickled from Tune's state.

``Tuner.restore`` unpickles the searcher and the recorder callback from ``<sweep>/tune``, and those pickles
deliberately hold neither the database password nor the sweep folder's place on disk (a folder can be moved
between a crash and its resume). While :func:`running` is active, the unpickled objects take the place and
the study URL from it: the folder where it is now, the URL with the password this process was given.
A module of its own, imported by the session, the searcher, the recorder and :mod:`pielab.sweep.compat`,
so that none of them imports another to find it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass
class ActiveSweep:
    """Where the sweep that this driver runs now lives, for objects unpickled from Tune's state.

    ``sweep_dir``: the folder as it is now (absolute). ``optuna_url``: the study's storage URL now,
    ``sqlite:///<sweep_dir>/optuna.db`` or the spec's URL (with its password when this process was
    given one, else libpq's PGPASSWORD / ~/.pgpass apply). ``recorder``: the recorder's settings for
    this run (:class:`~pielab.sweep.recorder.SweepRecorder` keyword arguments). ``display``: the
    live terminal status, or None. ``extend``: ``{"num_trials", "max_concurrent"}`` when ``pielab
    resume --set`` continues the sweep past what it started with (the restored search generator
    takes them: :meth:`pielab.sweep.compat.MovableSearchGenerator.extend`), else None. ``sampler``: the
    spec's :class:`~pielab.sweep.search.SamplerRecipe`, for a searcher pickled before samplers pickled
    as recipes.
    """

    sweep_dir: Path
    optuna_url: str
    recorder: dict[str, Any] = field(default_factory=dict)
    display: Any = None
    extend: dict[str, int] | None = None
    sampler: Any = None  # the spec's SamplerRecipe (pielab.sweep.search): rebuilds the sampler on a resume
    generator: Any = None  # the restored MovableSearchGenerator (pielab.sweep.compat), set when Tune restores it


# One sweep at a time per driver process (Tune's fit runs on the main thread); a stack only so that
# a nested use restores the outer one. Driver-only: trial workers never read it.
_ACTIVE: list[ActiveSweep] = []


@contextmanager
def running(active: ActiveSweep) -> Iterator[ActiveSweep]:
    """Make ``active`` the sweep that objects unpickled in this process bind to, for the block."""
    _ACTIVE.append(active)
    try:
        yield active
    finally:
        _ACTIVE.remove(active)


def active_sweep() -> ActiveSweep | None:
    """The sweep this driver runs now (inside :func:`running`), else None."""
    return _ACTIVE[-1] if _ACTIVE else None
