"""pielab.data on the real shared files (../shared/data): splits, loaders, IMDB processing, the cache, errors.

The session cache (``$PIELAB_CACHE_DIR``, set by conftest) holds the full-size builds, shared with the other
test modules (same settings as test_train's tiny IMDB configs); tests about building use their own folders.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pielab.config import DataConfig
from pielab.data import Prepared, make_loader, prepare
from pielab.data import cache as data_cache
from pielab.data.cifar10 import MEAN, STD, crop_flip_padded
from pielab.data.imdb import encode_texts, load_vocab, tokenize
from pielab.errors import DataError

REPO = Path(__file__).resolve().parents[1]
IMDB_SMALL = {"vocab_size": 2000, "max_len": 40}  # as test_train's tiny IMDB configs: one shared cache entry


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels, minlength=num_classes).tolist()


def row_keys(x: torch.Tensor) -> list[bytes]:
    return [bytes(r) for r in x.reshape(len(x), -1).numpy()]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def cifar(cifar_path: str) -> Prepared:
    return prepare("cifar10", DataConfig(path=cifar_path))


@pytest.fixture(scope="session")
def imdb(imdb_path: str) -> Prepared:
    """All 50,000 reviews tokenised once per cache key (about 10-15 s on 2 shared cores)."""
    return prepare("imdb", DataConfig(path=imdb_path, **IMDB_SMALL))


@pytest.fixture(scope="session")
def imdb_frame(imdb_path: str) -> pd.DataFrame:
    return pd.read_parquet(imdb_path, columns=["text", "label", "split"])


@pytest.fixture(scope="session")
def small_npz(cifar: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300 + 200 image file in the shared file's layout (real images), for tests that build caches."""
    path = tmp_path_factory.mktemp("small") / "cifar10_small.npz"
    x_train, y_train = cifar.train[0][:300], cifar.train[1][:300]
    x_test, y_test = cifar.test[0][:200], cifar.test[1][:200]
    np.savez(path, x_train=x_train.permute(0, 2, 3, 1).numpy(), y_train=y_train.numpy(),
             x_test=x_test.permute(0, 2, 3, 1).numpy(), y_test=y_test.numpy(), classes=np.array(cifar.meta["classes"]))
    return path


def subprocess_env(cache_dir: Path) -> dict[str, str]:
    return dict(os.environ, PIELAB_CACHE_DIR=str(cache_dir), PYTHONPATH=str(REPO))


PROBE = r"""
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
from pielab.config import DataConfig
from pielab.data import prepare
p = prepare("cifar10", DataConfig(path=sys.argv[1]))
heavy = sorted(m for m in ("ray", "optuna", "wandb", "datasets") if m in sys.modules)
print(json.dumps({"hit": p.meta["cache_hit"], "dir": p.meta["cache_dir"], "heavy": heavy,
                  "val_sum": int(p.val[0].sum()), "val_labels": p.val[1].tolist()}))
"""


# --------------------------------------------------------------------------- CIFAR-10: splits


