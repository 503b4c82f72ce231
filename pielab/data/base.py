"""What both tasks share: finding the source, the cached-prepare pipeline, seeded stratified splits, the loader.

A task (:class:`Task` subclass in ``cifar10.py`` / ``imdb.py``) only says how to read its sources, how to turn
them into arrays, which settings change those arrays, and what one batch looks like. Everything that must
behave the same for both tasks (source precedence, caching, holdout, subsets, epoch seeding) lives here once.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch

from pielab.config import DataConfig
from pielab.data import cache
from pielab.errors import DataError
from pielab.text import one_line  # noqa: F401  (the data modules import it from here)

log = logging.getLogger("pielab.data")

SPLITS = ("train", "val", "test")
_MASK64 = (1 << 64) - 1
# Seed streams: the holdout, the train subset and the test subset are drawn independently, so changing
# train_size never moves the validation set, and changing test_size never moves either of them.
_STREAM_VAL, _STREAM_TRAIN, _STREAM_TEST = 0, 1, 2


@dataclass
class Prepared:
    """Processed, split data for one task: CPU tensors memory-mapped from the on-disk cache.

    ``train``/``val``/``test`` are tuples whose last element is the int64 labels: CIFAR-10
    ``(uint8 images N x 3 x 32 x 32, labels)``, IMDB ``(int64 tokens N x max_len, int64 lengths, labels)``.
    ``model_kwargs`` are the builder arguments the data decides (classes, vocabulary size, pad id).
    """

    task: str
    train: tuple[torch.Tensor, ...]
    val: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    model_kwargs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> tuple[torch.Tensor, ...]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits: {', '.join(SPLITS)}")
        return getattr(self, name)


@dataclass(frozen=True)
class Source:
    """Where a task's raw data comes from.

    ``kind`` is ``file`` or ``dir`` (local, identified by content) or ``download`` (a fixed public dataset,
    identified by name, whose raw copy lives at ``path`` under the cache once fetched). ``context`` says why
    no local source was used; it goes into the error message when the download fails.
    """

    kind: str
    path: Path
    description: str
    identity: str = ""
    context: str = ""


# --------------------------------------------------------------------------- stratified, seeded splits


def stratified_take(labels: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices drawn from ``pool`` (indices into ``labels``) keeping the class proportions; sorted.

    Per-class counts follow the largest-remainder rule (ties to the lower class id) so they sum to ``n``
    exactly; members of each class are drawn by a permutation from ``rng``, classes in ascending order.
    """
    pool_labels = labels[pool]
    classes, counts = np.unique(pool_labels, return_counts=True)
    quotas = n * counts / counts.sum()
    take = np.floor(quotas).astype(np.int64)
    short = n - int(take.sum())
    if short:
        order = sorted(range(len(classes)), key=lambda i: (-(quotas[i] - take[i]), i))
        for i in order[:short]:
            take[i] += 1
    picked = [rng.permutation(pool[pool_labels == c])[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


def split_indices(train_labels: np.ndarray, test_labels: np.ndarray, cfg: DataConfig) -> dict[str, np.ndarray | None]:
    """Indices of the validation holdout, the training subset and the test subset (``None`` = all of it).

    The holdout depends only on (split_seed, validation size): every trial of a sweep and every
    ``train_size`` sees the same validation set. The test split is only subset, never used for selection.
    """
    n_train, n_test = len(train_labels), len(test_labels)
    n_val = cfg.val_size if cfg.val_size is not None else int(round(cfg.val_fraction * n_train))
    if not 1 <= n_val < n_train:
        what = f"data.val_size={cfg.val_size}" if cfg.val_size is not None else f"data.val_fraction={cfg.val_fraction}"
        raise DataError(f"{what} gives {n_val} validation examples; the training split has {n_train}, "
                        "so it must give between 1 and that minus one")
    seed = cfg.split_seed & _MASK64
    everything = np.arange(n_train)
    val = stratified_take(train_labels, everything, n_val, np.random.default_rng([seed, _STREAM_VAL]))
    rest = np.setdiff1d(everything, val, assume_unique=True)
    train: np.ndarray | None = rest
    if cfg.train_size is not None and cfg.train_size != len(rest):
        if cfg.train_size > len(rest):
            raise DataError(f"data.train_size={cfg.train_size} is more than the {len(rest)} training examples "
                            f"left after the {n_val}-example validation holdout")
        train = stratified_take(train_labels, rest, cfg.train_size, np.random.default_rng([seed, _STREAM_TRAIN]))
    test: np.ndarray | None = None
    if cfg.test_size is not None and cfg.test_size != n_test:
        if cfg.test_size > n_test:
            raise DataError(f"data.test_size={cfg.test_size} is more than the {n_test} test examples")
        test = stratified_take(test_labels, np.arange(n_test), cfg.test_size, np.random.default_rng([seed, _STREAM_TEST]))
    return {"train": train, "val": val, "test": test}


def _select(tensors: tuple[torch.Tensor, ...], idx: np.ndarray | None) -> tuple[torch.Tensor, ...]:
    """Rows ``idx`` of every tensor (a copy); ``None`` keeps the memory-mapped tensors themselves."""
    if idx is None:
        return tensors
    index = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64))
    return tuple(t.index_select(0, index) for t in tensors)


