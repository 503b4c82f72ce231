"""How much of a sweep's wall time is training: `pielab sweep` against the same trials run back to back.

A sweep of 16 trials of one fixed small workload (a width-8 ResNet-10 on 1,000 real CIFAR-10 images,
7 epochs, about 10 s each on one quiet core) at concurrency 2, one CPU per trial, W&B offline as in a real
sweep. Beside it, in the same run, the same 16 workloads trained back to back in one plain process
with `pielab.train.fit`.

    .venv/bin/python benchmarks/sweep_overhead.py [--trials 16] [--epochs 7] [--wandb offline|off] [--skip-plain]

Efficiency = summed training time of the trials / (sweep wall time x 2 slots); the sweep's wall time
is the whole `pielab sweep` command (Ray start-up included). The last line prints it; target >= 0.9.
Above it: the time to first batch, from the command's start to the first trial's first training batch
(each trial's journal, ``tune/<trial>/epochs.log``, records that moment as ``first_batch_at``); the line
above it says when the first trial started and the last ended, against the command's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SLOTS = 2


def workload(data: str, epochs: int) -> dict:
    return {
        "model": {"name": "myresnet34", "width": 8, "depth": 10},
        "data": {"path": data, "train_size": 1000, "val_size": 500, "test_size": 500},
        "train": {"epochs": epochs, "batch_size": 64, "threads": 1, "device": "cpu"},
    }


def run_sweep(base: dict, trials: int, tmp: Path, wandb: bool = True) -> tuple[float, float, list[dict], list[float]]:
    spec = {
        "name": "overhead",
        "base": base,
        # Only fixed values: every trial is the same workload; the seeds make them 16 distinct trials.
        "space": {"parameters": {"train.lr": {"type": "fixed", "value": 1.0e-3}}},
        "search": {"algorithm": "grid", "seed": 0},
        "scheduler": {"name": "fifo"},
        "num_trials": trials,
        "max_concurrent": SLOTS,
        "resources": {"cpu": 1, "gpu": 0},
        "seeds": list(range(trials)),
        "tracking": {"wandb": wandb, "mode": "offline"},
        "storage": {"path": str(tmp)},
    }
    spec_path = tmp / "overhead.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp / "sweep"
    env = {**os.environ, "PIELAB_CACHE_DIR": str(tmp / "cache"), "WANDB_MODE": "offline"}
    began = time.time()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pielab", "sweep", str(spec_path), "--out", str(out)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*/result.json"))]
    return began, wall, results, first_batches(out, began)


def run_plain(base: dict, trials: int, tmp: Path) -> list[float]:
    os.environ["PIELAB_CACHE_DIR"] = str(tmp / "cache")
    from pielab.config import build_config
    from pielab.data import prepare
    from pielab.train import fit

    config = build_config(base)
    prepared = prepare(config.task, config.data)
    times = []
    for seed in range(trials):
        cfg = build_config({**base, "train": {**base["train"], "seed": seed}})
        times.append(fit(cfg, prepared=prepared, log=None)["train_time_s"])
    return times


def first_batches(sweep: Path, began: float) -> list[float]:
    """Seconds from the command's start to each trial's first training batch, earliest first (from the
    ``first_batch_at=`` of each trial journal's first epoch line)."""
    times = []
    for journal in (sweep / "tune").glob("*/epochs.log"):
        for line in journal.read_text().splitlines():
            if line.startswith("epoch ") and "first_batch_at=" in line:
                times.append(float(line.split("first_batch_at=")[1].split()[0]) - began)
                break
    return sorted(times)


def where_the_rest_goes(results: list[dict], began: float, wall: float, trial_time: float) -> str:
    """Split the slot-seconds that are not training: before the first trial starts (Ray, imports,
    data), inside trials but outside training (worker start, model build, checkpoints, reports), and
    after the last trial ends (shut-down, final files). result.json times are whole seconds."""
    from datetime import datetime

    spans = [(datetime.fromisoformat(r["started"]).timestamp() - began,
              datetime.fromisoformat(r["ended"]).timestamp() - began)
             for r in results if r.get("started") and r.get("ended")]
    if not spans:
        return "no trial start/end times recorded"
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    in_trials = sum(e - s for s, e in spans)
    return (f"slot-seconds not training, of {wall * SLOTS:.0f}: first trial started at +{first:.0f} s, last ended "
            f"at +{last:.0f} s of {wall:.0f} s; inside trials but not training {in_trials - trial_time:.0f}; "
            f"outside any trial {wall * SLOTS - in_trials:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset.npz"))
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--wandb", choices=("offline", "off"), default="offline",
                        help="the sweep's W&B runs: offline as in a real sweep (default), or off")
    parser.add_argument("--keep", help="copy the sweep folder here")
    parser.add_argument("--skip-plain", action="store_true", help="only the sweep (the efficiency needs no baseline)")
    args = parser.parse_args()
    base = workload(args.data, args.epochs)
    with tempfile.TemporaryDirectory(prefix="pielab-bench-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        plain = [] if args.skip_plain else run_plain(base, args.trials, tmp)
        plain_wall = time.perf_counter() - start
        began, wall, results, firsts = run_sweep(base, args.trials, tmp, wandb=args.wandb == "offline")
        if args.keep:
            shutil.copytree(tmp / "sweep", args.keep, dirs_exist_ok=True)
    states = {r["state"] for r in results}
    trial_time = sum(r["train_time_s"] for r in results)
    if plain:
        print(f"plain, back to back: {args.trials} workloads, {sum(plain):.1f} s training, {plain_wall:.1f} s wall "
              f"(mean {sum(plain) / len(plain):.1f} s per workload)")
    print(f"sweep, {SLOTS} at a time: {len(results)} trials ({', '.join(sorted(states))}), "
          f"{trial_time:.1f} s training, {wall:.1f} s wall (mean {trial_time / max(len(results), 1):.1f} s per trial)")
    if plain:
        print(f"speed-up over back to back: {plain_wall / wall:.2f}x on {SLOTS} slots; the plain process's training "
              f"time / (sweep wall x {SLOTS}): {sum(plain) / (wall * SLOTS):.3f}")
    print(where_the_rest_goes(results, began, wall, trial_time))
    if firsts:
        print(f"time to first batch: {firsts[0]:.1f} s (the command's start to the first trial's first training "
              f"batch; the second slot's first at {firsts[min(1, len(firsts) - 1)]:.1f} s)")
    print(f"efficiency (summed trial training time / (sweep wall x {SLOTS})): {trial_time / (wall * SLOTS):.3f}")


if __name__ == "__main__":
    main()
