"""CIFAR-10: sources, uint8 caching and the tensor-resident loader (airbench ``CifarLoader`` style).

Sources, in order: ``data.path`` (an ``.npz`` like ``../shared/data/cifar10_subset.npz``: ``x_train``,
``y_train``, ``x_test``, ``y_test`` and optionally ``classes``; images N x 32 x 32 x 3 or N x 3 x 32 x 32
uint8), or a folder holding one of :attr:`Cifar10.local_names`; then ``$PIELAB_DATA_DIR``; then
``torchvision.datasets.CIFAR10(download=True)`` into ``<cache>/raw``.

The cache holds the full train and test splits as uint8 N x 3 x 32 x 32 (150 MB for the real 50,000 training
images): a quarter of float32, and what the loader moves to the GPU once. A training loader pads its split
once on the device; crops, flips and normalisation happen per batch, on whole batches.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pielab.config import DataConfig
from pielab.data.base import Loader, Selection, Source, Task, check_reachable, offline_reason, one_line
from pielab.data.cache import save_array
from pielab.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The usual CIFAR-10 training-set statistics (on 0..1 pixels), as in most CIFAR-10 training recipes.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PAD = 4  # random-crop padding, as torchvision RandomCrop(32, padding=4)
_BATCHES_DIR = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # torchvision's CIFAR10.url


def crop_flip_padded(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
                     size: int) -> torch.Tensor:
    """``size`` x ``size`` crops of already padded images at per-image offsets, mirrored where ``flip``.

    ``padded`` is (B, C, H + 2p, W + 2p); ``dy``/``dx`` per-image offsets in ``[0, 2p]``; ``flip`` per-image
    booleans. One gather with per-image flat pixel indices (rows then possibly mirrored columns), no
    per-image loop; returns (B, C, size, size) of ``padded``'s dtype.
    """
    b, c, hp, wp = padded.shape
    i = torch.arange(size, device=padded.device)
    rows = (dy.view(b, 1) + i).mul_(wp)  # (b, size): start of each kept row in the flat image
    cols = torch.where(flip.view(b, 1), size - 1 - i, i).add_(dx.view(b, 1))  # (b, size)
    index = (rows.view(b, size, 1) + cols.view(b, 1, size)).view(b, 1, size * size)
    out = padded.reshape(b, c, hp * wp).gather(2, index.expand(b, c, size * size))
    return out.view(b, c, size, size)


class CifarLoader(Loader):
    """Batches ``((images,), labels)``: float32 normalised images, augmented when ``augment``.

    Augmentation = random crop with 4-pixel zero padding + horizontal flip with probability 1/2, drawn per
    image from the (seed, epoch) generator, so it is reproducible and differs between epochs.

    The split is prepared once, when the loader is made (once per trial), on the device: when augmenting,
    the uint8 images are zero-padded then (airbench's layout), so each batch is one row selection, one
    crop-and-flip gather of uint8 pixels and one multiply-add that normalises the batch. Normalising the
    whole split once as well was measured no faster on CPU (the float32 split is 4x the bytes to gather
    from) and costs 15x the preparation time and 4x the memory (10,000 images: 192 MB against 48 MB).
    """

    supports_augment = True

    def __init__(self, tensors: tuple[torch.Tensor, ...], **kwargs: Any) -> None:
        super().__init__(tensors, **kwargs)
        mean = torch.tensor(MEAN, dtype=torch.float32)
        std = torch.tensor(STD, dtype=torch.float32)
        # (x / 255 - mean) / std as one multiply-add.
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(self.device)
        images, labels = self._data
        self._size = images.shape[-1]
        if self.augment:  # zero padding in pixel space is torchvision's RandomCrop(padding=4) default
            self._data = (torch.nn.functional.pad(images, (PAD, PAD, PAD, PAD)), labels)

    def _draw(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        span = 2 * PAD + 1
        return {
            "dy": torch.randint(0, span, (n,), generator=g),
            "dx": torch.randint(0, span, (n,), generator=g),
            "flip": torch.randint(0, 2, (n,), generator=g).bool(),
        }

    def _batch(self, sel: Selection, sel_cpu: Selection,
               aug: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        images, labels = self._data
        x = images[sel]
        if aug:
            x = crop_flip_padded(x, aug["dy"], aug["dx"], aug["flip"], self._size)
        return (torch.addcmul(self._shift, x, self._scale),), labels[sel]


class Cifar10(Task):
    name = "cifar10"
    label = "CIFAR-10"
    fields = ("images", "labels")
    local_names = ("cifar10_subset.npz", "cifar10.npz", f"{_BATCHES_DIR}/")
    file_suffixes = (".npz",)
    path_hint = "FILE.npz"
    loader_cls = CifarLoader

    def is_native_dir(self, path: Path) -> bool:
        return (path / "data_batch_1").is_file() and (path / "test_batch").is_file()

    def download_source(self, root: Path, context: str) -> Source:
        return Source("download", root / "raw" / _BATCHES_DIR,
                      f"torchvision CIFAR10 (downloaded to {root / 'raw'})",
                      identity="download:torchvision-CIFAR10", context=context)

    def model_kwargs(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"num_classes": int(meta["num_classes"])}

    def build(self, source: Source, cfg: DataConfig, root: Path, out: Path) -> dict[str, Any]:
        if source.kind == "file":
            x_train, y_train, x_test, y_test, classes = _read_npz(source.path)
        else:
            if source.kind == "download":
                self._download(source)
            x_train, y_train, x_test, y_test, classes = _read_batches(source.path)
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            save_array(out, f"{split}_images", x)
            save_array(out, f"{split}_labels", y)
        return {"classes": list(classes), "num_classes": len(classes)}

    def _download(self, source: Source) -> None:
        """torchvision's CIFAR-10 download into ``<cache>/raw`` (train and test come in one archive)."""
        if self.is_native_dir(source.path):
            return
        reason = offline_reason()
        if reason:
            raise self.download_error(source, reason)
        try:
            check_reachable(CIFAR10_URL)  # before importing torchvision: an offline machine fails at once
            from filelock import FileLock
            from torchvision.datasets import CIFAR10

            raw = source.path.parent
            raw.mkdir(parents=True, exist_ok=True)
            with FileLock(str(raw / "cifar10-download.lock")):
                CIFAR10(root=str(raw), train=True, download=True)
            (raw / CIFAR10.filename).unlink(missing_ok=True)  # the extracted folder is all we read
        except Exception as exc:  # network, disk, torchvision: all end as one line naming the way out
            raise self.download_error(source, exc) from None


# --------------------------------------------------------------------------- readers


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as a CIFAR-10 .npz archive ({one_line(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array, not a CIFAR-10 .npz archive with x_train, y_train, x_test, y_test")
    with archive:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive.files]
        if missing:
            raise DataError(f"{path}: not a CIFAR-10 .npz: missing {', '.join(missing)} "
                            f"(has {', '.join(archive.files) or 'nothing'}; expected the cifar10_subset.npz layout)")
        try:
            arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            classes = [str(c) for c in archive["classes"]] if "classes" in archive.files else list(CLASSES)
        except Exception as exc:
            raise DataError(f"{path}: cannot read its arrays ({one_line(exc)})") from None
    x_train, y_train = _check(path, "train", arrays["x_train"], arrays["y_train"], len(classes))
    x_test, y_test = _check(path, "test", arrays["x_test"], arrays["y_test"], len(classes))
    return x_train, y_train, x_test, y_test, classes


def _read_batches(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The python-pickle batches of the official archive (what torchvision downloads)."""

    def load(name: str) -> dict[str, Any]:
        try:
            with open(folder / name, "rb") as f:
                return pickle.load(f, encoding="latin1")
        except Exception as exc:
            raise DataError(f"{folder / name}: cannot read as a CIFAR-10 batch ({one_line(exc)})") from None

    train = [load(f"data_batch_{i}") for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    test = load("test_batch")
    classes = list(CLASSES)
    if (folder / "batches.meta").is_file():
        classes = [str(c) for c in load("batches.meta").get("label_names", classes)]

    def stack(batches: list[dict[str, Any]], split: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            x = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
            y = np.concatenate([np.asarray(b["labels"]) for b in batches])
        except (KeyError, ValueError) as exc:
            raise DataError(f"{folder}: unexpected CIFAR-10 batch contents ({one_line(exc)})") from None
        return _check(folder, split, x, y, len(classes))

    return (*stack(train, "train"), *stack([test], "test"), classes)


def _check(where: Path, split: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images as contiguous uint8 N x 3 x 32 x 32 and labels as int64 in [0, num_classes), or a DataError."""
    if x.dtype != np.uint8 or x.ndim != 4 or not (x.shape[1:] == (32, 32, 3) or x.shape[1:] == (3, 32, 32)):
        raise DataError(f"{where}: x_{split} must be uint8 images N x 32 x 32 x 3 (or N x 3 x 32 x 32), "
                        f"got {x.dtype} {tuple(x.shape)}")
    if len(x) == 0:  # an empty test split would train and report a test accuracy of 0/0
        raise DataError(f"{where}: x_{split} has no images (CIFAR-10 needs both train and test images)")
    if x.shape[-1] == 3:
        x = x.transpose(0, 3, 1, 2)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: y_{split} must be {len(x)} integer labels, got {y.dtype} {tuple(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{where}: y_{split} has labels outside 0..{num_classes - 1}")
    return np.ascontiguousarray(x), y.astype(np.int64)


TASK = Cifar10()