def subset_name(idx: dict[str, np.ndarray | None]) -> str:
    """A subset folder's name: a hash of the row indices of every split (``None`` = the whole split).

    Keyed by the rows themselves, not by the settings that chose them, so it can never disagree with
    :func:`split_indices`: any change to how splits are drawn simply names a new folder.
    """
    h = hashlib.sha256()
    for split in SPLITS:
        rows = idx[split]
        h.update(f"{split}:{'all' if rows is None else len(rows)}:".encode())
        if rows is not None:
            h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- downloads


def offline_reason(*env_vars: str) -> str | None:
    """Why downloading is switched off, if it is: ``PIELAB_OFFLINE`` (and a task's own switches) set truthy."""
    for var in ("PIELAB_OFFLINE", *env_vars):
        value = os.environ.get(var, "")
        if value.strip().lower() not in ("", "0", "false", "no", "off"):
            return f"downloads are off: {var}={value}"
    return None


def check_reachable(url: str, timeout: float = 10.0) -> None:
    """Fail within ``timeout`` seconds when ``url``'s host cannot be reached.

    Download libraries retry with back-off (Hugging Face spends about 25 s before giving up) or have no
    timeout at all (torchvision); one short probe makes an offline machine fail at once. Any HTTP answer,
    even an error status, means the network works. Proxies from the environment are honoured.
    """
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"cannot reach {url}: {reason}") from None



# --------------------------------------------------------------------------- the task pipeline


