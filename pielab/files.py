"""Writing and reading pielab's own files: atomically, and as strict JSON.

One place for "write a file so that a reader (another process, a crash) sees the old or the new
version, never half of one", and for JSON that strict parsers accept: NaN and infinity are written
as ``null`` (Python's ``json`` would write the bare word ``NaN``, which is not JSON, RFC 8259 §6).
Imports neither torch nor Ray: the sweep folder, the report and ``pielab train`` all use it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from pielab.errors import PielabError


def write_atomic(path: str | Path, data: str | bytes | Callable[[Path], None], *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    Args:
        path: the file to (re)write; missing parent folders are created.
        data: text, bytes, or a function that writes the temporary file it is given (for writers
            such as ``torch.save`` that want a path).
        fsync: flush the file to disk before the rename (for caches that must survive a power cut).

    Raises:
        OSError: the folder cannot be written. The temporary file is removed; ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
                f.write(data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None and every non-JSON leaf as its ``str``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy and torch scalars
        try:
            return json_safe(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text (``allow_nan=False`` after :func:`json_safe`), ending in a newline."""
    return json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as strict JSON, atomically."""
    write_atomic(path, json_text(data))


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- a full disk

# errno values that mean the disk (or the user's quota on it) is full
_FULL = {28, 122}  # ENOSPC, EDQUOT (Linux numbering; errno.EDQUOT where the platform has it)
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def disk_full(error: BaseException | str | None) -> bool:
    """Whether ``error`` (an exception, with its causes, or an error's text as Tune keeps it for a trial) is
    a full disk: ``OSError`` ENOSPC or EDQUOT anywhere in its chain (``__cause__``, ``__context__``, Ray's
    ``cause``), or their message in its text."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, str):
            return any(text in error for text in _FULL_TEXT)
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _FULL:
            return True
        if any(text in str(error) for text in _FULL_TEXT):
            return True
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return False


def free_space(path: str | os.PathLike) -> str:
    """``"1.2 MiB free"`` on the disk that holds ``path`` (its nearest existing parent), or ``""`` if unknown."""
    import shutil

    probe = Path(path).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return ""
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if free >= size:
            return f"{free / size:.1f} {unit} free"
    return f"{free} bytes free"


def check_writable(path: Path) -> None:
    """Fail before any work when the output folder cannot be created or written: :class:`PielabError`, one line."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise PielabError(f"{path}: cannot write here, {probe} is a file")
    try:  # a real write: os.access says yes to root even where the filesystem refuses
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise PielabError(f"{path}: cannot write here, {probe} is not writable ({exc.strerror})") from None
