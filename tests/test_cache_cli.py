"""``pielab cache``: the listing of the processed-data cache and ``--prune``, through the console script.

Entries are made by ``prepare`` in this process (a real build, as a trial does it); the command runs
as a user runs it. Old last use is set by moving the ``last_used`` stamp's mtime back.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from filelock import FileLock

from pielab.config import DataConfig, load_config
from pielab.data import prepare

DAY = 86400


def run(pielab_exe, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*pielab_exe, "cache", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))


def one_line_error(proc, fragment: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pielab: error: ") and fragment in lines[0], proc.stderr


@pytest.fixture(scope="module")
def sources(cifar_path, tmp_path_factory) -> dict[str, Path]:
    """Two small real CIFAR-10 files with different content: two cache entries."""
    folder = tmp_path_factory.mktemp("sources")
    out = {}
    with np.load(cifar_path) as archive:
        for name, start in (("a", 0), ("b", 300)):
            path = folder / f"{name}.npz"
            np.savez(path, x_train=archive["x_train"][start:start + 300], y_train=archive["y_train"][start:start + 300],
                     x_test=archive["x_test"][:100], y_test=archive["y_test"][:100])
            out[name] = path
    return out


def make(cache_dir: Path, source: Path, train_size: int) -> tuple[Path, Path]:
    """Prepare ``source`` with a 100-image holdout and ``train_size`` rows: (entry, subset) folders."""
    p = prepare("cifar10", DataConfig(path=str(source), cache_dir=str(cache_dir), val_size=100, train_size=train_size))
    return Path(p.meta["cache_dir"]), Path(p.meta["subset_dir"])


def age(folder: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(folder / "last_used", (t, t))


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_prepare_stamps_last_use_of_the_entry_and_the_subset(sources, tmp_path):
    entry, subset = make(tmp_path, sources["a"], 150)
    age(entry, 40), age(subset, 40)
    make(tmp_path, sources["a"], 150)  # opened again: a cache hit
    for folder in (entry, subset):
        assert time.time() - (folder / "last_used").stat().st_mtime < 60


def test_listing_names_entries_and_subsets_with_size_and_last_use(pielab_exe, sources, tmp_path):
    entry, small = make(tmp_path, sources["a"], 100)
    _, large = make(tmp_path, sources["a"], 150)
    age(entry, 3), age(small, 3)
    proc = run(pielab_exe, "--cache-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"cache {tmp_path}: 1 entries, 2 subsets, ")
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {entry.name, f"{entry.name}/subsets/{small.name}", f"{entry.name}/subsets/{large.name}"}
    assert "cifar10" in rows[entry.name] and "ready, 3d ago" in rows[entry.name]
    three_days_ago = time.strftime("%Y-%m-%d", time.localtime(time.time() - 3 * DAY))
    assert three_days_ago in rows[entry.name]
    assert "ready, just now" in rows[f"{entry.name}/subsets/{large.name}"]
    assert "fingerprints" not in proc.stdout


def test_prune_removes_what_was_not_used_recently_and_reports_the_space(pielab_exe, sources, tmp_path):
    old_entry, _ = make(tmp_path, sources["a"], 100)
    entry, old_subset = make(tmp_path, sources["b"], 100)
    _, recent_subset = make(tmp_path, sources["b"], 150)
    age(old_entry, 40), age(old_subset, 40)
    freed = size(old_entry) + size(old_subset)
    proc = run(pielab_exe, "--cache-dir", str(tmp_path), "--prune", "--older-than", "30d")
    assert proc.returncode == 0, proc.stderr
    assert not old_entry.exists() and not old_subset.exists()
    assert entry.is_dir() and recent_subset.is_dir()
    removed = sorted(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("removed "))
    assert removed == sorted([old_entry.name, f"{entry.name}/subsets/{old_subset.name}"])
    assert proc.stdout.splitlines()[-1].startswith(f"freed {freed / 1e6:.1f} MB in 2 folder(s)")
    assert (tmp_path / f"{old_entry.name}.lock").exists()  # lock files stay: a waiter must find the same file
    again = run(pielab_exe, "--cache-dir", str(tmp_path), "--prune")
    assert again.returncode == 0 and again.stdout.strip() == f"nothing to remove in {tmp_path}"


def test_prune_never_removes_what_is_being_built(pielab_exe, sources, tmp_path):
    entry, subset = make(tmp_path, sources["a"], 100)
    age(entry, 40), age(subset, 40)
    other = entry.name[:-1] + ("1" if entry.name.endswith("0") else "0")  # another entry, whose build runs now
    building = tmp_path / f".tmp-{other}-abc123"
    building.mkdir()
    (building / "train_images.npy").write_bytes(b"x" * 1000)
    old = time.time() - 40 * DAY
    os.utime(building, (old, old))
    with FileLock(str(tmp_path / f"{entry.name}.lock")), FileLock(str(tmp_path / f"{other}.lock")):
        listing = run(pielab_exe, "--cache-dir", str(tmp_path))
        assert f"{building.name}" in listing.stdout and "building" in listing.stdout, listing.stdout
        proc = run(pielab_exe, "--cache-dir", str(tmp_path), "--prune", "--older-than", "1d")
        assert proc.returncode == 0, proc.stderr
        assert entry.is_dir() and subset.is_dir() and building.is_dir()
        assert "removed" not in proc.stdout
    proc = run(pielab_exe, "--cache-dir", str(tmp_path), "--prune", "--older-than", "1d")
    assert not entry.exists() and not building.exists()  # the locks are free: an old entry and a crashed build
    assert sorted(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("removed ")) == \
        sorted([entry.name, building.name])


def test_keep_referenced_keeps_what_a_sweep_folder_uses(pielab_exe, sources, tmp_path):
    cache_dir = tmp_path / "cache"
    used_entry, used_subset = make(cache_dir, sources["a"], 100)
    _, unused_subset = make(cache_dir, sources["a"], 150)
    other_entry, _ = make(cache_dir, sources["b"], 100)
    for folder in (used_entry, used_subset, unused_subset, other_entry):
        age(folder, 40)
    sweep = tmp_path / "sweep"
    (sweep / "trials" / "t1").mkdir(parents=True)
    data = {"path": str(sources["a"]), "val_size": 100, "train_size": 100}
    (sweep / "sweep.yaml").write_text(yaml.safe_dump({"name": "s", "base": {"model": {"name": "myresnet34"},
                                                                            "data": data}}))
    trial = load_config("myresnet34", [f"data.{k}={v}" for k, v in data.items()])
    (sweep / "trials" / "t1" / "config.yaml").write_text(yaml.safe_dump(trial.to_dict()))
    proc = run(pielab_exe, "--cache-dir", str(cache_dir), "--prune", "--older-than", "30d",
               "--keep-referenced", str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert used_entry.is_dir() and used_subset.is_dir()
    assert not unused_subset.exists() and not other_entry.exists()


def test_bad_input_is_one_line(pielab_exe, tmp_path):
    one_line_error(run(pielab_exe, "--cache-dir", str(tmp_path), "--prune", "--older-than", "3 fortnights"),
                   "--older-than '3 fortnights'")
    one_line_error(run(pielab_exe, "--cache-dir", str(tmp_path), "--older-than", "3d"), "add --prune")
    one_line_error(run(pielab_exe, "--cache-dir", str(tmp_path), "--prune", "--keep-referenced", str(tmp_path)),
                   "not a sweep folder")
    (tmp_path / "file").write_text("")
    one_line_error(run(pielab_exe, "--cache-dir", str(tmp_path / "file")), "not a folder")
    proc = run(pielab_exe, "--cache-dir", str(tmp_path / "none"))
    assert proc.returncode == 0 and "none there yet" in proc.stdout and not (tmp_path / "none").exists()
