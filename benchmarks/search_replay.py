"""How much compute TPE+ASHA saves over random search, replayed against recorded learning curves.

The live benchmark (``benchmarks/search.py``) runs real sweeps, so a handful of seeds takes half an hour and
its ratio swung from 0.3x to 8.9x between seeds. Here, as in the tabular benchmarks of the HPO literature
(and Syne Tune's simulated back end), every configuration of a grid over a space users run is trained once
and its learning curve recorded (``record``); the searchers and the scheduler are then replayed against that
table on a simulated clock (``replay``), so 20 paired seeds take seconds and the figure comes with an
interval.

The space: the CIFAR-10 ResNet space (``search_spaces/cifar10_resnet.yaml``) at CPU scale: learning rate
(1e-4 to 1e-2, 5 log points), optimizer (Adam, Nesterov SGD), weight decay (1e-6, 1e-4, 1e-2), depth
(10, 18), residual connections (on, off), dropout (0, 0.5): 240 configurations of a width-4 ResNet on 500
real CIFAR-10 training and 500 validation images, 9 epochs with a cosine schedule, batch 64, one thread.

The replay, per seed (both arms get the same seed), with two slots as in a real sweep:

* random: Optuna's RandomSampler, every trial runs all 9 epochs (FIFO);
* TPE+ASHA: Optuna's TPESampler (multivariate, constant liar, 8 start-up trials) with asynchronous
  successive halving at rungs 1, 3 and 9 (reduction factor 3): a trial reporting at a rung continues only
  when it is in the top third of what reached that rung so far (Ray's ASHAScheduler's rule).

The samplers propose continuous values where the space is continuous; a proposal is evaluated at the
nearest recorded grid point (log scale for the learning rate and weight decay). Each trial-epoch takes the
time it took when it was recorded, on a simulated clock shared by the two slots. Compute = the
trial-epoch seconds spent, in completion order, up to the first epoch whose validation accuracy reaches the
target: the 90th percentile of all 240 configurations' final accuracies. Per seed: random's compute divided by
TPE+ASHA's; an arm that has not reached the target within ``--budget`` trials is charged what it spent (so
its ratio is a bound). The last line prints the median over seeds with a 95% bootstrap interval.

    .venv/bin/python benchmarks/search_replay.py record [--out benchmarks/tables/cifar10_cpu.csv] [--workers 2]
    .venv/bin/python benchmarks/search_replay.py replay [--table ...] [--seeds 20] [--budget 48]
    .venv/bin/python benchmarks/search_replay.py confirm [--seeds 3] [--budget 48] [--keep DIR]

``record`` trains the 240 configurations (about 15 minutes on 2 quiet cores) and can be stopped and
rerun: it keeps the rows it has. ``replay`` needs only the table (committed).

``confirm`` checks the replay against the real thing: for each seed, two real ``pielab sweep`` runs (through
``benchmarks/search.py``'s runner) on the same task and space, random + FIFO and TPE + ASHA with the replay's
settings, the sampler seed shared by both arms and the training seed 0 as in the table. Compute is counted as
in the replay (trial-epoch seconds from each trial's ``metrics.csv``, in completion order, up to the first
epoch at the table's target), and each seed's real ratio is printed beside the replay's for the same seed.
About 4 minutes a seed on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import itertools
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "benchmarks" / "tables" / "cifar10_cpu.csv"
EPOCHS = 9
RUNGS = (1, 3, 9)
REDUCTION = 3
SLOTS = 2

GRID = {
    "train.lr": [1.0e-4, 3.16e-4, 1.0e-3, 3.16e-3, 1.0e-2],
    "train.optimizer": ["adam", "sgd"],
    "train.weight_decay": [1.0e-6, 1.0e-4, 1.0e-2],
    "model.depth": [10, 18],
    "model.residual": [True, False],
    "model.dropout": [0.0, 0.5],
}
LOG_KEYS = ("train.lr", "train.weight_decay")
FIELDS = [*GRID, "epoch", "val_acc", "epoch_s"]


def base_config(data: str) -> dict:
    return {
        "model": {"name": "myresnet34", "width": 4},
        "data": {"path": data, "train_size": 500, "val_size": 500, "test_size": 100},
        "train": {"epochs": EPOCHS, "batch_size": 64, "schedule": "cosine", "momentum": 0.9, "threads": 1,
                  "device": "cpu", "seed": 0},
    }


def configs() -> list[dict]:
    keys = list(GRID)
    return [dict(zip(keys, values)) for values in itertools.product(*GRID.values())]


def key_of(config: dict) -> tuple:
    return tuple(str(config[k]) for k in GRID)


# --------------------------------------------------------------------------- record


def _train_one(args: tuple[dict, str]) -> list[dict]:
    config, data = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pielab.config import build_config
    from pielab.train import fit

    raw = base_config(data)
    for dotted, value in config.items():
        section, name = dotted.split(".")
        raw[section][name] = value
    rows, last = [], [time.perf_counter()]

    def on_epoch(metrics, _state):
        now = time.perf_counter()
        rows.append({**config, "epoch": int(metrics["epoch"]), "val_acc": float(metrics["val/acc"]),
                     "epoch_s": round(now - last[0], 3)})
        last[0] = now

    try:
        fit(build_config(raw), on_epoch=on_epoch, log=None)
    except Exception as exc:  # noqa: BLE001 - a diverged configuration is a curve that stops; record what it did
        # the epoch it died in, with its time and no accuracy: a replayed trial pays it and fails there
        rows.append({**config, "epoch": len(rows) + 1, "val_acc": float("nan"),
                     "epoch_s": round(time.perf_counter() - last[0], 3)})
        print(f"{key_of(config)}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", file=sys.stderr)
    return rows


def record(args) -> None:
    from concurrent.futures import ProcessPoolExecutor

    out = Path(args.out)
    done = set()
    if out.is_file():
        with out.open() as f:
            done = {tuple(r[k] for k in GRID) for r in csv.DictReader(f)}
    todo = [c for c in configs() if key_of(c) not in done]
    print(f"{len(todo)} of {len(configs())} configurations to train ({len(done)} recorded in {out})", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.is_file()
    start = time.perf_counter()
    with out.open("a", newline="") as f, ProcessPoolExecutor(args.workers) as pool:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for i, rows in enumerate(pool.map(_train_one, [(c, args.data) for c in todo]), 1):
            writer.writerows(rows)
            f.flush()
            if i % 10 == 0 or i == len(todo):
                print(f"{i}/{len(todo)} trained, {time.perf_counter() - start:.0f} s", flush=True)


# --------------------------------------------------------------------------- replay


def load_table(path: Path) -> dict[tuple, list[tuple[float, float]]]:
    """config key -> [(val_acc, epoch_s)] by epoch (shorter than EPOCHS when it diverged)."""
    curves: dict[tuple, list[tuple[int, float, float]]] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            curves.setdefault(tuple(r[k] for k in GRID), []).append(
                (int(r["epoch"]), float(r["val_acc"]), float(r["epoch_s"])))
    return {k: [(acc, s) for _, acc, s in sorted(v)] for k, v in curves.items()}


def nearest(config: dict) -> tuple:
    """The recorded grid point nearest to a proposal (log distance for learning rate and weight decay)."""
    key = []
    for name, points in GRID.items():
        value = config[name]
        if isinstance(points[0], (int, float)) and not isinstance(points[0], bool):
            metric = (lambda p: abs(math.log(p) - math.log(value))) if name in LOG_KEYS else (lambda p: abs(p - value))
            value = min(points, key=metric)
        key.append(str(value))
    return tuple(key)


def suggest(trial) -> dict:
    return {
        "train.lr": trial.suggest_float("train.lr", 1.0e-4, 1.0e-2, log=True),
        "train.optimizer": trial.suggest_categorical("train.optimizer", ["adam", "sgd"]),
        "train.weight_decay": trial.suggest_float("train.weight_decay", 1.0e-6, 1.0e-2, log=True),
        "model.depth": trial.suggest_categorical("model.depth", [10, 18]),
        "model.residual": trial.suggest_categorical("model.residual", [True, False]),
        "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.5),
    }


def simulate(curves, sampler, asha: bool, budget: int, target: float, rungs=RUNGS) -> tuple[float, bool, int]:
    """Run ``budget`` trials on SLOTS simulated slots; returns (trial-epoch seconds spent until the target was
    first reached, or all spent; whether it was reached; trial-epochs spent)."""
    import numpy as np
    import optuna

    study = optuna.create_study(direction="maximize", sampler=sampler)
    recorded: dict[int, list[float]] = {r: [] for r in rungs[:-1]}  # ASHA's values at each rung so far
    events: list[tuple[float, int, int]] = []  # (finish time of the trial's next epoch, tie-break, trial index)
    running: dict[int, dict] = {}
    order = itertools.count()
    spent, epochs_spent, started, now = 0.0, 0, 0, 0.0

    def fill() -> None:
        nonlocal started
        while len(running) < SLOTS and started < budget:
            trial = study.ask()
            started += 1
            idx = next(order)
            running[idx] = {"trial": trial, "curve": curves[nearest(suggest(trial))], "epoch": 0}
            heapq.heappush(events, (now + running[idx]["curve"][0][1], next(order), idx))

    fill()
    while events:
        now, _, idx = heapq.heappop(events)
        run = running[idx]
        acc, seconds = run["curve"][run["epoch"]]
        run["epoch"] += 1
        epoch = run["epoch"]
        spent += seconds
        epochs_spent += 1
        if math.isnan(acc):  # diverged in this epoch: it cost its time and fails
            study.tell(run["trial"], state=optuna.trial.TrialState.FAIL)
            del running[idx]
            fill()
            continue
        if acc >= target:
            return spent, True, epochs_spent
        run["trial"].report(acc, epoch)
        stop = epoch >= len(run["curve"])
        if asha and epoch in recorded:
            # Ray's ASHA: the first trial at a rung goes on; later ones stop below the (1 - 1/rf) quantile of
            # the values recorded there before them
            if recorded[epoch] and acc < np.percentile(recorded[epoch], (1 - 1 / REDUCTION) * 100):
                stop = True
            recorded[epoch].append(acc)
        if stop:
            if epoch >= EPOCHS:
                study.tell(run["trial"], acc)
            else:
                study.tell(run["trial"], state=optuna.trial.TrialState.PRUNED)
            del running[idx]
            fill()
        else:
            heapq.heappush(events, (now + run["curve"][epoch][1], next(order), idx))
    return spent, False, epochs_spent


def bootstrap_median(values: list[float], rounds: int = 10000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


def target_of(curves, percentile: float) -> tuple[float, list[float]]:
    """The target val/acc (the ``percentile``-th percentile of the recorded final accuracies) and those finals."""
    finals = sorted(c[-1][0] for c in curves.values() if len(c) == EPOCHS and not math.isnan(c[-1][0]))
    return finals[int(math.ceil(percentile / 100 * len(finals))) - 1], finals


def bound_of(rand_reached: bool, tpe_reached: bool) -> str:
    if rand_reached and tpe_reached:
        return ""
    if tpe_reached:
        return " (random never reached it: at least)"
    return " (TPE+ASHA never reached it: at most)" if rand_reached else " (neither)"


def replay_seed(curves, seed: int, args, target: float) -> tuple[tuple, tuple]:
    """One paired seed on the simulated clock: (random's, TPE+ASHA's) ``simulate`` results."""
    import optuna

    rungs = tuple(int(r) for r in args.rungs.split(","))
    rand = simulate(curves, optuna.samplers.RandomSampler(seed=seed), False, args.budget, target)
    tpe_sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=args.startup, multivariate=True,
                                             constant_liar=True)
    return rand, simulate(curves, tpe_sampler, True, args.budget, target, rungs)


def replay(args) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    curves = load_table(Path(args.table))
    missing = len(configs()) - len(curves)
    target, finals = target_of(curves, args.percentile)
    print(f"{len(curves)} configurations recorded ({missing} missing), target val/acc {target:.3f} (the "
          f"{args.percentile:g}th percentile of {len(finals)} final accuracies; best {finals[-1]:.3f})")
    ratios = []
    for seed in range(args.seeds):
        rand, tpe = replay_seed(curves, seed, args, target)
        ratio = rand[0] / tpe[0]
        ratios.append(ratio)
        print(f"seed {seed:2d}: random {rand[0]:7.1f} s ({rand[2]:3d} trial-epochs), TPE+ASHA {tpe[0]:7.1f} s "
              f"({tpe[2]:3d}): {ratio:.2f}x{bound_of(rand[1], tpe[1])}")
    low, high = bootstrap_median(ratios)
    print(f"median over {len(ratios)} seeds: {statistics.median(ratios):.2f}x less compute for TPE+ASHA to reach "
          f"the target (95% bootstrap interval {low:.2f}-{high:.2f}; target >= 3x)")


# --------------------------------------------------------------------------- confirm with real sweeps

# The replay's space as a pielab spec: the same ranges and choices as ``suggest``.
SPACE = {
    "train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "train.optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "train.weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-2, "log": True},
    "model.depth": {"type": "categorical", "choices": [10, 18]},
    "model.residual": {"type": "categorical", "choices": [True, False]},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
}


def confirm_spec(arm: str, seed: int, args, data: str, storage: Path) -> dict:
    base = base_config(data)
    del base["train"]["seed"]  # the spec's seeds: [0] sets it, as the table was recorded
    if arm == "tpe_asha":
        rungs = [int(r) for r in args.rungs.split(",")]
        search = {"algorithm": "tpe", "seed": seed, "n_startup_trials": args.startup, "multivariate": True}
        scheduler = {"name": "asha", "grace_period": rungs[0], "reduction_factor": REDUCTION}
    else:
        search, scheduler = {"algorithm": "random", "seed": seed}, {"name": "fifo"}
    return {"name": f"confirm-{arm}-s{seed}", "base": base, "space": {"parameters": SPACE}, "search": search,
            "scheduler": scheduler, "metric": "val/acc", "mode": "max", "num_trials": args.budget,
            "max_concurrent": SLOTS, "resources": {"cpu": 1, "gpu": 0}, "seeds": [0], "max_failures": 2,
            "tracking": {"wandb": False}, "storage": {"path": str(storage)}}


def _live():
    """``benchmarks/search.py``: the live benchmark's runner, folder reader and timeline."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import search as live

    return live


