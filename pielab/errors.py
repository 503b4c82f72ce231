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
