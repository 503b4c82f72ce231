"""Text shown to users: one-line messages and one formatter for values, durations and booleans.

Every command (``status``, ``report``, ``export``, the live display, error lines) formats values
through these functions, so a boolean reads the same everywhere (``yes``/``no``) and an error is
always one line.
"""

from __future__ import annotations

import math
from typing import Any


def one_line(text: BaseException | str, limit: int = 300) -> str:
    """An error or a message as one short line.

    An exception becomes ``Type: message`` (just ``Type`` when it has no message); a multi-line text
    (a traceback, a server's error page) keeps its *last* non-empty line, which is where Python and
    most tools put the cause. Whitespace is collapsed; longer than ``limit`` characters ends in ``...``.
    """
    if isinstance(text, BaseException):
        text = f"{type(text).__name__}: {text}" if str(text) else type(text).__name__
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    line = " ".join(lines[-1].split()) if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def fmt_value(value: Any, digits: int = 4) -> str:
    """A config, metric or table value as a person reads it.

    ``None``/NaN -> ``-``; booleans -> ``yes``/``no``; integral floats -> ``34``; other floats with
    ``digits`` significant digits (``0.001``, ``0.8123``, ``1.2e+06``); lists as ``[3, 4, 6, 3]``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "yes" if value else "no"
    if hasattr(value, "item") and not isinstance(value, (int, float, str)):
        try:
            return fmt_value(value.item(), digits)
        except (TypeError, ValueError):
            pass
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        if abs(value) < 1e-3 or abs(value) >= 1e4:
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v, digits) for v in value) + "]"
    return str(value)


def fmt_duration(seconds: float | None) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss`` (``-`` for None)."""
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
