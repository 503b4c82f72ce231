"""How much compute Optuna TPE with ASHA saves over random search without early stopping.

Two real `pielab sweep` runs per seed (Ray Tune + Optuna, in a subprocess each), on one fixed small
task from the shared data: a width-8 ResNet-10 (`myresnet34`, depth 10) on 1,000 real CIFAR-10
training images and 1,000 validation images, at most 9 epochs with a cosine learning rate, batch 64,
one core per trial, two trials at a time. Both arms search the same space with the same number of
trials (24) and the same maximum length; they differ only in the searcher and the scheduler:

* TPE+ASHA: ``search: {algorithm: tpe, n_startup_trials: 5, multivariate: true}`` (constant liar is
  pielab's default for TPE), ``scheduler: {name: asha, grace_period: 1, reduction_factor: 3}``:
  rungs at epochs 1 and 3, full length 9 (``max_t`` = ``train.epochs``).
* random: ``search: {algorithm: random}``, ``scheduler: {name: fifo}``: every trial runs all 9 epochs.

The space is one where a random draw is often bad: the learning rate log-uniform over 1e-5..1,
Adam or (Nesterov) SGD, weight decay log-uniform over 1e-6..1e-1.

Seed ``s`` (0, 1, 2 by default) is both arms' sampler seed (``search.seed``) and training seed
(``seeds: [s]``), so each seed is a paired comparison. Optuna's TPE draws its start-up trials with a
RandomSampler of the same seed, so TPE's first draws are the random arm's first draws.

    .venv/bin/python benchmarks/search.py [--seeds 3] [--trials 24] [--epochs 9] [--quick]

About 26 minutes on the project's 2 shared cores (load average 2 to 5); ``--quick`` (1 seed,
4 trials, 3 epochs, 500 + 500 images) is a smoke run of 2 to 3 minutes whose figure means nothing.
Measured on 2026-11-28: 1.72x (seeds 1.50, 1.46, 2.32), short of the 3x target. On 2026-11-29, with
``--seeds 5 --tpe-trials 72 --tpe-seed-offset 1000 --startup 8 --scheduler hyperband --brackets 2``: a median
of 1.38x over 5 paired seeds (4.71, 1.38, 0.32, 0.30, 8.94); BENCHMARKS.md says what limits it and what
else was tried.

Compute accounting, from the sweep folder's own files (``trials/<id>/result.json``, ``metrics.csv``):

* one unit = one trial-epoch (every trial-epoch is the same model on the same data);
* every trial-epoch is placed at its completion time, ``result.json started`` (the trial's start,
  whole seconds) plus that epoch's ``time/total_s`` (the trial's training time so far); ties go by
  trial number, then epoch. pielab records no wall-clock time per epoch, so this is the closest
  ordering its files give; with two trials at a time it interleaves them as they ran;
* a trial that diverged (non-finite loss, which a learning rate near 1 can cause) is charged one
  trial-epoch for the epoch it died in, at its ``ended`` time; it never counts as reaching anything.

The target of a seed is the best validation accuracy that BOTH arms reach: the lower of the two
arms' best ``val/acc`` over all their trial-epochs ("the same best validation accuracy"). Each arm's
compute is the number of trial-epochs, in completion order, up to and including the first epoch
whose ``val/acc`` reaches the target. Per-seed ratio = random's trial-epochs / TPE+ASHA's; the
last line prints the geometric mean of the per-seed ratios (target: >= 3).

A sweep that fails (non-zero exit, or a trial that failed rather than finished, stopped or
diverged) ends the benchmark with one line and exit status 1. ``--keep DIR`` keeps the sweep
folders and their logs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SLOTS = 2
ARMS = ("tpe_asha", "random")
LABELS = {"tpe_asha": "TPE+ASHA", "random": "random (no early stopping)"}

SPACE = {
    "parameters": {
        "train.lr": {"type": "float", "low": 1.0e-5, "high": 1.0, "log": True},
        "train.optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "train.weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-1, "log": True},
    }
}


def fail(message: str) -> None:
    print(f"search.py: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def workload(data: str, epochs: int, train_size: int, val_size: int, schedule: str) -> dict:
    return {
        "model": {"name": "myresnet34", "width": 8, "depth": 10},
        "data": {"path": data, "train_size": train_size, "val_size": val_size, "test_size": 500},
        "train": {"epochs": epochs, "batch_size": 64, "schedule": schedule, "threads": 1, "device": "cpu"},
    }


def arm_spec(arm: str, base: dict, seed: int, trials: int, args: argparse.Namespace, storage: Path) -> dict:
    if arm == "tpe_asha":
        # The searcher's seed is its own (seed + offset): with the random arm's seed, TPE's start-up draws
        # would be the random arm's first draws, and the two arms would not be independent samples.
        search = {"algorithm": "tpe", "seed": seed + args.tpe_seed_offset, "n_startup_trials": args.startup,
                  "multivariate": True}
        scheduler = {"name": args.scheduler, "grace_period": args.grace, "reduction_factor": args.reduction}
        if args.brackets:
            scheduler["brackets"] = args.brackets
        trials = args.tpe_trials or trials
    else:
        search = {"algorithm": "random", "seed": seed}
        scheduler = {"name": "fifo"}
    return {
        "name": f"search-{arm}-s{seed}",
        "base": base,
        "space": SPACE,
        "search": search,
        "scheduler": scheduler,
        "metric": "val/acc",
        "mode": "max",
        "num_trials": trials,
        "max_concurrent": SLOTS,
        "resources": {"cpu": 1, "gpu": 0},
        "seeds": [seed],
        "max_failures": 2,
        "tracking": {"wandb": False},
        "storage": {"path": str(storage)},
    }


def run_arm(spec: dict, work: Path, cache: Path) -> tuple[Path, float]:
    """One real `pielab sweep` in a subprocess; returns its folder and wall time, or ends the benchmark."""
    name = spec["name"]
    spec_path = work / f"{name}.yaml"
    text = yaml.safe_dump(spec, sort_keys=False)
    out = work / name
    log = work / f"{name}.log"
    done = work / f"{name}.done"  # written only after a sweep exited 0: --keep DIR reuses it when the spec is equal
    if done.is_file() and spec_path.is_file() and spec_path.read_text() == text and out.is_dir():
        print(f"{name}: reusing the finished sweep in {out}", flush=True)
        return out, float(done.read_text() or 0.0)
    done.unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    spec_path.write_text(text)
    env = {**os.environ, "PIELAB_CACHE_DIR": str(cache), "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "pielab", "sweep", str(spec_path), "--out", str(out)],
                              env=env, stdout=f, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else "(no output)"
        kept = Path(tempfile.gettempdir()) / f"pielab-{name}.log"  # outlives the temporary folder
        shutil.copyfile(log, kept)
        log = kept
        fail(f"sweep {name} exited with status {proc.returncode}: {last} (log: {log})")
    done.write_text(f"{wall:.1f}")
    return out, wall


def read_trials(sweep: Path, expected: int) -> list[dict]:
    """Every trial's result.json plus its metrics.csv rows (``rows``: epoch -> (val/acc, time/total_s))."""
    trials = []
    for folder in sorted((sweep / "trials").glob("*")):
        result_path = folder / "result.json"
        if not result_path.is_file():
            continue
        result = json.loads(result_path.read_text())
        rows = {}
        metrics = folder / "metrics.csv"
        if metrics.is_file():
            with open(metrics, newline="") as f:
                for row in csv.DictReader(f):
                    if row.get("epoch"):
                        rows[int(float(row["epoch"]))] = (float(row["val/acc"]), float(row["time/total_s"]))
        result["rows"] = rows
        trials.append(result)
    if len(trials) != expected:
        fail(f"sweep {sweep.name} recorded {len(trials)} trials, expected {expected}")
    bad = [t for t in trials if t["state"] not in ("completed", "early_stopped", "diverged")]
    if bad:
        t = bad[0]
        fail(f"sweep {sweep.name}: trial {t['trial_id']} ended {t['state']}: {t.get('reason')}")
    return trials


