"""The on-disk cache of processed data: built once per machine, shared by every trial on it.

Why this shape:

* An entry is a folder of ``.npy`` arrays plus ``meta.json``, named ``<task>-<key>`` where ``key`` hashes the
  source's identity, every setting that changes the output and :data:`FORMAT_VERSION`. Two configs that
  would produce the same arrays share one entry; anything else gets its own.
* Building runs under a :class:`filelock.FileLock` (one per entry) and writes into a temporary sibling
  folder that is renamed into place with :func:`os.replace`, so readers never see a half-written entry and
  a crash leaves at most a stale temporary folder (removed by the next build). Many trials starting at once
  on one node build the entry once; the others wait for the lock and then read it.
* Arrays are opened with ``np.load(mmap_mode="c")``: copy-on-write mappings of the same page-cache pages,
  so N trial processes on a node hold one copy of the data, and the arrays are writable from numpy's point
  of view (``torch.from_numpy`` then has nothing to warn about) while writes, if any, stay private to the
  process and never reach the file.
* The splits a config selects (holdout, ``train_size``, ``test_size`` subsets) are written the same way,
  once, into ``<entry>/subsets/<hash of the rows>/`` and memory-mapped too (``Task._subsets`` in
  ``base.py``): a subset taken by indexing would be a private copy in every trial process.
* Every :func:`~pielab.data.prepare` touches ``last_used`` in the entry and in the subset it opens: its
  mtime is the folder's last use (atime is unreliable: ``noatime``/``relatime`` mounts), which
  ``pielab cache --prune`` compares with ``--older-than``. Pruning takes the same lock as building, so an
  entry being built is never removed.
* A local source file is identified by a SHA-256 of its content, computed once and memoised by
  (path, size, mtime, inode): renaming or touching a file does not silently reuse stale data, and hashing
  47 MB on every trial start is avoided.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from filelock import FileLock, Timeout

from pielab.errors import DataError
from pielab.files import json_text, write_atomic

log = logging.getLogger("pielab.data")

#: Bump when the processing of any task changes in a way that changes the cached arrays.
FORMAT_VERSION = 1

_META = "meta.json"
LAST_USED = "last_used"
_ENTRY_RE = re.compile(r"^([a-z0-9_]+)-[0-9a-f]{16}$")
_SUBSETS = "subsets"
#: Default wait for another process's build of the same cache entry (``PIELAB_CACHE_LOCK_TIMEOUT``).
LOCK_TIMEOUT_S = 600.0


def cache_root(cache_dir: str | None, *, create: bool = True) -> Path:
    """``data.cache_dir``, else ``$PIELAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/pielab`` or ``~/.cache/pielab``.

    Created unless ``create`` is False; raises :class:`DataError` when it cannot be."""
    if cache_dir:
        root = Path(cache_dir)
    elif os.environ.get("PIELAB_CACHE_DIR"):
        root = Path(os.environ["PIELAB_CACHE_DIR"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pielab"
    root = root.expanduser()
    if not create:
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data cache folder {root} ({exc.strerror or exc}); "
                        "set data.cache_dir or PIELAB_CACHE_DIR to a writable folder") from None
    return root


# --------------------------------------------------------------------------- source identity


def file_digest(path: Path, root: Path) -> str:
    """SHA-256 of a file's content, memoised under ``root/fingerprints`` by (path, size, mtime, inode)."""
    path = path.resolve()
    st = path.stat()
    stamp = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    memo = root / "fingerprints" / (hashlib.sha1(stamp.encode()).hexdigest() + ".sha256")
    try:
        digest = memo.read_text().strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    try:  # best effort: a read-only cache folder still serves the entries it holds
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, digest + "\n", fsync=True)
    except OSError:
        pass
    return digest


def dir_digest(path: Path) -> str:
    """A fingerprint of a folder from its files' relative paths, sizes and mtimes (hashing 50k files would be slow)."""
    h = hashlib.sha256(str(path.resolve()).encode())
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def entry_name(task: str, source_id: str, settings: dict[str, Any]) -> str:
    """``<task>-<16 hex>`` from the source identity, the output-affecting settings and the format version."""
    blob = json.dumps({"format": FORMAT_VERSION, "task": task, "source": source_id, "settings": settings},
                      sort_keys=True)
    return f"{task}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


# --------------------------------------------------------------------------- build once, read many


def lock_path(entry: Path) -> Path:
    """The lock file that guards building ``entry`` (a sibling, so it survives the entry's atomic rename)."""
    return entry.with_name(entry.name + ".lock")


def is_complete(entry: Path) -> bool:
    return (entry / _META).is_file()


