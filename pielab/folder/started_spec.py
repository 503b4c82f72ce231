"""The spec a sweep was started with, and what changed since: ``<sweep>/started_spec.json``.

``pielab sweep`` writes the resolved spec (:meth:`SweepSpec.to_dict`, the same mapping as
``sweep.yaml``) as strict JSON next to ``sweep.yaml`` when it creates the folder. Tune's
``tuner.pkl``, the searcher's state and the Optuna study all hold the sweep as it started (its
``num_trials``, its space, its budget), so ``pielab resume`` and ``pielab sweep --resume-if-exists``
refuse a spec that differs from it, in one line naming every changed field
(``num_trials 3 -> 5``), before Ray starts. A folder made before this file existed is compared with
nothing (its ``sweep.yaml`` is taken as it is) and gets the file on its first resume.

A later ``pielab resume --set KEY=VALUE`` can pass ``allowed``: the changes it knows how to apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from pielab.errors import PielabError
from pielab.folder.layout import STARTED_SPEC_FILE
from pielab.folder.storage import location, read_json, write_json  # a local folder or object storage

_MISSING = object()


class SpecChanged(PielabError):
    """The spec given now differs from the one the sweep was started with. ``changes``: the
    ``(dotted key, old, new)`` triples."""

    def __init__(self, message: str, changes: list[tuple[str, Any, Any]]) -> None:
        super().__init__(message)
        self.changes = changes


def canonical(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """The spec mapping as JSON sees it (tuples are lists, keys are strings): what is compared."""
    return json.loads(json.dumps(spec_dict))


def record_started_spec(folder: str | Path, spec_dict: dict[str, Any]) -> None:
    """Write ``spec_dict`` (``SweepSpec.to_dict()``) as the spec the sweep in ``folder`` started with."""
    write_json(location(folder) / STARTED_SPEC_FILE, canonical(spec_dict))


def read_started_spec(folder: str | Path) -> dict[str, Any] | None:
    """The recorded spec, or None for a folder made before it was recorded."""
    data = read_json(location(folder) / STARTED_SPEC_FILE)
    return data if isinstance(data, dict) else None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for key, value in d.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: d}


def spec_changes(started: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, old, new)]`` for every leaf that differs, in the started spec's key order
    (a key present on one side only is the sentinel ``_MISSING`` on the other)."""
    old, new = _flat(canonical(started)), _flat(canonical(now))
    missing = _MISSING
    keys = list(old) + [k for k in new if k not in old]
    return [(k, old.get(k, missing), new.get(k, missing)) for k in keys
            if old.get(k, missing) != new.get(k, missing)
            and not (old.get(k, missing) is missing and new.get(k, missing) is missing)]


def describe_changes(changes: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    """``num_trials 3 -> 5, space.parameters.train.lr.high 0.01 -> 0.1``: for one error line."""
    def show(value: Any) -> str:
        if value is _MISSING:
            return "(absent)"
        return value if isinstance(value, str) else json.dumps(value)  # as in JSON/YAML: 5, 0.01, true, null

    parts = [f"{key} {show(old)} -> {show(new)}" for key, old, new in changes[:limit]]
    if len(changes) > limit:
        parts.append(f"and {len(changes) - limit} more")
    return ", ".join(parts)


def check_unchanged(folder: str | Path, spec_dict: dict[str, Any], *, what: str,
                    allowed: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
    """Raise :class:`SpecChanged` when ``spec_dict`` differs from the recorded started spec in any
    key outside ``allowed``; returns the allowed changes (for the caller to apply). ``what`` starts
    the error line (``SWEEP/sweep.yaml`` or ``--out SWEEP``)."""
    started = read_started_spec(folder)
    if started is None:
        return []
    changes = spec_changes(started, spec_dict)
    allowed = set(allowed)
    refused = [c for c in changes if c[0] not in allowed]
    if refused:
        raise SpecChanged(
            f"{what}: the spec differs from the one this sweep was started with ({location(folder) / STARTED_SPEC_FILE}): "
            f"{describe_changes(refused)}; a sweep continues with the spec it started with (undo the change, "
            f"or start a new sweep in another folder)", refused)
    return [c for c in changes if c[0] in allowed]