def test_cifar_shapes_classes_and_stratified_holdout(cifar: Prepared) -> None:
    assert cifar.task == "cifar10"
    assert cifar.model_kwargs == {"num_classes": 10}
    assert cifar.meta["classes"][:3] == ["airplane", "automobile", "bird"] and len(cifar.meta["classes"]) == 10
    for split, n in (("train", 9000), ("val", 1000), ("test", 10000)):
        x, y = getattr(cifar, split)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.int64
        assert class_counts(y, 10) == [n // 10] * 10, split
    assert cifar.meta["sizes"] == {"train": 9000, "val": 1000, "test": 10000}
    # train and val partition the training split: every image exactly once
    full = np.load(Path(cifar.meta["cache_dir"]) / "train_images.npy", mmap_mode="r")
    assert sorted(row_keys(cifar.train[0]) + row_keys(cifar.val[0])) == sorted(row_keys(torch.from_numpy(full.copy())))
    # channels first, in RGB order: the per-channel means that PROVENANCE.md gives for the file
    means = torch.from_numpy(full.copy()).double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(means, torch.tensor([125.82, 123.19, 114.00], dtype=torch.float64), atol=0.01, rtol=0)


def test_cifar_subsets_are_stratified_and_keep_the_holdout(cifar: Prepared, cifar_path: str) -> None:
    sub = prepare("cifar10", DataConfig(path=cifar_path, train_size=2000, test_size=1000))
    assert sub.meta["cache_hit"] and sub.meta["cache_dir"] == cifar.meta["cache_dir"]  # subsets need no rebuild
    assert class_counts(sub.train[1], 10) == [200] * 10
    assert class_counts(sub.test[1], 10) == [100] * 10
    assert torch.equal(sub.val[0], cifar.val[0])  # the validation set does not move with train_size
    assert set(row_keys(sub.train[0])) <= set(row_keys(cifar.train[0]))
    absolute = prepare("cifar10", DataConfig(path=cifar_path, val_size=500))
    assert class_counts(absolute.val[1], 10) == [50] * 10 and len(absolute.train[1]) == 9500


def test_cifar_split_is_seeded(cifar: Prepared, cifar_path: str) -> None:
    again = prepare("cifar10", DataConfig(path=cifar_path))
    other = prepare("cifar10", DataConfig(path=cifar_path, split_seed=1))
    assert torch.equal(again.val[0], cifar.val[0]) and torch.equal(again.train[1], cifar.train[1])
    assert not torch.equal(other.val[0], cifar.val[0])
    assert class_counts(other.val[1], 10) == [100] * 10
    assert len(set(row_keys(other.val[0])) & set(row_keys(cifar.val[0]))) < 300  # ~100 expected by chance


def test_split_sizes_out_of_range_raise(cifar_path: str) -> None:
    with pytest.raises(DataError, match="data.train_size=9001 is more than the 9000"):
        prepare("cifar10", DataConfig(path=cifar_path, train_size=9001))
    with pytest.raises(DataError, match="data.test_size"):
        prepare("cifar10", DataConfig(path=cifar_path, test_size=10001))
    with pytest.raises(DataError, match="data.val_size=10000"):
        prepare("cifar10", DataConfig(path=cifar_path, val_size=10000))


# --------------------------------------------------------------------------- CIFAR-10: loader


def test_eval_loader_is_normalised_ordered_and_keeps_the_last_batch(cifar: Prepared) -> None:
    loader = make_loader(cifar, "val", batch_size=256, shuffle=False, augment=False, device="cpu", seed=0)
    assert len(loader) == 4 and loader.num_samples == 1000 and loader.batch_size == 256
    batches = list(loader)
    assert [len(y) for _, y in batches] == [256, 256, 256, 232]
    images = torch.cat([inputs[0] for inputs, _ in batches])
    assert images.dtype == torch.float32 and images.shape == (1000, 3, 32, 32)
    assert torch.equal(torch.cat([y for _, y in batches]), cifar.val[1])  # no shuffle: file order
    mean, std = images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))
    assert mean.abs().max() < 0.05, mean
    assert ((std > 0.9) & (std < 1.1)).all(), std
    expected = (cifar.val[0][:5].float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(images[:5], expected)


def test_augmentation_is_random_crop_and_flip_of_each_image(cifar: Prepared) -> None:
    n = 48
    plain = next(iter(make_loader(cifar, "train", batch_size=n, shuffle=False, augment=False, device="cpu", seed=0)))[0][0]
    aug = next(iter(make_loader(cifar, "train", batch_size=n, shuffle=False, augment=True, device="cpu", seed=0)))[0][0]
    black = (-torch.tensor(MEAN) / torch.tensor(STD)).view(3, 1, 1)  # zero padding, normalised
    padded = black.expand(n, 3, 40, 40).clone()
    padded[:, :, 4:36, 4:36] = plain
    found = []
    for i in range(n):
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if torch.equal(aug[i], (lambda c: c.flip(-1) if f else c)(padded[i, :, dy:dy + 32, dx:dx + 32]))]
        assert matches, f"augmented image {i} is no crop/flip of its original"
        found.append(matches[0])
    flips = sum(f for _, _, f in found)
    assert 10 <= flips <= n - 10, flips  # about half mirrored
    assert len({(dy, dx) for dy, dx, _ in found}) > 10  # offsets vary
    assert sum(not torch.equal(aug[i], plain[i]) for i in range(n)) > n * 0.8
    assert aug.dtype == torch.float32 and torch.isfinite(aug).all()
    # zero padding is black: on average 2.2 of 32 rows and columns are padding, about -0.25 on the mean
    shift = (aug.mean() - plain.mean()).item()
    assert -0.6 < shift < 0, shift
    assert 0.8 < aug.std() < 1.3


