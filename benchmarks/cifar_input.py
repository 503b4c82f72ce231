"""pielab's tensor-resident CIFAR-10 batches against the usual torchvision pipeline, side by side.

Both produce the same training batches: random crop with 4-pixel padding, horizontal flip, normalise,
batch 128, shuffled. The baseline is `torch.utils.data.DataLoader` over `torchvision.datasets.CIFAR10`
with `transforms` (PIL per image), reading the same images written in torchvision's own on-disk format.
Each pipeline is timed over whole epochs, alternating, and the median epoch is kept.

    .venv/bin/python benchmarks/cifar_input.py [--data ../shared/data/cifar10_subset.npz] [--epochs 3] [--workers 2] [--threads 1]

pielab's loader is made once (as a trial makes it: the split padded then) and its one-off
cost printed; epochs time only the batches. The last line is the ratio (pielab images/s) / (DataLoader
images/s); the target is at least 20.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def write_torchvision_layout(npz: Path, root: Path) -> None:
    """The npz's training images as torchvision's `cifar-10-batches-py` pickles (one batch file)."""
    arrays = np.load(npz)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x = arrays["x_train"].transpose(0, 3, 1, 2).reshape(len(arrays["x_train"]), -1)
    batch = {"data": x, "labels": arrays["y_train"].tolist()}
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        # torchvision reads all five train batches; the first holds the images, the others are empty.
        payload = batch if name in ("data_batch_1", "test_batch") else {"data": x[:0], "labels": []}
        with open(folder / name, "wb") as fh:
            pickle.dump(payload, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [str(c) for c in arrays["classes"]]}, fh)


def torchvision_epoch_seconds(root: Path, batch_size: int, workers: int) -> tuple[float, int]:
    import torchvision
    from torchvision import transforms

    class Unchecked(torchvision.datasets.CIFAR10):
        # Our re-written pickles have other checksums than the published ones.
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / "batches.meta", "rb") as fh:
                self.classes = pickle.load(fh)["label_names"]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ])
    dataset = Unchecked(str(root), train=True, transform=tf, download=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=False)
    start = time.perf_counter()
    seen = 0
    for images, labels in loader:
        seen += images.shape[0]
    return time.perf_counter() - start, seen


def pielab_epoch_seconds(loader, epoch: int) -> tuple[float, int]:
    start = time.perf_counter()
    loader.set_epoch(epoch)
    seen = 0
    for (images,), labels in loader:
        seen += images.shape[0]
    return time.perf_counter() - start, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset.npz"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for pielab's loader, which runs inside the training process "
                             "(the baseline gets --workers extra processes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from pielab.config import DataConfig
    from pielab.data import make_loader, prepare

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The whole training split (no holdout) so both pipelines see the same 10,000 images.
        prepared = prepare("cifar10", DataConfig(path=args.data, val_size=1, cache_dir=str(tmp / "cache")))
        write_torchvision_layout(Path(args.data), tmp / "tv")
        # One loader per trial, as pielab.train makes it: the split is padded here, once.
        start = time.perf_counter()
        loader = make_loader(prepared, "train", batch_size=args.batch_size, shuffle=True, augment=True,
                             device=torch.device("cpu"), seed=0)
        print(f"pielab loader made (split padded once): {time.perf_counter() - start:.3f} s")
        ours, theirs = [], []
        for epoch in range(1, args.epochs + 1):
            seconds, n_ours = pielab_epoch_seconds(loader, epoch)
            ours.append(n_ours / seconds)
            seconds, n_theirs = torchvision_epoch_seconds(tmp / "tv", args.batch_size, args.workers)
            theirs.append(n_theirs / seconds)
            print(f"epoch {epoch}: pielab {ours[-1]:,.0f} images/s ({n_ours} images), "
                  f"DataLoader+transforms ({args.workers} workers) {theirs[-1]:,.0f} images/s ({n_theirs} images)")
    ours_med, theirs_med = statistics.median(ours), statistics.median(theirs)
    print(f"median: pielab {ours_med:,.0f} images/s, DataLoader+transforms {theirs_med:,.0f} images/s")
    print(f"ratio (pielab / DataLoader+transforms images per second): {ours_med / theirs_med:.1f}")


if __name__ == "__main__":
    main()