def timeline(trials: list[dict]) -> list[tuple[float, int, int, float | None]]:
    """Every trial-epoch as (completion time, trial number, epoch, val/acc or None), in completion order."""
    events = []
    for t in trials:
        started = datetime.fromisoformat(t["started"]).timestamp()
        for epoch, (val_acc, total_s) in t["rows"].items():
            events.append((started + total_s, t["number"], epoch, val_acc))
        if t["state"] == "diverged":  # the epoch it died in was paid for
            ended = datetime.fromisoformat(t["ended"]).timestamp() if t.get("ended") else math.inf
            events.append((ended, t["number"], max(t["rows"], default=0) + 1, None))
    return sorted(events, key=lambda e: (e[0], e[1], e[2]))


def epochs_to_reach(events: list[tuple], target: float) -> int | None:
    for i, (_, _, _, val_acc) in enumerate(events, 1):
        if val_acc is not None and val_acc >= target - 1e-9:
            return i
    return None


def best(events: list[tuple]) -> float:
    return max((e[3] for e in events if e[3] is not None), default=0.0)


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset.npz"))
    parser.add_argument("--seeds", type=int, default=3, help="search seeds 0..N-1 (default 3)")
    parser.add_argument("--trials", type=int, default=24, help="trials per arm (default 24)")
    parser.add_argument("--epochs", type=int, default=9, help="maximum epochs per trial (default 9)")
    parser.add_argument("--train-size", type=int, default=1000, help="CIFAR-10 training images (default 1000)")
    parser.add_argument("--val-size", type=int, default=1000, help="CIFAR-10 validation images (default 1000)")
    parser.add_argument("--schedule", default="cosine", choices=["constant", "cosine"],
                        help="learning-rate schedule over the full length (default cosine)")
    parser.add_argument("--grace", type=int, default=1, help="ASHA grace period in epochs (default 1)")
    parser.add_argument("--reduction", type=float, default=3, help="ASHA reduction factor (default 3)")
    parser.add_argument("--startup", type=int, default=5, help="TPE's random start-up trials (default 5)")
    parser.add_argument("--scheduler", default="asha", choices=["asha", "hyperband"],
                        help="the early-stopping arm's scheduler (default asha)")
    parser.add_argument("--brackets", type=int, default=None, help="Hyperband brackets (default: the scheduler's)")
    parser.add_argument("--tpe-trials", type=int, default=None,
                        help="trials of the TPE arm (default: --trials); early stopping frees compute for more")
    parser.add_argument("--tpe-seed-offset", type=int, default=0,
                        help="the TPE arm's sampler seed is seed + this (default 0: the random arm's seed)")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="also count compute to the target less this much val acc (default 0.01)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, 4 trials, 3 epochs, 500 + 500 images (the figure means nothing)")
    parser.add_argument("--keep", metavar="DIR", help="keep the sweep folders and logs in DIR")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.epochs, args.train_size, args.val_size, args.startup = 1, 4, 3, 500, 500, 2
    if not Path(args.data).is_file():
        fail(f"no CIFAR-10 data at {args.data} (pass --data PATH to cifar10_subset.npz)")
    if args.seeds < 1 or args.trials < 1 or args.epochs < 1:
        fail("--seeds, --trials and --epochs must be at least 1")

    base = workload(str(Path(args.data).resolve()), args.epochs, args.train_size, args.val_size, args.schedule)
    print(f"task: myresnet34 width 8 depth 10, {args.train_size} CIFAR-10 training / {args.val_size} validation "
          f"images, {args.schedule} learning rate, at most {args.epochs} epochs; {args.trials} trials per arm, {SLOTS} at a time; seeds {args.first_seed}..{args.first_seed + args.seeds - 1}",
          flush=True)
    print(f"TPE+ASHA: {args.tpe_trials or args.trials} trials, sampler seed + {args.tpe_seed_offset}, "
          f"n_startup_trials {args.startup}, multivariate; {args.scheduler} grace {args.grace}, "
          f"reduction factor {args.reduction:g}, brackets {args.brackets or 'default'}. "
          f"random: fifo, every trial at full length", flush=True)

    tmp_ctx = tempfile.TemporaryDirectory(prefix="pielab-search-")
    work = Path(args.keep).resolve() if args.keep else Path(tmp_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(tmp_ctx.name) / "cache"
    rows = []
    t_start = time.perf_counter()
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            per_arm = {}
            for arm in ARMS:
                spec = arm_spec(arm, base, seed, args.trials, args, work)
                sweep, wall = run_arm(spec, work, cache)
                trials = read_trials(sweep, spec["num_trials"])
                events = timeline(trials)
                per_arm[arm] = {
                    "events": events, "wall": wall, "best": best(events),
                    "train_s": sum(t.get("train_time_s") or 0.0 for t in trials),
                    "states": {s: sum(t["state"] == s for t in trials) for s in ("completed", "early_stopped", "diverged")},
                }
                print(f"seed {seed} {LABELS[arm]}: {len(events)} trial-epochs, best val acc {per_arm[arm]['best']:.3f}, "
                      f"{per_arm[arm]['train_s']:.0f} s training, {wall:.0f} s wall, {per_arm[arm]['states']}", flush=True)
            target = min(per_arm[arm]["best"] for arm in ARMS)
            need = {arm: epochs_to_reach(per_arm[arm]["events"], target) for arm in ARMS}
            if any(n is None for n in need.values()):  # cannot happen: target is an arm's own best at most
                fail(f"seed {seed}: an arm never reached {target:.3f}")
            ratio = need["random"] / need["tpe_asha"]
            # The same target less the tolerance: a best over 1,000 validation images is itself noisy
            # (one standard error of an accuracy near 0.35 is 0.015), so a strict target can hinge on 1 image.
            near = {arm: epochs_to_reach(per_arm[arm]["events"], target - args.tolerance) for arm in ARMS}
            near_ratio = near["random"] / near["tpe_asha"]
            rows.append({"seed": seed, "target": target, "need": need, "ratio": ratio, "near": near,
                         "near_ratio": near_ratio, **{a: per_arm[a] for a in ARMS}})
            print(f"seed {seed}: target val acc {target:.3f}: random {need['random']} trial-epochs, "
                  f"TPE+ASHA {need['tpe_asha']} -> ratio {ratio:.2f}; within {args.tolerance:g}: random "
                  f"{near['random']}, TPE+ASHA {near['tpe_asha']} -> {near_ratio:.2f}", flush=True)
    finally:
        tmp_ctx.cleanup()  # the data cache, and the sweeps unless --keep
    total = time.perf_counter() - t_start

    print()
    print("| seed | target val acc | best TPE+ASHA / random | trial-epochs to target: random | TPE+ASHA | ratio "
          f"| within {args.tolerance:g}: random | TPE+ASHA | ratio | all trial-epochs: random / TPE+ASHA |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['seed']} | {r['target']:.3f} | {r['tpe_asha']['best']:.3f} / {r['random']['best']:.3f} "
              f"| {r['need']['random']} | {r['need']['tpe_asha']} | {r['ratio']:.2f} "
              f"| {r['near']['random']} | {r['near']['tpe_asha']} | {r['near_ratio']:.2f} "
              f"| {len(r['random']['events'])} / {len(r['tpe_asha']['events'])} |")
    ratios = [r["ratio"] for r in rows]
    near_ratios = [r["near_ratio"] for r in rows]
    print(f"per-seed ratios {', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}; "
          f"total run time {total / 60:.1f} min")
    print(f"within {args.tolerance:g} of the target: per-seed ratios {', '.join(f'{x:.2f}' for x in near_ratios)}; "
          f"median {statistics.median(near_ratios):.2f}; geometric mean {geomean(near_ratios):.2f}")
    print(f"compute ratio, random / TPE+ASHA trial-epochs to the same best val acc "
          f"(median of {len(ratios)} paired seeds): {statistics.median(ratios):.2f}x "
          f"(geometric mean {geomean(ratios):.2f}x)")


if __name__ == "__main__":
    main()