def get_or_build(entry: Path, build: Callable[[Path], dict[str, Any]], what: str) -> bool:
    """Make sure ``entry`` exists; return True when this call built it, False when it was already there.

    ``build(tmp_dir)`` writes the arrays into ``tmp_dir`` (with :func:`save_array`) and returns the metadata
    to store; the folder then replaces ``entry`` atomically. Only one process builds a given entry at a time.
    """
    if is_complete(entry):
        return False
    lock = FileLock(str(lock_path(entry)))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _wait_for(lock, entry, what)
    except OSError as exc:
        raise DataError(f"cannot lock the data cache {entry} ({exc.strerror or exc}); "
                        "set data.cache_dir or PIELAB_CACHE_DIR to a writable folder") from None
    holder = holder_path(entry)
    try:
        write_atomic(holder, json_text({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    except OSError:
        pass  # best effort: waiters then say only that another process builds it
    try:
        if is_complete(entry):  # built by whoever held the lock before us
            return False
        for stale in entry.parent.glob(f".tmp-{entry.name}-*"):  # left by a crashed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if entry.exists():  # an incomplete folder (not ours: ours only appear by rename); rebuild it
            shutil.rmtree(entry)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
        try:
            log.info("building the %s cache %s (once per machine)", what, entry)
            start = time.perf_counter()
            meta = build(tmp)
            meta = {**meta, "format": FORMAT_VERSION, "build_s": round(time.perf_counter() - start, 3),
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "built_by_pid": os.getpid()}
            write_atomic(tmp / _META, json_text(meta), fsync=True)  # strict JSON, durable before the rename
            _fsync_dir(tmp)
            os.replace(tmp, entry)
            _fsync_dir(entry.parent)
            log.info("built the %s cache in %.1f s", what, meta["build_s"])
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True
    finally:
        try:
            holder.unlink(missing_ok=True)
        except OSError:
            pass
        lock.release()


def holder_path(entry: Path) -> Path:
    """Who builds ``entry`` now: ``{pid, host, what, since}`` as JSON, written by the lock's holder
    once it holds the lock and removed before it lets go (a sibling of the lock file, which the lock
    library owns)."""
    return entry.with_name(entry.name + ".lock.holder")


def lock_timeout_s() -> float:
    """How long a process waits for another one building the same cache entry: ``PIELAB_CACHE_LOCK_TIMEOUT``
    seconds (default :data:`LOCK_TIMEOUT_S`, 10 minutes; building the real datasets takes about a minute).
    A stopped holder (Ctrl-Z) keeps the lock; the waiter then gives up with an error instead of waiting forever."""
    raw = os.environ.get("PIELAB_CACHE_LOCK_TIMEOUT", "").strip()
    if not raw:
        return LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and value != float("inf")):
        raise DataError(f"PIELAB_CACHE_LOCK_TIMEOUT={raw}: expected seconds, a finite number >= 0")
    return value


def _holder(entry: Path) -> dict[str, Any]:
    try:
        found = json.loads(holder_path(entry).read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def _process_state(pid: Any) -> str | None:
    """``stopped`` or ``gone`` for a process of this machine, else None (running, or not knowable)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    except (OSError, ValueError, TypeError):
        return None
    state = stat.rpartition(")")[2].split()[:1]
    return "stopped" if state and state[0] in ("T", "t") else None


def _wait_for(lock: FileLock, entry: Path, what: str) -> None:
    """Wait for another process's build of ``entry``: one line when waiting starts, an error after the timeout."""
    timeout = lock_timeout_s()
    # The holder writes its file just after taking the lock: a moment's grace to read it.
    deadline = time.monotonic() + min(1.0, timeout)
    holder = _holder(entry)
    while not holder and time.monotonic() < deadline:
        time.sleep(0.05)
        holder = _holder(entry)
    who = "another process"
    if holder.get("pid") is not None:
        who += f" (pid {holder['pid']} on {holder.get('host', '?')}"
        if holder.get("host") == socket.gethostname() and _process_state(holder["pid"]) == "stopped":
            who += f", stopped: `kill -CONT {holder['pid']}` resumes it"
        who += ")"
    print(f"pielab: waiting for {who} to finish building the {what} cache {entry}; giving up after "
          f"{timeout:g} s (PIELAB_CACHE_LOCK_TIMEOUT)", file=sys.stderr, flush=True)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise DataError(f"gave up after {timeout:g} s waiting for {who} to finish building the {what} cache "
                        f"{entry}; end it if it is stuck, or set PIELAB_CACHE_LOCK_TIMEOUT=SECONDS to wait "
                        "longer") from None


def mark_used(folder: Path) -> None:
    """Touch ``folder/last_used``: its mtime is when ``folder`` (an entry or a subset) was last opened."""
    try:
        (folder / LAST_USED).touch()
    except OSError:
        pass  # a read-only cache still serves the entries it holds


def save_array(folder: Path, name: str, array: np.ndarray) -> None:
    """Write ``name.npy`` durably (fsync), so the rename that publishes the entry never exposes torn files."""
    with open(folder / f"{name}.npy", "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def read_meta(entry: Path) -> dict[str, Any]:
    try:
        return json.loads((entry / _META).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"data cache {entry} is unreadable ({exc}); delete that folder to rebuild it") from None


def load_array(entry: Path, name: str) -> torch.Tensor:
    """A CPU tensor over a copy-on-write memory map of ``entry/name.npy`` (shared pages, no copy)."""
    path = entry / f"{name}.npy"
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"data cache file {path} is unreadable ({exc}); delete {entry} to rebuild it") from None
    return torch.from_numpy(array)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- inventory and pruning


@dataclass
class CacheItem:
    """One folder of the cache: an entry (``cifar10-<key>``), a subset under it, or an unfinished build.

    ``name`` is relative to the cache root; ``size`` is the bytes of its files (an entry's includes its
    subsets); ``last_used`` is a Unix time (the ``last_used`` stamp's mtime, else when it was built, else
    the folder's mtime); ``state`` is ``ready``, ``building`` (its lock is held now) or ``incomplete``
    (a crashed build's leftovers).
    """

    path: Path
    name: str
    task: str
    kind: str  # "entry" or "subset"
    size: int
    last_used: float
    state: str


def folder_size(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass  # removed while we looked
    return total


def _last_used(folder: Path) -> float:
    for probe in (folder / LAST_USED, folder / _META, folder):
        try:
            return probe.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _locked(lock_file: Path) -> bool:
    """Whether another process holds the build lock (taking it for an instant when it is free)."""
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False  # cannot even create the lock file: nobody can be building here either
    lock.release()
    return False


def _folders(parent: Path, pattern: re.Pattern[str] | None) -> Iterator[Path]:
    try:
        children = sorted(parent.iterdir())
    except OSError:
        return
    for child in children:
        if child.is_dir() and not child.is_symlink() and (pattern is None or pattern.match(child.name)):
            yield child


def inventory(root: Path) -> list[CacheItem]:
    """Every entry under ``root``, each followed by its subsets, then unfinished entry builds (``.tmp-*``).

    The raw downloads (``raw/``) and source fingerprints (``fingerprints/``) are not entries: they are
    the sources themselves and a few bytes per file.
    """
    items: list[CacheItem] = []
    for entry in _folders(root, _ENTRY_RE):
        task = _ENTRY_RE.match(entry.name).group(1)
        items.append(_item(entry, entry.name, task, "entry"))
        for sub in _folders(entry / _SUBSETS, None):
            items.append(_item(sub, f"{entry.name}/{_SUBSETS}/{sub.name}", task, "subset"))
    for tmp in _folders(root, re.compile(r"^\.tmp-")):
        match = _ENTRY_RE.match(_build_target(tmp).name)
        items.append(_item(tmp, tmp.name, match.group(1) if match else "?", "entry"))
    return items


def _item(path: Path, name: str, task: str, kind: str) -> CacheItem:
    if not path.name.startswith(".tmp-") and is_complete(path):
        state = "ready"
    else:
        state = "building" if _locked(lock_path(_build_target(path))) else "incomplete"
    return CacheItem(path, name, task, kind, folder_size(path), _last_used(path), state)


def _build_target(path: Path) -> Path:
    """The folder whose lock guards ``path``: itself, or for a build folder ``.tmp-<target>-<random>``
    (what ``tempfile.mkdtemp`` made in :func:`get_or_build`) that ``<target>``."""
    if path.name.startswith(".tmp-"):
        return path.with_name(path.name[len(".tmp-"):].rsplit("-", 1)[0])
    return path


def _remove_unlocked(item: CacheItem) -> bool:
    """Remove ``item`` while holding its build lock; False when someone else holds it (a build)."""
    lock = FileLock(str(lock_path(_build_target(item.path))))
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return False
    try:
        if not item.path.exists():
            return False
        item.size = folder_size(item.path)
        shutil.rmtree(item.path)
        return True
    finally:
        lock.release()


def prune(root: Path, *, older_than_s: float, keep: set[str] = frozenset(), now: float | None = None) -> list[CacheItem]:
    """Remove the entries and subsets of ``root`` last used more than ``older_than_s`` seconds ago.

    Never removes a folder in ``keep`` (names as :func:`inventory` gives them; keeping a subset keeps
    its entry), a folder whose build lock another process holds (being built), an entry with a subset
    being built, or a lock file (a process waiting on a lock must find the same file). Each folder is
    removed while this process holds its build lock. Unfinished builds whose lock is free are leftovers
    of a crash; they go by the same age rule (their folder's mtime). Returns what was removed.
    """
    cutoff = (time.time() if now is None else now) - older_than_s
    kept_entries = {name.split("/", 1)[0] for name in keep}
    items = inventory(root)
    subsets: dict[str, list[CacheItem]] = {}
    for item in items:
        if item.kind == "subset":
            subsets.setdefault(item.name.split("/", 1)[0], []).append(item)
    removed: list[CacheItem] = []
    for item in items:
        if item.kind != "entry" or item.state == "building":
            continue
        children = subsets.get(item.name, [])
        if (item.last_used < cutoff and item.name not in kept_entries
                and not any(_locked(lock_path(_build_target(c.path))) for c in children)):
            if _remove_unlocked(item):
                removed.append(item)
            continue
        for sub in children:  # the entry stays: its subsets one by one
            if sub.state != "building" and sub.last_used < cutoff and sub.name not in keep and _remove_unlocked(sub):
                removed.append(sub)
    return removed
