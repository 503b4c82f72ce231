"""The recorder's window on the terminal: :class:`DisplayHook` forwards to whatever display the command passed
in (the command package's :class:`pielab.cli.display.LiveStatus`, or None), so the engine never imports the
terminal code."""

from __future__ import annotations

import sys

from pielab.folder import TrialRecord


class DisplayHook:
    """What the recorder shows on the terminal, through ``display`` (a :class:`LiveStatus`, or None).

    ``source`` is whatever answers ``status()`` with status.json's dict (the recorder). Without a
    display, warnings still reach the user: one line on stderr.
    """

    def __init__(self, display=None) -> None:
        self.display = display

    def start(self, source) -> None:
        if self.display is not None:
            self.display.start(source)

    def trial_ended(self, source, rec: TrialRecord) -> None:
        if self.display is not None:
            self.display.trial_ended(source, rec)

    def warn(self, line: str) -> None:
        if self.display is not None and hasattr(self.display, "warn"):
            self.display.warn(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.display is not None:
            self.display.stop()
