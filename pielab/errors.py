"""Errors that the command line turns into clear lines and a non-zero exit."""

from __future__ import annotations


class PielabError(Exception):
    """Any user-facing error: bad input, missing data, an unusable folder."""


class ConfigError(PielabError):
    """A configuration, sweep spec or search space that cannot be used as given.

    ``problems`` lists every problem found, one line each (``FILE:LINE: key: message`` for YAML);
    the message is those lines joined by newlines.
    """

    def __init__(self, message: str | list[str] = "") -> None:
        problems = list(message) if isinstance(message, (list, tuple)) else str(message).splitlines()
        super().__init__("\n".join(problems))
        self.problems: list[str] = problems


class DataError(PielabError):
    """Data that cannot be found, downloaded or read."""


class Diverged(PielabError):
    """Training produced a non-finite loss; the trial ends as diverged."""


class DiskFull(Exception):
    """The disk a sweep writes to is full (a trial's checkpoint or the driver's own files). Not bad input: the
    sweep stops with its state saved up to each trial's last checkpoint, and resumes once there is space."""


class UnknownTrial(PielabError, KeyError):
    """A trial id that the sweep folder does not hold (``Sweep.config("nope")``, ``Sweep.history("nope")``).

    Both a :class:`PielabError` (one line: the id and the folder) and a :class:`KeyError` (a missing key)."""

    def __init__(self, trial_id: str, where: object) -> None:
        super().__init__(f"{where}: no trial {trial_id!r} in this sweep")
        self.trial_id = trial_id

    def __str__(self) -> str:  # one line, not KeyError's quoted repr
        return str(self.args[0])


class SweepCrashed(PielabError):
    """The driver's own loop (Tune, a callback, the searcher) raised after the sweep started: not bad input.
    The sweep's state is saved and ``pielab resume`` (``pielab.resume_sweep``) continues it. ``sweep_dir``: the
    folder; ``__cause__``: the original exception, whose traceback a bug report needs."""

    def __init__(self, sweep_dir: object) -> None:
        super().__init__(f"the sweep stopped on an error in its driver; its state is saved; continue it with: "
                         f"pielab resume {sweep_dir}")
        self.sweep_dir = sweep_dir


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C (SIGINT), SIGTERM or SIGUSR1 while it ran, after Tune saved its state:
    ``pielab.resume_sweep(sweep_dir)`` (``pielab resume SWEEP_DIR``) continues it. A ``KeyboardInterrupt``, so
    that Ctrl-C in a notebook cell ends the cell as Ctrl-C does; ``signal``: ``SIGINT``, ``SIGTERM`` or
    ``SIGUSR1``."""

    def __init__(self, sweep_dir: object, signal: str = "SIGINT") -> None:
        super().__init__(f"the sweep was stopped by {signal} before it finished; its state is saved; continue it "
                         f"with pielab.resume_sweep({str(sweep_dir)!r}) or `pielab resume {sweep_dir}`")
        self.sweep_dir = sweep_dir
        self.signal = signal
