"""Where a sweep folder lives: a local (or NFS) folder, or a prefix on object storage.

``storage.path`` and every command that takes ``SWEEP_DIR`` accept a local path or a URI:

* ``s3://BUCKET/PREFIX``: Amazon S3, or an S3-compatible store (MinIO, Ceph, SeaweedFS) at
  ``storage.endpoint`` / ``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL`` (``http://127.0.0.1:9000``).
  Region from ``$AWS_REGION`` / ``$AWS_DEFAULT_REGION``; credentials from the AWS SDK's own chain
  (``$AWS_ACCESS_KEY_ID`` + ``$AWS_SECRET_ACCESS_KEY`` [+ ``$AWS_SESSION_TOKEN``], ``~/.aws``, an
  instance role).
* ``gs://BUCKET/PREFIX``: Google Cloud Storage (credentials: ``$GOOGLE_APPLICATION_CREDENTIALS`` or the
  machine's service account), or a storage emulator at ``$STORAGE_EMULATOR_HOST`` (``http://HOST:PORT``,
  Google's own variable; anonymous).

:func:`location` turns such a string into a :class:`pathlib.Path` (local) or an :class:`ObjectPath`
(remote): a small path object with the part of pathlib's interface the sweep folder uses (``/``,
``name``, ``exists``, ``is_dir``, ``is_file``, ``iterdir``, ``read_text``, ``mkdir``...) on a
``pyarrow.fs`` filesystem, so :mod:`pielab.folder` reads and writes both the same way.
:func:`write_atomic` / :func:`read_text` are the folder's two I/O operations: write-then-rename on a
local folder, one PUT on object storage (an object appears whole or not at all, so readers never see
half a file either way). The sweep's driver writes its files to object storage from a background
thread (:class:`WriteBehind`).

**No credential is ever stored**: the filesystem is built without explicit keys (the SDK reads them
from the environment on each machine), and an :class:`ObjectPath` pickles as its URI and endpoint
only, so Tune's pickles, sweep.yaml and status.json hold no secret. Trial workers on other nodes need
the same variables (Ray's ``runtime_env`` or the nodes' own environment).

Ray-free: ``pielab status``, ``report`` and ``export`` use it without Ray.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Union

from pielab import files
from pielab.errors import PielabError

REMOTE_SCHEMES = ("s3", "gs")
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
GCS_EMULATOR_VAR = "STORAGE_EMULATOR_HOST"  # Google's client libraries' variable for a storage emulator


def is_remote(text: Any) -> bool:
    """Whether ``text`` names object storage (``s3://`` or ``gs://``), or is an :class:`ObjectPath`."""
    if isinstance(text, ObjectPath):
        return True
    return isinstance(text, str) and text.split("://", 1)[0].lower() in REMOTE_SCHEMES and "://" in text


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("s3", "bucket/a/b")``.

    Raises:
        PielabError: not ``s3://`` or ``gs://``, or no bucket.
    """
    scheme, sep, rest = str(uri).partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in REMOTE_SCHEMES:
        raise PielabError(f"{uri}: not an object-storage URI (s3://BUCKET/PREFIX or gs://BUCKET/PREFIX)")
    path = posixpath.normpath("/" + rest).strip("/") if rest.strip("/") else ""
    if not path or "?" in rest or "#" in rest:
        raise PielabError(f"{uri}: expected {scheme}://BUCKET/PREFIX (a bucket, no query)")
    return scheme, path


def endpoint_from_env() -> str | None:
    """The S3 endpoint the AWS variables name (``$AWS_ENDPOINT_URL_S3``, then ``$AWS_ENDPOINT_URL``)."""
    for var in ENDPOINT_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def check_endpoint(endpoint: str) -> str | None:
    """None when ``endpoint`` is a usable URL (``http://host:port`` or ``https://host``), else why not."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("http", "https") or not rest.strip("/") or "@" in rest:
        return "expected http://HOST:PORT or https://HOST (an S3-compatible server; no credentials in it)"
    return None


def filesystem(scheme: str, endpoint: str | None = None):
    """A ``pyarrow.fs`` filesystem for ``scheme`` (``s3`` or ``gs``), with no credential in it.

    ``endpoint``: an S3-compatible server (``http://127.0.0.1:9000``); default ``$AWS_ENDPOINT_URL_S3``
    / ``$AWS_ENDPOINT_URL``, else Amazon S3.
    """
    from pyarrow import fs

    if scheme == "gs":
        emulator = os.environ.get(GCS_EMULATOR_VAR)
        if emulator:  # a storage emulator (tests): no credentials at all
            url_scheme, sep, rest = emulator.partition("://")
            url_scheme, rest = (url_scheme, rest) if sep else ("http", emulator)
            return fs.GcsFileSystem(anonymous=True, scheme=url_scheme, endpoint_override=rest.rstrip("/"))
        return fs.GcsFileSystem()
    endpoint = endpoint or endpoint_from_env()
    kwargs: dict[str, Any] = {}
    region = next((os.environ[v] for v in REGION_VARS if os.environ.get(v)), None)
    if endpoint:
        problem = check_endpoint(endpoint)
        if problem:
            raise PielabError(f"S3 endpoint {endpoint!r}: {problem}")
        url_scheme, _, rest = endpoint.partition("://")
        kwargs.update(endpoint_override=rest.rstrip("/"), scheme=url_scheme)
        region = region or "us-east-1"  # S3-compatible servers ignore it; the SDK wants one
    if region:
        kwargs["region"] = region
    # No access_key/secret_key: the AWS SDK's default chain reads them on each machine, and the
    # filesystem (pickled by Tune into its state and to every trial) carries none.
    return fs.S3FileSystem(**kwargs)


_FILESYSTEMS: dict[tuple[str, str | None], Any] = {}


def _cached_filesystem(scheme: str, endpoint: str | None):
    key = (scheme, endpoint)
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = filesystem(scheme, endpoint)
    return _FILESYSTEMS[key]


class ObjectPath:
    """A path on object storage with the part of :class:`pathlib.Path`'s interface the sweep folder uses.

    ``str()`` is the URI (``s3://bucket/prefix/name``); :attr:`fs` and :attr:`fs_path` are the
    ``pyarrow.fs`` filesystem and the path on it (``bucket/prefix/name``). Pickles as URI + endpoint.
    Errors are ``OSError`` (``FileNotFoundError`` for a missing object), as pathlib raises them.
    """

    __slots__ = ("scheme", "fs_path", "endpoint", "_fs", "_kind")

    def __init__(self, uri: str, endpoint: str | None = None, *, _fs: Any = None, _kind: str | None = None) -> None:
        self.scheme, self.fs_path = split_uri(uri)
        self.endpoint = endpoint if self.scheme == "s3" else None
        self._fs = _fs
        self._kind = _kind  # "dir" / "file" from the listing that found it (saves a request per child)

    # ------------------------------------------------------------------ naming

    @property
    def fs(self):
        if self._fs is None:
            self._fs = _cached_filesystem(self.scheme, self.endpoint)
        return self._fs

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.fs_path}"

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"ObjectPath({self.uri!r})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ObjectPath) and (self.uri, self.endpoint) == (other.uri, other.endpoint)

    def __hash__(self) -> int:
        return hash((self.uri, self.endpoint))

    def __reduce__(self):
        return (ObjectPath, (self.uri, self.endpoint))  # never the filesystem (nor what it was built from)

    def _child(self, name: str, kind: str | None = None) -> "ObjectPath":
        return ObjectPath(f"{self.uri}/{name}", self.endpoint, _fs=self._fs, _kind=kind)

    def __truediv__(self, name: Union[str, os.PathLike]) -> "ObjectPath":
        name = str(name).strip("/")
        return self._child(name) if name else self

    @property
    def name(self) -> str:
        return posixpath.basename(self.fs_path)

    @property
    def parent(self) -> "ObjectPath":
        head = posixpath.dirname(self.fs_path)
        return ObjectPath(f"{self.scheme}://{head}", self.endpoint, _fs=self._fs) if head else self

    def with_name(self, name: str) -> "ObjectPath":
        return self.parent / name

    def resolve(self) -> "ObjectPath":
        return self

    def expanduser(self) -> "ObjectPath":
        return self

    # ------------------------------------------------------------------ asking

    def _type(self):
        from pyarrow import fs

        return self.fs.get_file_info(self.fs_path).type, fs.FileType

    def exists(self) -> bool:
        kind, types = self._type()
        return kind != types.NotFound

    def is_dir(self) -> bool:
        if self._kind is not None:
            return self._kind == "dir"
        kind, types = self._type()
        return kind == types.Directory

    def is_file(self) -> bool:
        if self._kind is not None:
            return self._kind == "file"
        kind, types = self._type()
        return kind == types.File

    def iterdir(self) -> Iterator["ObjectPath"]:
        """The children (one listing request); none for a missing prefix."""
        from pyarrow import fs

        infos = self.fs.get_file_info(fs.FileSelector(self.fs_path, allow_not_found=True))
        for info in sorted(infos, key=lambda i: i.path):
            kind = "dir" if info.type == fs.FileType.Directory else "file"
            yield self._child(posixpath.basename(info.path), kind)

    def glob(self, pattern: str) -> Iterator["ObjectPath"]:
        import fnmatch

        if "/" in pattern:
            raise ValueError(f"ObjectPath.glob takes one path component, got {pattern!r}")
        return (p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern))

    # ------------------------------------------------------------------ reading and writing

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.fs_path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """One PUT: the object appears whole, or the old one stays."""
        with self.fs.open_output_stream(self.fs_path) as f:
            f.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Object stores have no folders; the bucket must exist (checked here, one line if not)."""
        bucket = self.fs_path.split("/", 1)[0]
        kind, types = ObjectPath(f"{self.scheme}://{bucket}", self.endpoint, _fs=self._fs)._type()
        if kind != types.Directory:
            raise FileNotFoundError(f"bucket {bucket!r} does not exist (or these credentials cannot see it)")
        self.fs.create_dir(self.fs_path, recursive=True)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        """Delete everything under this prefix (and the prefix itself)."""
        try:
            self.fs.delete_dir(self.fs_path)
        except FileNotFoundError:
            pass


SweepPath = Union[Path, ObjectPath]


def location(text: Union[str, os.PathLike, ObjectPath], endpoint: str | None = None) -> SweepPath:
    """A local path (``~`` expanded, made absolute) or an :class:`ObjectPath` for a URI.

    ``endpoint`` applies to ``s3://`` only; default ``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL``.
    Raises PielabError for a malformed URI.
    """
    if isinstance(text, ObjectPath):
        return text
    if isinstance(text, Path):
        return text.expanduser().resolve()
    text = str(text)
    if is_remote(text):
        return ObjectPath(text, endpoint or endpoint_from_env())
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme and scheme.group(1).lower() != "file":
        scheme = scheme.group(1)
        raise PielabError(f"{text}: {scheme}:// storage is not supported; use a local or NFS folder, "
                          "s3://BUCKET/PREFIX or gs://BUCKET/PREFIX")
    if text.startswith("file://"):
        text = text[len("file://"):]
    return Path(text).expanduser().resolve()


def tune_storage(sweep_dir: SweepPath) -> tuple[str, Any]:
    """Tune's ``(storage_path, storage_filesystem)`` for a sweep folder: the local path and None, or
    the path on the object store (``bucket/prefix/sweep``) and its filesystem."""
    if isinstance(sweep_dir, ObjectPath):
        return sweep_dir.fs_path, sweep_dir.fs
    return Path(sweep_dir).as_posix(), None


def local_dir(sweep_dir: SweepPath) -> Path:
    """Where a sweep's local outputs go by default (``pielab report``'s ``report/``, ``pielab export``'s
    ``best_configs.yaml``, offline W&B runs): the sweep folder itself when it is local, else a folder
    named after it in the current directory (``s3://b/p/SWEEP`` -> ``./SWEEP``)."""
    return Path.cwd() / sweep_dir.name if isinstance(sweep_dir, ObjectPath) else Path(sweep_dir)


def remove_tree(path: SweepPath) -> None:
    """Delete a folder (or a prefix on object storage) and everything in it; missing is fine."""
    if isinstance(path, ObjectPath):
        path.rmtree()
    else:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the folder's I/O


def write_atomic(path: Union[str, os.PathLike, ObjectPath], data: str | bytes | Callable[[Path], None]) -> None:
    """Write a file of a sweep folder so a reader sees the old or the new version, never half of one:
    write-then-rename locally (:func:`pielab.files.write_atomic`), one PUT on object storage."""
    if not isinstance(path, ObjectPath):
        files.write_atomic(path, data)
        return
    if callable(data):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pielab-put-") as tmp:
            staged = Path(tmp) / path.name
            data(staged)
            data = staged.read_bytes()
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def read_text(path: Union[str, os.PathLike, ObjectPath]) -> str | None:
    """The file's text, or None when it is missing or unreadable."""
    try:
        return path.read_text() if isinstance(path, ObjectPath) else Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def write_json(path: Union[str, os.PathLike, ObjectPath], data: Any) -> None:
    """Strict JSON (:func:`pielab.files.json_text`), written by :func:`write_atomic`."""
    write_atomic(path, files.json_text(data))


def read_json(path: Union[str, os.PathLike, ObjectPath]) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    import json

    text = read_text(path)
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- writing behind, on object storage


class WriteBehind:
    """Writes a sweep folder's files from one background thread when the folder is on object storage,
    so a PUT (~10 ms, more on a real store) never holds up Tune's controller (which a trial's next
    epoch waits for). The newest version of each file wins: a file rewritten while its last PUT is
    still queued is written once. A local folder is written at once (:func:`write_atomic`).

    What is not yet written when the driver is killed is lost; :meth:`flush` bounds that. The
    recorder flushes before every experiment snapshot Tune takes (so a snapshot never names more than
    the folder holds), when a trial ends and when the sweep ends (also by a signal).

    A failed PUT is kept and retried (the newest version of that file); :meth:`flush` raises the
    error when the queue has not drained after ``timeout_s``.
    """

    RETRY_S = 1.0

    def __init__(self) -> None:
        import threading

        self._pending: dict[str, tuple[Any, Any]] = {}  # uri -> (ObjectPath, data), in first-queued order
        self._cond = threading.Condition()
        self._busy = False
        self._thread = None
        self.error: BaseException | None = None
        self.writes = 0  # PUTs done (what coalescing saves shows against the number of put calls)

    def put(self, path: Union[str, os.PathLike, ObjectPath], data: str | bytes) -> None:
        """Write ``data`` to ``path``: at once for a local path, queued for object storage."""
        if not isinstance(path, ObjectPath):
            write_atomic(path, data)
            return
        import threading

        with self._cond:
            self._pending.pop(path.uri, None)  # re-queue at the end: older files go first
            self._pending[path.uri] = (path, data)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pielab-write-behind", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        import time

        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                uri = next(iter(self._pending))
                path, data = self._pending.pop(uri)
                self._busy = True
            try:
                write_atomic(path, data)
                failed = None
            except Exception as exc:  # noqa: BLE001 - kept and retried; flush() reports it
                failed = exc
            with self._cond:
                self._busy = False
                if failed is None:
                    self.writes += 1
                    self.error = None
                else:
                    self.error = failed
                    self._pending.setdefault(uri, (path, data))  # unless a newer version came meanwhile
                self._cond.notify_all()
            if failed is not None:
                time.sleep(self.RETRY_S)

    def flush(self, timeout_s: float = 120.0) -> None:
        """Wait until every queued file is written.

        Raises:
            OSError: the queue did not drain within ``timeout_s`` (the last write error, if any).
        """
        import time

        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OSError(f"{len(self._pending)} sweep-folder files not written to object storage "
                                  f"after {timeout_s:g} s: {self.error or 'no answer'}")
                self._cond.wait(min(left, 1.0))
