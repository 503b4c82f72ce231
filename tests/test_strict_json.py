"""Every JSON file pielab writes is strict JSON (RFC 8259: no NaN, no Infinity), and a CIFAR-10 file with
an empty split is refused instead of training to a test accuracy of 0/0."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pielab.config import load_config
from pielab.data import prepare
from pielab.train import fit


def strict_loads(text: str):
    """``json.loads`` that refuses NaN, Infinity and -Infinity instead of turning them into floats."""
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"not JSON: {c}")))


@pytest.fixture(scope="module")
def npz_files(cifar_path, tmp_path_factory) -> dict[str, Path]:
    """A small real CIFAR-10 file (300 train, 200 test images) and the same with an empty test split."""
    folder = tmp_path_factory.mktemp("npz")
    with np.load(cifar_path) as archive:
        x_train, y_train = archive["x_train"][:300], archive["y_train"][:300]
        x_test, y_test = archive["x_test"][:200], archive["y_test"][:200]
    small, empty = folder / "small.npz", folder / "no_test.npz"
    np.savez(small, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    np.savez(empty, x_train=x_train, y_train=y_train, x_test=x_test[:0], y_test=y_test[:0])
    return {"small": small, "empty": empty}


def train_args(path: Path, out: Path) -> list[str]:
    return ["train", "myresnet34", "--set", f"data.path={path}", "--set", "model.width=4", "--set", "model.depth=10",
            "--set", "data.val_size=100", "--set", "train.epochs=1", "--set", "train.batch_size=100",
            "--set", "train.threads=1", "--out", str(out)]


def run(pielab_exe, args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIELAB_CACHE_DIR=str(cache))  # keeps PYTHONPATH; a fresh cache is built and written
    return subprocess.run([*pielab_exe, *args], capture_output=True, text=True, env=env, timeout=600)


def test_train_refuses_a_cifar_file_with_an_empty_test_split(pielab_exe, npz_files, tmp_path):
    out = tmp_path / "run"
    proc = run(pielab_exe, train_args(npz_files["empty"], out), tmp_path / "cache")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pielab: error: "), proc.stderr
    assert str(npz_files["empty"]) in lines[0] and "x_test has no images" in lines[0], lines[0]
    assert not (out / "summary.json").exists()


def test_train_writes_strict_json(pielab_exe, npz_files, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    proc = run(pielab_exe, train_args(npz_files["small"], out), cache)
    assert proc.returncode == 0, proc.stderr
    summary = strict_loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and 0 <= summary["test_acc"] <= 1
    metas = sorted(cache.rglob("meta.json"))  # the entry and the subset it took
    assert len(metas) >= 2, metas
    for meta in metas:
        assert strict_loads(meta.read_text())["format"] >= 1


def test_fit_writes_a_missing_test_accuracy_as_null(cifar_path, tmp_path):
    """No test rows make the test accuracy 0/0: summary.json says null, which strict parsers accept
    (``json.dumps`` alone writes the bare word NaN)."""
    config = load_config("myresnet34", [f"data.path={cifar_path}", "model.width=4", "model.depth=10",
                                        "data.train_size=100", "data.val_size=100", "data.test_size=100",
                                        "train.epochs=1", "train.threads=1"])
    prepared = prepare(config.task, config.data)
    prepared.test = tuple(t[:0] for t in prepared.test)
    summary = fit(config, out_dir=tmp_path / "run", prepared=prepared, log=None)
    assert summary["test_acc"] != summary["test_acc"]  # NaN in memory
    assert strict_loads((tmp_path / "run" / "summary.json").read_text())["test_acc"] is None


def test_imdb_vocabulary_file_is_strict_json(imdb_path, tmp_path):
    from pielab.config import DataConfig
    from pielab.data.imdb import load_vocab

    prepared = prepare("imdb", DataConfig(path=imdb_path, vocab_size=2000, max_len=40))
    vocab = strict_loads(Path(prepared.meta["vocab_file"]).read_text())
    assert vocab == load_vocab(prepared) and len(vocab) == 2000
    assert strict_loads((Path(prepared.meta["cache_dir"]) / "meta.json").read_text())["vocab_size"] == 2000
