"""Data for both studies: find the source, cache the processed arrays once per machine, split, batch.

``prepare(task, data_cfg)`` -> :class:`Prepared` (CPU tensors + the model arguments the data decides), then
``make_loader(prepared, split, ...)`` -> a :class:`Loader` whose batches are already on the device.
This package imports neither ray, optuna nor wandb, and ``datasets`` only on the IMDB download path.
"""

from __future__ import annotations

from typing import Any

import torch

from pielab.config import DataConfig
from pielab.data.base import SPLITS, Loader, Prepared, Task
from pielab.data.cifar10 import TASK as _CIFAR10
from pielab.data.imdb import TASK as _IMDB
from pielab.errors import DataError

TASKS: dict[str, Task] = {t.name: t for t in (_CIFAR10, _IMDB)}

__all__ = ["DataError", "Loader", "Prepared", "SPLITS", "TASKS", "make_loader", "prepare"]


def _task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}") from None


def prepare(task: str, cfg: DataConfig | None = None) -> Prepared:
    """Processed, split data for ``task`` ("cifar10" or "imdb") as ``cfg`` describes.

    The first call on a machine builds the on-disk cache (seconds); later calls, in any process, memory-map
    it. Raises :class:`~pielab.errors.DataError` with one line when no source can be found or read.
    """
    return _task(task).prepare(cfg if cfg is not None else DataConfig())


def make_loader(prepared: Prepared, split: str, *, batch_size: int, shuffle: bool = False, augment: bool = False,
                device: str | torch.device = "cpu", seed: int = 0, **options: Any) -> Loader:
    """A loader over one split, its tensors moved to ``device`` once.

    Batches are ``(inputs, targets)``: CIFAR-10 ``((images,), labels)`` with float32 normalised images;
    IMDB ``((tokens, lengths), labels)``. Shuffling and augmentation depend only on ``(seed, epoch)``; call
    ``loader.set_epoch(epoch)`` before each epoch. ``augment`` applies to CIFAR-10 only (crop + flip);
    ``options`` go to the task's loader (IMDB: ``trim=False`` keeps a fixed ``max_len`` width).
    """
    task = _task(prepared.task)
    return task.loader_cls(prepared.split(split), batch_size=batch_size, shuffle=shuffle, augment=augment,
                           device=device, seed=seed, **options)