def test_crop_flip_matches_a_per_image_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=g)
    dy, dx = torch.tensor([0, 1, 2, 3, 4, 2]), torch.tensor([4, 3, 2, 1, 0, 2])
    flip = torch.tensor([True, False, True, False, True, False])
    out = crop_flip_padded(torch.nn.functional.pad(x, (2, 2, 2, 2)), dy, dx, flip, size=8)
    for i in range(6):
        ref = torch.nn.functional.pad(x[i], (2, 2, 2, 2))[:, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], ref.flip(-1) if flip[i] else ref)


def test_shuffle_and_augmentation_depend_only_on_seed_and_epoch(cifar: Prepared) -> None:
    def epoch(seed: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        loader = make_loader(cifar, "val", batch_size=128, shuffle=True, augment=True, device="cpu", seed=seed)
        loader.set_epoch(e)
        xs, ys = zip(*[(inputs[0], y) for inputs, y in loader])
        return torch.cat(xs), torch.cat(ys)

    x0, y0 = epoch(0, 0)
    x0b, y0b = epoch(0, 0)  # a fresh loader (a resumed run) sees the same batches
    x1, y1 = epoch(0, 1)
    xs, ys = epoch(7, 0)
    assert torch.equal(x0, x0b) and torch.equal(y0, y0b)
    assert not torch.equal(y0, y1) and not torch.equal(x0, x1)
    assert not torch.equal(y0, ys)
    assert sorted(y0.tolist()) == sorted(cifar.val[1].tolist())  # every sample once per epoch
    assert not torch.equal(y0, cifar.val[1])  # shuffled


# --------------------------------------------------------------------------- IMDB


def test_tokenizer_cleans_lowercases_and_splits_punctuation() -> None:
    assert tokenize("Great film<br /><br />It's GREAT, isn't it?!") == [
        "great", "film", "it's", "great", ",", "isn't", "it", "?", "!"]
    assert tokenize("") == []
    assert tokenize("A<br/>b<BR>c") == ["a", "b", "c"]


@pytest.mark.slow  # tokenises all 50,000 reviews once per session (10-20 s on 2 shared cores)
def test_imdb_full_processing(imdb: Prepared, imdb_frame: pd.DataFrame) -> None:
    vocab_size, max_len = IMDB_SMALL["vocab_size"], IMDB_SMALL["max_len"]
    assert imdb.model_kwargs == {"vocab_size": vocab_size + 2, "pad_idx": 0, "num_classes": 2}
    assert imdb.meta["sizes"] == {"train": 22500, "val": 2500, "test": 25000}
    for split, per_class in (("train", 11250), ("val", 1250), ("test", 12500)):
        tokens, lengths, labels = getattr(imdb, split)
        assert tokens.dtype == lengths.dtype == labels.dtype == torch.int64
        assert tokens.shape == (per_class * 2, max_len)
        assert class_counts(labels, 2) == [per_class, per_class], split
        assert int(tokens.min()) >= 0 and int(tokens.max()) < vocab_size + 2
        assert int(lengths.min()) >= 1 and int(lengths.max()) <= max_len
        position = torch.arange(max_len)
        inside = position < lengths[:, None]
        assert (tokens[inside] != 0).all() and (tokens[~inside] == 0).all()  # pad only, and only on the right
    vocab = load_vocab(imdb)
    assert len(vocab) == vocab_size and vocab[0] == "the"
    assert "br" not in vocab and "<" not in vocab and "/>" not in vocab  # <br /> tags are gone
    # the test split is not subset, so row i is the file's i-th test review: re-encode independently
    test_rows = imdb_frame[imdb_frame["split"] == "test"].head(200)
    ref_tokens, ref_lengths = encode_texts(test_rows["text"], vocab, max_len)
    assert torch.equal(imdb.test[0][:200], ref_tokens) and torch.equal(imdb.test[1][:200], ref_lengths)
    assert torch.equal(imdb.test[2][:200], torch.tensor(test_rows["label"].to_numpy()))
    full_lengths = [len(tokenize(t)) for t in test_rows["text"]]
    assert ref_lengths.tolist() == [min(n, max_len) for n in full_lengths]


@pytest.fixture()
def tiny_imdb_parquet(imdb_frame: pd.DataFrame, tmp_path: Path) -> Path:
    """Real reviews, plus a word that only the test split uses (more often than any training word)."""
    train = imdb_frame[imdb_frame["split"] == "train"].groupby("label").head(20)
    test = imdb_frame[imdb_frame["split"] == "test"].groupby("label").head(10).copy()
    test["text"] = test["text"] + " zzqxtestonly" * 500
    empty = pd.DataFrame({"text": ["", "<br /><br />"], "label": [0, 1], "split": ["train", "test"]})
    path = tmp_path / "tiny_imdb.parquet"
    pd.concat([train, test, empty], ignore_index=True).to_parquet(path)
    return path


def test_imdb_vocabulary_comes_from_the_training_split_only(tiny_imdb_parquet: Path, tmp_path: Path) -> None:
    cfg = DataConfig(path=str(tiny_imdb_parquet), vocab_size=100_000, max_len=1000, cache_dir=str(tmp_path / "c"), val_size=4)
    p = prepare("imdb", cfg)
    vocab = load_vocab(p)
    assert "zzqxtestonly" not in vocab
    train_tokens = torch.cat([p.train[0], p.val[0]])
    train_lengths = torch.cat([p.train[1], p.val[1]])
    inside = torch.arange(1000) < train_lengths[:, None]
    unk_rows = ((train_tokens == 1) & inside).any(dim=1)
    assert unk_rows.sum() == 1  # every training word is known; only the empty review is one unk
    real = p.test[1] > 1  # (one test review is empty: a single unk)
    assert (p.test[0][real] == 1).sum(dim=1).min() >= 400  # the test-only word is unk (up to the 1,000-token cut)
    # ties broken alphabetically, most frequent first
    counts = {}
    frame = pd.read_parquet(tiny_imdb_parquet)
    for text in frame.loc[frame["split"] == "train", "text"]:
        for w in tokenize(text):
            counts[w] = counts.get(w, 0) + 1
    assert vocab == sorted(counts, key=lambda w: (-counts[w], w))


def test_imdb_truncation_and_empty_reviews(tiny_imdb_parquet: Path, tmp_path: Path) -> None:
    p = prepare("imdb", DataConfig(path=str(tiny_imdb_parquet), vocab_size=50, max_len=20,
                                   cache_dir=str(tmp_path / "c"), val_size=4))
    assert p.model_kwargs["vocab_size"] == 52 and p.train[0].shape[1] == 20
    tokens, lengths, _ = p.test
    empty = lengths == 1
    assert empty.sum() >= 1 and (tokens[empty, 0] == 1).all() and (tokens[empty, 1:] == 0).all()
    assert (lengths[~empty] == 20).all()  # real reviews are longer than 20 tokens: cut to max_len


@pytest.mark.slow  # tokenises all 50,000 reviews once per session (10-20 s on 2 shared cores)
def test_imdb_loader_batches_trim_and_ignore_augment(imdb: Prepared) -> None:
    loader = make_loader(imdb, "val", batch_size=64, shuffle=True, augment=True, device="cpu", seed=3)
    assert not loader.augment and len(loader) == math.ceil(2500 / 64) and loader.num_samples == 2500
    seen = []
    for (tokens, lengths), labels in loader:
        assert tokens.shape[1] == int(lengths.max()) and tokens.shape[0] == len(lengths) == len(labels)
        seen.append(labels)
    assert sorted(torch.cat(seen).tolist()) == sorted(imdb.val[2].tolist())
    fixed = make_loader(imdb, "val", batch_size=64, device="cpu", trim=False)
    (tokens, lengths), _ = next(iter(fixed))
    assert tokens.shape == (64, IMDB_SMALL["max_len"])
    assert torch.equal(tokens, imdb.val[0][:64]) and torch.equal(lengths, imdb.val[1][:64])


# --------------------------------------------------------------------------- the cache


def test_cache_is_reused_by_another_process(small_npz: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = prepare("cifar10", DataConfig(path=str(small_npz), cache_dir=str(cache_dir)))
    assert not first.meta["cache_hit"] and first.meta["built_by_pid"] == os.getpid()
    entry = Path(first.meta["cache_dir"])
    stamp = (entry / "meta.json").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-c", PROBE, str(small_npz)], env=subprocess_env(cache_dir),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hit"] and out["dir"] == str(entry) and "building" not in proc.stderr
    assert out["val_sum"] == int(first.val[0].sum()) and out["val_labels"] == first.val[1].tolist()
    assert (entry / "meta.json").stat().st_mtime_ns == stamp
    assert out["heavy"] == []  # pielab.data imports neither ray, optuna, wandb nor datasets
    # the same content under another name is the same source: no rebuild
    copy = tmp_path / "renamed.npz"
    copy.write_bytes(small_npz.read_bytes())
    assert prepare("cifar10", DataConfig(path=str(copy), cache_dir=str(cache_dir))).meta["cache_dir"] == str(entry)


def test_processes_starting_together_build_once(small_npz: Path, tmp_path: Path) -> None:
    probe_dir = tmp_path / "probe"
    name = prepare("cifar10", DataConfig(path=str(small_npz), cache_dir=str(probe_dir))).meta["cache_key"]
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    lock = data_cache.FileLock(str(data_cache.lock_path(cache_dir / name)))
    lock.acquire()  # hold the build lock so both processes meet it
    procs, logs = [], []
    try:
        for i in range(2):
            log = open(tmp_path / f"err{i}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-c", PROBE, str(small_npz)], env=subprocess_env(cache_dir),
                                          stdout=subprocess.PIPE, stderr=log, text=True))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            texts = [(tmp_path / f"err{i}.log").read_text() for i in range(2)]
            if all("waiting for another process" in t for t in texts):
                break
            assert all(p.poll() is None for p in procs), texts
            time.sleep(0.2)
        else:
            pytest.fail("the processes never waited for the lock")
    finally:
        lock.release()
    results = []
    for p in procs:
        stdout, _ = p.communicate(timeout=120)
        assert p.returncode == 0, stdout
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    for log in logs:
        log.close()
    assert sorted(r["hit"] for r in results) == [False, True]  # exactly one built
    assert results[0]["val_sum"] == results[1]["val_sum"]
    assert sum("built the CIFAR-10 cache in" in (tmp_path / f"err{i}.log").read_text() for i in range(2)) == 1


