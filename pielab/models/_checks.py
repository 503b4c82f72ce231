"""Argument checks shared by the model families.

Models are built from user configs and sweep proposals, so a bad value must fail at construction
with a ``ValueError`` that names the argument (``get_model`` turns it into a one-line
``ConfigError``), never deep inside a forward pass.
"""

from __future__ import annotations


def check_positive_int(name: str, value: object) -> None:
    """Sizes and counts: a plain ``int`` >= 1 (``True`` is not a width)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_dropout(name: str, value: object) -> None:
    """A dropout probability in [0, 1): a rate of 1 would zero every activation."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