def real_compute(trials: list[dict], target: float, diverged_s: float) -> tuple[float, bool, int]:
    """``simulate``'s answer for a real sweep: trial-epoch seconds (each epoch's ``time/total_s`` step) in
    completion order (``search.timeline``) up to the first epoch at ``target``; a diverged trial's last epoch
    costs ``diverged_s``."""
    steps = {}  # (trial number, epoch) -> that epoch's seconds
    for t in trials:
        previous = 0.0
        for epoch, (_, total_s) in sorted(t["rows"].items()):
            steps[t["number"], epoch] = total_s - previous
            previous = total_s
    spent, count = 0.0, 0
    for _, number, epoch, val_acc in _live().timeline(trials):
        spent += steps.get((number, epoch), diverged_s)
        count += 1
        if val_acc is not None and val_acc >= target - 1e-9:
            return spent, True, count
    return spent, False, count


def confirm(args) -> None:
    import shutil
    import tempfile

    import optuna

    live = _live()  # the live benchmark's runner: a real `pielab sweep` in a subprocess
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    curves = load_table(Path(args.table))
    target, _ = target_of(curves, args.percentile)
    diverged_s = statistics.median(s for c in curves.values() for _, s in c)
    data = str(Path(args.data).resolve())
    if not Path(data).is_file():
        live.fail(f"no CIFAR-10 data at {data} (pass --data PATH to cifar10_subset.npz)")
    tmp = tempfile.mkdtemp(prefix="pielab-confirm-")
    work = Path(args.keep).resolve() if args.keep else Path(tmp)
    work.mkdir(parents=True, exist_ok=True)
    print(f"target val/acc {target:.3f} (the table's {args.percentile:g}th percentile); {args.budget} trials per "
          f"arm, {SLOTS} at a time; seeds {args.first_seed}..{args.first_seed + args.seeds - 1}", flush=True)
    real_ratios, replayed = [], []
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            found, walls = {}, {}
            for arm in ("random", "tpe_asha"):
                spec = confirm_spec(arm, seed, args, data, work)
                folder, walls[arm] = live.run_arm(spec, work, Path(tmp) / "cache")
                found[arm] = real_compute(live.read_trials(folder, args.budget), target, diverged_s)
            rand, tpe = found["random"], found["tpe_asha"]
            sim_rand, sim_tpe = replay_seed(curves, seed, args, target)
            real_ratios.append((rand[0] / tpe[0], rand[2] / tpe[2]))
            replayed.append((sim_rand[0] / sim_tpe[0], sim_rand[2] / sim_tpe[2]))
            print(f"seed {seed}: real: random {rand[0]:6.1f} s ({rand[2]:3d} trial-epochs, sweep {walls['random']:.0f}"
                  f" s), TPE+ASHA {tpe[0]:6.1f} s ({tpe[2]:3d}, sweep {walls['tpe_asha']:.0f} s): "
                  f"{real_ratios[-1][0]:.2f}x in seconds, {real_ratios[-1][1]:.2f}x in trial-epochs"
                  f"{bound_of(rand[1], tpe[1])}; replayed: {replayed[-1][0]:.2f}x, {replayed[-1][1]:.2f}x"
                  f"{bound_of(sim_rand[1], sim_tpe[1])}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for i, unit in enumerate(("trial-epoch seconds", "trial-epochs (independent of the machine's load)")):
        real, sim = [r[i] for r in real_ratios], [r[i] for r in replayed]
        print(f"in {unit}: real sweeps median {statistics.median(real):.2f}x over {len(real)} seeds "
              f"({', '.join(f'{r:.2f}' for r in real)}); the replay on the same seeds {statistics.median(sim):.2f}x "
              f"({', '.join(f'{r:.2f}' for r in sim)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="train every configuration once and record its learning curve")
    rec.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset.npz"))
    rec.add_argument("--out", default=str(TABLE))
    rec.add_argument("--workers", type=int, default=2)
    rep = sub.add_parser("replay", help="replay random and TPE+ASHA against the recorded table")
    rep.add_argument("--table", default=str(TABLE))
    rep.add_argument("--seeds", type=int, default=20)
    rep.add_argument("--budget", type=int, default=48, help="trials per arm and seed")
    rep.add_argument("--startup", type=int, default=8, help="TPE's random start-up trials")
    rep.add_argument("--percentile", type=float, default=90.0)
    rep.add_argument("--rungs", default=",".join(map(str, RUNGS)),
                     help="ASHA's rungs, the last one the full length (default 1,3,9: grace period 1, factor 3)")
    con = sub.add_parser("confirm", help="real sweeps on a few seeds, each ratio beside the replay's")
    con.add_argument("--table", default=str(TABLE))
    con.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset.npz"))
    con.add_argument("--seeds", type=int, default=3)
    con.add_argument("--first-seed", type=int, default=0)
    con.add_argument("--budget", type=int, default=48, help="trials per arm and seed")
    con.add_argument("--startup", type=int, default=8, help="TPE's random start-up trials")
    con.add_argument("--percentile", type=float, default=90.0)
    con.add_argument("--rungs", default=",".join(map(str, RUNGS)))
    con.add_argument("--keep", metavar="DIR", help="keep the sweep folders and logs in DIR (a rerun reuses them)")
    args = parser.parse_args()
    {"record": record, "replay": replay, "confirm": confirm}[args.command](args)


if __name__ == "__main__":
    main()