def test_a_failed_build_leaves_nothing_behind(small_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pielab.data.cifar10 import Cifar10

    cache_dir = tmp_path / "cache"
    real_build = Cifar10.build

    def crash(self, source, cfg, root, out):  # write part of the entry, then die
        real_build(self, source, cfg, root, out)
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(Cifar10, "build", crash)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        prepare("cifar10", DataConfig(path=str(small_npz), cache_dir=str(cache_dir)))
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock") and p.name != "fingerprints"] == []
    monkeypatch.setattr(Cifar10, "build", real_build)
    assert not prepare("cifar10", DataConfig(path=str(small_npz), cache_dir=str(cache_dir))).meta["cache_hit"]


def mapped_file(address: int) -> str | None:
    """The file behind the memory mapping that holds ``address`` in this process ("" = anonymous memory)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(None, 5)
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= address < hi:
            return fields[5] if len(fields) > 5 else ""
    return None


def test_every_split_is_memory_mapped_not_copied(cifar: Prepared, cifar_path: str, imdb: Prepared) -> None:
    # Copies (e.g. subsets taken by fancy indexing) would live in each process's anonymous memory: one
    # copy of the data per trial of a sweep instead of one per machine (benchmarks/memory.py).
    sub = prepare("cifar10", DataConfig(path=cifar_path, train_size=2000, test_size=1000))
    for prepared in (cifar, sub, imdb):
        root = Path(prepared.meta["cache_dir"]).resolve()
        for split in ("train", "val", "test"):
            for tensor in prepared.split(split):
                where = mapped_file(tensor.data_ptr())
                assert where and Path(where).resolve().is_relative_to(root), (prepared.task, split, where)
    assert Path(sub.meta["subset_dir"]).parent == Path(sub.meta["cache_dir"]) / "subsets"
    assert sub.meta["subset_dir"] != cifar.meta["subset_dir"]  # other rows, another subset folder
    again = prepare("cifar10", DataConfig(path=cifar_path, train_size=2000, test_size=1000))
    assert again.meta["subset_dir"] == sub.meta["subset_dir"] and torch.equal(again.train[0], sub.train[0])


def test_a_cache_that_cannot_take_subsets_falls_back_to_copies(small_npz: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir = tmp_path / "cache"
    first = prepare("cifar10", DataConfig(path=str(small_npz), cache_dir=str(cache_dir), val_size=50))
    real = data_cache.get_or_build

    def read_only(entry, build, what):  # what a read-only or full cache folder does to a new subset
        if what.endswith("subset"):
            raise DataError(f"cannot lock the data cache {entry} (Read-only file system)")
        return real(entry, build, what)

    monkeypatch.setattr(data_cache, "get_or_build", read_only)
    other = prepare("cifar10", DataConfig(path=str(small_npz), cache_dir=str(cache_dir), val_size=60))
    assert other.meta["cache_hit"] and other.meta["subset_dir"] is None
    assert len(other.val[1]) == 60 and len(other.train[1]) == 240
    assert set(row_keys(other.train[0][:5])) <= set(row_keys(torch.cat([first.train[0], first.val[0]])))


def test_prepared_pickles_for_ray(small_npz: Path, tmp_path: Path) -> None:
    p = prepare("cifar10", DataConfig(path=str(small_npz), cache_dir=str(tmp_path)))
    q = pickle.loads(pickle.dumps(p))
    assert torch.equal(q.test[0], p.test[0]) and q.model_kwargs == p.model_kwargs


# --------------------------------------------------------------------------- other sources


def test_data_dir_and_folder_formats(cifar: Prepared, imdb_frame: pd.DataFrame, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # the official python batches (what torchvision downloads), in $PIELAB_DATA_DIR
    batches = tmp_path / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    x, y = cifar.train[0][:100], cifar.train[1][:100]
    for i in range(1, 6):
        chunk = slice(20 * (i - 1), 20 * i)
        with open(batches / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": x[chunk].reshape(20, -1).numpy(), "labels": y[chunk].tolist()}, f)
    with open(batches / "test_batch", "wb") as f:
        pickle.dump({"data": cifar.test[0][:50].reshape(50, -1).numpy(), "labels": cifar.test[1][:50].tolist()}, f)
    monkeypatch.setenv("PIELAB_DATA_DIR", str(tmp_path / "data"))
    p = prepare("cifar10", DataConfig(cache_dir=str(tmp_path / "c"), val_size=10))
    assert "cifar-10-batches-py" in p.meta["source"]
    assert sorted(row_keys(torch.cat([p.train[0], p.val[0]]))) == sorted(row_keys(x))
    # the official aclImdb tree, as data.path
    acl = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label, sub in enumerate(("neg", "pos")):
            (acl / split / sub).mkdir(parents=True)
            rows = imdb_frame[(imdb_frame["split"] == split) & (imdb_frame["label"] == label)].head(5)
            for k, text in enumerate(rows["text"]):
                (acl / split / sub / f"{k}_{3 + 5 * label}.txt").write_text(text, encoding="utf-8")
    q = prepare("imdb", DataConfig(path=str(acl), cache_dir=str(tmp_path / "c"), vocab_size=100, max_len=30, val_size=2))
    assert q.meta["sizes"] == {"train": 8, "val": 2, "test": 10} and class_counts(q.test[2], 2) == [5, 5]


def test_a_previous_download_is_used_offline(tiny_imdb_parquet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "imdb.parquet").symlink_to(tiny_imdb_parquet)  # what the Hugging Face download path leaves behind
    monkeypatch.delenv("PIELAB_DATA_DIR", raising=False)
    monkeypatch.setenv("PIELAB_OFFLINE", "1")
    monkeypatch.setattr("pielab.data.imdb.check_reachable", lambda *a, **k: pytest.fail("network touched"))
    p = prepare("imdb", DataConfig(cache_dir=str(tmp_path), vocab_size=500, max_len=20, val_size=4, test_size=10))
    assert "stanfordnlp/imdb" in p.meta["source"] and p.meta["sizes"] == {"train": 37, "val": 4, "test": 10}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("task,hint", [("cifar10", "FILE.npz or PIELAB_DATA_DIR=DIR holding cifar10_subset.npz"),
                                       ("imdb", "FILE.parquet or PIELAB_DATA_DIR=DIR holding imdb.parquet")])
def test_missing_data_says_what_was_looked_for(task: str, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIELAB_DATA_DIR", raising=False)
    monkeypatch.setenv("PIELAB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        prepare(task, DataConfig(cache_dir=str(tmp_path)))
    msg = str(err.value)
    assert "\n" not in msg
    assert "not found: data.path unset, $PIELAB_DATA_DIR unset, and download failed (downloads are off: PIELAB_OFFLINE=1)" in msg
    assert msg.endswith(f"Set --set data.path={hint}")
    # a data folder without the files is named too
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PIELAB_DATA_DIR", str(empty))
    with pytest.raises(DataError, match=rf"\$PIELAB_DATA_DIR={empty} holds none of"):
        prepare(task, DataConfig(cache_dir=str(tmp_path)))


@pytest.mark.parametrize("task", ["cifar10", "imdb"])
def test_unreachable_network_fails_fast_with_the_reason(task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PIELAB_DATA_DIR", "PIELAB_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def unreachable(url: str, timeout: float = 10.0) -> None:
        raise ConnectionError(f"cannot reach {url}: Name or service not known")

    monkeypatch.setattr(f"pielab.data.{task}.check_reachable", unreachable)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"download failed \(ConnectionError: cannot reach https://.*Name or service not known\)"):
        prepare(task, DataConfig(cache_dir=str(tmp_path)))
    assert time.monotonic() - start < 20  # no retry loop (Hugging Face's alone takes about 25 s)
    assert not any(p.name.startswith(task + "-") and not p.name.endswith(".lock") for p in tmp_path.iterdir())


def test_imdb_in_hugging_face_offline_mode_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real lazy ``datasets`` path with HF_HUB_OFFLINE=1 (conftest): no network, no retries."""
    monkeypatch.delenv("PIELAB_OFFLINE", raising=False)
    monkeypatch.delenv("PIELAB_DATA_DIR", raising=False)
    monkeypatch.setattr("pielab.data.imdb.check_reachable", lambda *a, **k: pytest.fail("HF offline: no probe"))
    start = time.monotonic()
    with pytest.raises(DataError, match=r"IMDB not found: .*download failed \(.*stanfordnlp/imdb.*\)\. Set --set"):
        prepare("imdb", DataConfig(cache_dir=str(tmp_path)))
    assert time.monotonic() - start < 30


def test_bad_files_raise_data_error_naming_the_file(tmp_path: Path) -> None:
    def fails(task: str, path: Path, pattern: str) -> None:
        with pytest.raises(DataError, match=pattern) as err:
            prepare(task, DataConfig(path=str(path), cache_dir=str(tmp_path / "c")))
        assert str(path) in str(err.value) and "\n" not in str(err.value)

    fails("cifar10", tmp_path / "nope.npz", "does not exist")
    (tmp_path / "x.csv").write_text("a,b\n")
    fails("cifar10", tmp_path / "x.csv", "must be a .npz file")
    (tmp_path / "junk.npz").write_bytes(os.urandom(4096))
    fails("cifar10", tmp_path / "junk.npz", "cannot read as a CIFAR-10 .npz")
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((4, 32, 32, 3), np.uint8))
    fails("cifar10", tmp_path / "partial.npz", "missing y_train, x_test, y_test")
    np.savez(tmp_path / "floats.npz", x_train=np.zeros((4, 32, 32, 3), np.float32), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((4, 32, 32, 3), np.uint8), y_test=np.zeros(4, np.int64))
    fails("cifar10", tmp_path / "floats.npz", "x_train must be uint8")
    np.savez(tmp_path / "labels.npz", x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.full(4, 12),
             x_test=np.zeros((4, 32, 32, 3), np.uint8), y_test=np.zeros(4, np.int64))
    fails("cifar10", tmp_path / "labels.npz", "labels outside 0..9")
    np.savez(tmp_path / "notest.npz", x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((0, 32, 32, 3), np.uint8), y_test=np.zeros(0, np.int64))
    fails("cifar10", tmp_path / "notest.npz", "x_test has no images")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    fails("imdb", tmp_path / "junk.parquet", "cannot read as an IMDB .parquet")
    pd.DataFrame({"review": ["good"], "sentiment": [1]}).to_parquet(tmp_path / "cols.parquet")
    fails("imdb", tmp_path / "cols.parquet", "missing column.*text, label, split")
    pd.DataFrame({"text": ["good"], "label": [1], "split": ["train"]}).to_parquet(tmp_path / "notest.parquet")
    fails("imdb", tmp_path / "notest.parquet", "no rows with split == 'test'")
    assert not any(p.name.startswith(("cifar10-", "imdb-")) and p.is_dir() for p in (tmp_path / "c").iterdir())
    with pytest.raises(DataError, match="unknown task"):
        prepare("mnist", DataConfig())
