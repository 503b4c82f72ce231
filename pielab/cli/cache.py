"""``pielab cache``: list the processed-data cache, and prune what has not been used for a while.

The cache (:mod:`pielab.data.cache`) gains an entry per distinct source and processing settings, and a
subset folder per distinct split (``train_size``, ``test_size``, ``split_seed``...); nothing removes them
by itself. Imports neither ray, optuna nor wandb: sweep folders are read as plain YAML.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from pielab.config import DataConfig
from pielab.folder.layout import CONFIG_FILE, SWEEP_FILE, TRIALS_DIR
from pielab.data import cache
from pielab.errors import DataError, PielabError
from pielab.text import one_line
from pielab.yamlfile import load_text

_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` -> seconds; anything else is a one-line PielabError."""
    match = _AGE_RE.match(text)
    if not match:
        raise PielabError(f"--older-than {text!r}: expected a number and a unit s, m, h, d or w (such as 30d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def fmt_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "just now"


def _sweep_data_configs(sweep_dir: Path) -> list[tuple[Path, str, dict[str, Any]]]:
    """(file, task, data section) of the sweep's base config (sweep.yaml) and of every trial's config."""
    if not (sweep_dir / SWEEP_FILE).is_file():
        raise PielabError(f"--keep-referenced {sweep_dir}: not a sweep folder (no {SWEEP_FILE})")
    found = []
    try:
        spec = load_text((sweep_dir / SWEEP_FILE).read_text()) or {}
        base = spec.get("base") or {}
        task = base.get("task")
        if not task:
            from pielab.models import model_task

            task = model_task(base["model"]["name"])
        found.append((sweep_dir / SWEEP_FILE, task, base.get("data") or {}))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise PielabError(f"{sweep_dir / SWEEP_FILE}: cannot read its base config ({one_line(exc, 160)})") from None
    for path in sorted((sweep_dir / TRIALS_DIR).glob(f"*/{CONFIG_FILE}")):
        try:
            raw = load_text(path.read_text()) or {}
            found.append((path, raw["task"], raw.get("data") or {}))
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise PielabError(f"{path}: cannot read ({one_line(exc, 160)}); nothing removed") from None
    return found


def referenced_names(root: Path, sweep_dirs: list[str]) -> tuple[set[str], list[str]]:
    """The cache names (entries and subsets) that the sweeps' configs open under ``root``, and notes
    about configs whose data cannot be found (their entries cannot be named)."""
    from pielab.data import TASKS

    keep: set[str] = set()
    notes: list[str] = []
    seen: set[str] = set()
    for folder in sweep_dirs:
        for path, task, data in _sweep_data_configs(Path(folder)):
            key = json.dumps([task, data], sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            try:
                cfg = DataConfig(**data)
                keep.update(TASKS[task].cache_names(cfg, root))
            except (DataError, KeyError, TypeError) as exc:
                notes.append(f"note: {path}: its cache entry cannot be identified ({one_line(exc, 160)})")
    return keep, notes


def cache_command(cache_dir: str | None, *, prune: bool, older_than: str | None,
                  keep_referenced: list[str] | None, out=print) -> int:
    """``pielab cache [--cache-dir DIR] [--prune [--older-than AGE] [--keep-referenced SWEEP_DIR ...]]``."""
    if not prune and (older_than is not None or keep_referenced):
        raise PielabError("--older-than and --keep-referenced choose what --prune removes; add --prune")
    root = cache.cache_root(cache_dir, create=False)  # listing or pruning a cache never makes one
    if root.exists() and not root.is_dir():
        raise PielabError(f"{root}: not a folder; a data cache is a folder (--cache-dir or PIELAB_CACHE_DIR)")
    if not root.exists():
        out(f"cache {root}: none there yet (no data was prepared with it)")
        return 0
    if prune:
        age = parse_age(older_than or "30d")
        keep, notes = referenced_names(root, keep_referenced or [])
        for note in notes:
            out(note)
        removed = cache.prune(root, older_than_s=age, keep=keep)
        now = time.time()
        for item in removed:
            out(f"removed {item.name}  {fmt_bytes(item.size)}  last used {fmt_age(now - item.last_used)}")
        freed = sum(item.size for item in removed)  # an entry's size holds its subsets; it is never listed twice
        out(f"freed {fmt_bytes(freed)} in {len(removed)} folder(s) of {root}"
            if removed else f"nothing to remove in {root}")
        return 0
    items = cache.inventory(root)
    now = time.time()
    entries = [i for i in items if i.kind == "entry"]
    total = sum(i.size for i in entries)
    out(f"cache {root}: {len(entries)} entries, {len(items) - len(entries)} subsets, {fmt_bytes(total)}")
    if not items:
        return 0
    width = max(len(i.name) for i in items)
    out(f"{'name':<{width}}  {'task':<7}  {'size':>9}  {'last used':<17}  state")
    for i in items:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(i.last_used))
        out(f"{i.name:<{width}}  {i.task:<7}  {fmt_bytes(i.size):>9}  {stamp:<17}  "
            f"{i.state}, {fmt_age(now - i.last_used)}")
    return 0