class Task:
    """One dataset: its sources, its processing into cached arrays and its loader.

    Subclasses set the class attributes and implement :meth:`build`, :meth:`model_kwargs` and
    :meth:`download_source`; :meth:`prepare` is the same for every task.
    """

    name: ClassVar[str]  # the config's task name, e.g. "cifar10"
    label: ClassVar[str]  # for messages, e.g. "CIFAR-10"
    fields: ClassVar[tuple[str, ...]]  # cached arrays per split; the last one is the labels
    local_names: ClassVar[tuple[str, ...]]  # looked for in $PIELAB_DATA_DIR or a data.path folder ("x/" = folder)
    file_suffixes: ClassVar[tuple[str, ...]]  # accepted data.path files
    path_hint: ClassVar[str]  # "FILE.npz", for the error message
    loader_cls: ClassVar[type["Loader"]]

    # -- to implement

    def settings(self, cfg: DataConfig) -> dict[str, Any]:
        """The settings that change the cached arrays (they are part of the cache key)."""
        return {}

    def download_source(self, root: Path, context: str) -> Source:
        raise NotImplementedError

    def is_native_dir(self, path: Path) -> bool:
        """Whether ``path`` is the dataset's own folder format (e.g. ``cifar-10-batches-py``)."""
        return False

    def build(self, source: Source, cfg: DataConfig, root: Path, out: Path) -> dict[str, Any]:
        """Read ``source``, write ``{split}_{field}`` arrays for train and test into ``out``; return metadata."""
        raise NotImplementedError

    def model_kwargs(self, meta: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared

    def find_source(self, cfg: DataConfig, root: Path) -> Source:
        """``data.path`` (a file or a folder), else ``$PIELAB_DATA_DIR``, else the real download."""
        if cfg.path:
            path = Path(cfg.path).expanduser()
            if not path.exists():
                raise DataError(f"data.path {path} does not exist (expected a {self.label} "
                                f"{' or '.join(self.file_suffixes)} file or a folder holding {self._names()})")
            if path.is_dir():
                found = self._find_in(path)
                if found is None:
                    raise DataError(f"data.path {path} is a folder holding none of {self._names()}")
                return found
            if not path.name.endswith(self.file_suffixes):
                raise DataError(f"data.path {path}: a {self.label} source must be a "
                                f"{' or '.join(self.file_suffixes)} file (or a folder holding {self._names()})")
            return Source("file", path, f"{self.label} file {path}")
        data_dir = os.environ.get("PIELAB_DATA_DIR")
        if data_dir:
            found = self._find_in(Path(data_dir).expanduser())
            if found is not None:
                return found
            context = f"data.path unset, $PIELAB_DATA_DIR={data_dir} holds none of {self._names()}"
        else:
            context = "data.path unset, $PIELAB_DATA_DIR unset"
        return self.download_source(root, context)

    def download_error(self, source: Source, reason: BaseException | str) -> DataError:
        """The one-line error for 'no local source and the download failed'."""
        return DataError(f"{self.label} not found: {source.context}, and download failed ({one_line(reason)}). "
                         f"Set --set data.path={self.path_hint} or PIELAB_DATA_DIR=DIR holding {self.local_names[0]}")

    def prepare(self, cfg: DataConfig) -> Prepared:
        """Find the source, build or reuse the cache entry, and split it as ``cfg`` says."""
        root = cache.cache_root(cfg.cache_dir)
        source, entry = self._locate(cfg, root)
        built = cache.get_or_build(entry, lambda out: self.build(source, cfg, root, out), self.label)
        cache.mark_used(entry)
        meta = cache.read_meta(entry)
        full = {s: tuple(cache.load_array(entry, f"{s}_{f}") for f in self.fields) for s in ("train", "test")}
        idx = split_indices(full["train"][-1].numpy(), full["test"][-1].numpy(), cfg)
        splits, subset_dir = self._subsets(entry, full, idx)
        meta.update(
            task=self.name,
            source=source.description,
            cache_dir=str(entry),
            cache_key=entry.name,
            cache_hit=not built,
            subset_dir=str(subset_dir) if subset_dir else None,
            subset=subset_name(idx),  # the rows of every split: with cache_key, the identity of what a run sees
            full_sizes={"train": len(full["train"][-1]), "test": len(full["test"][-1])},
            sizes={s: len(t[-1]) for s, t in splits.items()},
            split={"seed": cfg.split_seed, "val_fraction": cfg.val_fraction, "val_size": cfg.val_size,
                   "train_size": cfg.train_size, "test_size": cfg.test_size, "stratified": True},
        )
        return Prepared(task=self.name, model_kwargs=self.model_kwargs(meta), meta=meta, **splits)

    def cache_names(self, cfg: DataConfig, root: Path) -> list[str]:
        """The cache entry, and the subset under it, that :meth:`prepare` would open for ``cfg`` under ``root``.

        Names are relative to ``root`` (``cifar10-<key>``, ``cifar10-<key>/subsets/<hash>``); nothing is
        built. The subset is named only when the entry exists (its labels decide the rows). Raises
        :class:`DataError` when the source cannot be found or the split sizes do not fit it.
        """
        _, entry = self._locate(cfg, root)
        names = [entry.name]
        if cache.is_complete(entry):
            labels = {s: cache.load_array(entry, f"{s}_{self.fields[-1]}").numpy() for s in ("train", "test")}
            idx = split_indices(labels["train"], labels["test"], cfg)
            if any(idx[s] is not None for s in SPLITS):
                names.append(f"{entry.name}/subsets/{subset_name(idx)}")
        return names

    def _locate(self, cfg: DataConfig, root: Path) -> tuple[Source, Path]:
        source = self.find_source(cfg, root)
        return source, root / cache.entry_name(self.name, self._identity(source, root), self.settings(cfg))

    def _subsets(self, entry: Path, full: dict[str, tuple[torch.Tensor, ...]],
                 idx: dict[str, np.ndarray | None]) -> tuple[dict[str, tuple[torch.Tensor, ...]], Path | None]:
        """The three splits as memory-mapped tensors, and the folder holding the subsets (None: none taken).

        A subset taken by indexing is a private copy in every process that takes it: every trial of a
        sweep would hold its own copy of the selected rows (12 MB for the quickstart's 2,000/1,000/1,000
        images, 30 MB for the default 9,000/1,000 split; a GB-scale subset of a real dataset would be
        copied once per concurrent trial). So the rows are written once per machine into
        ``<entry>/subsets/<hash of the rows>/`` (same lock and atomic rename as the entry itself) and
        memory-mapped like the full arrays: the trials on a node then share one copy in the page cache.
        A cache folder that cannot take the subsets (read-only, full) falls back to per-process copies.
        """
        source = {"train": full["train"], "val": full["train"], "test": full["test"]}
        taken = [s for s in SPLITS if idx[s] is not None]
        if not taken:
            return dict(source), None
        folder = entry / "subsets" / subset_name(idx)

        def build(out: Path) -> dict[str, Any]:
            for split in taken:
                for name, tensor in zip(self.fields, _select(source[split], idx[split])):
                    cache.save_array(out, f"{split}_{name}", tensor.numpy())
            return {"sizes": {s: len(idx[s]) for s in taken}}

        try:
            folder.parent.mkdir(exist_ok=True)
            cache.get_or_build(folder, build, f"{self.label} subset")
            cache.mark_used(folder)
            mapped = {s: tuple(cache.load_array(folder, f"{s}_{f}") for f in self.fields) for s in taken}
        except (OSError, DataError) as exc:
            log.warning("cannot cache the split subsets in %s (%s); this process keeps its own copy", folder, exc)
            return {s: _select(source[s], idx[s]) for s in SPLITS}, None
        return {s: mapped.get(s, source[s]) for s in SPLITS}, folder

    def _names(self) -> str:
        return ", ".join(self.local_names)

    def _find_in(self, folder: Path) -> Source | None:
        if self.is_native_dir(folder):
            return Source("dir", folder, f"{self.label} folder {folder}")
        for name in self.local_names:
            path = folder / name.rstrip("/")
            if name.endswith("/") and self.is_native_dir(path):
                return Source("dir", path, f"{self.label} folder {path}")
            if not name.endswith("/") and path.is_file():
                return Source("file", path, f"{self.label} file {path}")
        return None

    def _identity(self, source: Source, root: Path) -> str:
        try:
            if source.kind == "file":
                return "sha256:" + cache.file_digest(source.path, root)
            if source.kind == "dir":
                return "dir:" + cache.dir_digest(source.path)
        except OSError as exc:
            raise DataError(f"cannot read {source.path} ({exc.strerror or exc})") from None
        return source.identity


# --------------------------------------------------------------------------- loaders


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded by (seed, epoch) only: a resumed run sees the same batches, on any device."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    state = np.random.SeedSequence([seed & _MASK64, epoch]).generate_state(2, np.uint32)
    g = torch.Generator()
    g.manual_seed((int(state[0]) << 32) | int(state[1]))
    return g


Selection = slice | torch.Tensor


class Loader:
    """Batches from tensors that live on ``device`` for the whole run (moved there once, as stored).

    Per epoch, the order (when ``shuffle``) and any per-sample augmentation parameters come from one CPU
    generator seeded by ``(seed, epoch)`` and move to the device once; each batch is then pure tensor ops
    on the device. Call :meth:`set_epoch` before iterating each epoch (otherwise every pass repeats the
    same epoch, as with ``DistributedSampler``). The last partial batch is kept.
    """

    supports_augment: ClassVar[bool] = False

    def __init__(self, tensors: tuple[torch.Tensor, ...], *, batch_size: int, shuffle: bool = False,
                 augment: bool = False, device: str | torch.device = "cpu", seed: int = 0) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment) and self.supports_augment
        self.device = torch.device(device)
        self.seed = int(seed)
        self.epoch = 0
        self._cpu = tensors
        self._data = tuple(t.to(self.device) for t in tensors)

    @property
    def num_samples(self) -> int:
        return len(self._data[-1])

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        n, bs = self.num_samples, self.batch_size
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else None
        order_dev = order.to(self.device) if order is not None else None
        aug = {k: v.to(self.device) for k, v in self._draw(n, g).items()} if self.augment else {}
        for start in range(0, n, bs):
            end = min(start + bs, n)
            if order is None:
                sel: Selection = slice(start, end)
                sel_cpu: Selection = sel
            else:
                sel, sel_cpu = order_dev[start:end], order[start:end]
            yield self._batch(sel, sel_cpu, {k: v[start:end] for k, v in aug.items()})

    def _draw(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-position augmentation parameters for one epoch (CPU tensors of length n)."""
        return {}

    def _batch(self, sel: Selection, sel_cpu: Selection,
               aug: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """One batch from rows ``sel`` of the device tensors (``sel_cpu``: the same rows, on the CPU)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={self.num_samples}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, augment={self.augment}, device={self.device}, seed={self.seed})")
