"""pielab against what a lab would write instead: the same trials through plain Ray Tune and plain Optuna.

Three arms run the same trial function, ``pielab.train.fit`` on the same config (the quickstart's
width-8 ResNet on the shared CIFAR-10 file, a fixed number of epochs, one thread per trial, two trials at a
time), over the same search space (the quickstart's: depth 10 or 18, residual on or off, learning rate),
with the same number of trials and the same seed:

- ``pielab``: ``pielab sweep`` through the console script (TPE, ASHA; its folder, journal, lease,
  accounting, live display and W&B offline, as a user runs it);
- ``tune``: a plain Ray Tune script, ``Tuner`` + ``OptunaSearch`` (TPE) + ``ASHAScheduler`` with Tune's
  defaults, no pielab code but ``fit``;
- ``optuna``: plain Optuna, two worker processes running ``study.optimize`` on one SQLite study, TPE
  and a ``SuccessiveHalvingPruner`` with the same rungs as ASHA.

The arms are interleaved (pielab, tune, optuna, pielab, ...) for ``--rounds`` rounds, so a change in the
machine's load hits all three alike. Per arm (median over rounds): wall time of the whole command, trials
per hour, time from the command's start to the first training batch, the tail after the last trial ended,
the peak resident memory of the driver process and of its whole process tree (Ray's GCS, raylet and
workers, or Optuna's two workers), and the best validation accuracy reached. The last lines print
pielab's throughput as a ratio of the faster peer's (target >= 0.95) and its driver's peak RSS as a ratio
of Ray Tune's driver (target <= 1.25).

``--short`` runs the short-trial round instead: many trials of one epoch of a width-4 ResNet-10 on 100
images (0.1-0.2 s of training), where bookkeeping dominates; ``--short --train-size 1000`` makes them about
one second, the length of Ray Tune's own published figure (about 14% overhead for 10,000 one-second
trials on one 16-CPU node).

    .venv/bin/python benchmarks/peers.py [--rounds 3] [--trials 8] [--epochs 4] [--arms pielab,tune,optuna]
    .venv/bin/python benchmarks/peers.py --short [--trials 200] [--train-size 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import yaml

from pielab.folder import read_metrics_csv
from soak import rss_bytes
from sweep_overhead import first_batches

REPO = Path(__file__).resolve().parents[1]
SLOTS = 2
FIRST_BATCH_FILE = "first_batch.txt"  # peers append time.time() of each trial's first batch here
TRAIN_FILE = "epoch_seconds.txt"  # peers append each epoch's time/epoch_s (fit's own clock) here


def workload(data: str, epochs: int, short: bool, train_size: int | None = None) -> dict:
    """The base config every arm trains (the quickstart's model; sizes for a benchmark on 2 cores).
    ``train_size``: training images per epoch (default 100 for the short round, 1,000 otherwise)."""
    sizes = ({"train_size": 100, "val_size": 100, "test_size": 100} if short else
             {"train_size": 1000, "val_size": 500, "test_size": 500})
    if train_size:
        sizes["train_size"] = train_size
    return {
        "model": {"name": "myresnet34", "width": 4 if short else 8, "depth": 10},
        "data": {"path": data, **sizes},
        "train": {"epochs": epochs, "batch_size": 50 if short else 64, "threads": 1, "device": "cpu"},
    }


def space_spec(short: bool) -> dict:
    """The quickstart's search space (search_spaces/quickstart.yaml); the short round keeps depth 10."""
    params = {"model.residual": {"type": "bool"},
              "train.lr": {"type": "float", "low": 3.0e-4, "high": 1.0e-2, "log": True}}
    if not short:
        params["model.depth"] = {"type": "categorical", "choices": [10, 18]}
    return {"parameters": params}


# --------------------------------------------------------------------------- measuring a process tree


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _rss_mib(pid: int) -> float:
    return (rss_bytes(pid) or 0) / 2**20


class TreeMemory(threading.Thread):
    """Samples the resident memory of ``pid`` and of its whole process tree every 0.2 s; peaks in MiB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.driver_peak, self.tree_peak, self.done = pid, 0.0, 0.0, False

    def run(self) -> None:
        while not self.done:
            tree, todo, seen = 0.0, [self.pid], set()
            while todo:
                pid = todo.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                tree += _rss_mib(pid)
                todo += _children(pid)
            self.driver_peak = max(self.driver_peak, _rss_mib(self.pid))
            self.tree_peak = max(self.tree_peak, tree)
            time.sleep(0.2)


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float, float]:
    """Run ``cmd``; returns (began, wall seconds, driver peak RSS MiB, tree peak RSS MiB). Exits on failure."""
    began = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        memory = TreeMemory(proc.pid)
        memory.start()
        proc.wait()
        memory.done = True
    wall = time.time() - began
    if proc.returncode != 0:
        sys.exit(f"{cmd[:3]} failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    return began, wall, memory.driver_peak, memory.tree_peak


# --------------------------------------------------------------------------- the three arms


def arm_pielab(base: dict, args, seed: int, tmp: Path) -> dict:
    spec = {
        "name": "peers",
        "base": base,
        "space": space_spec(args.short),
        "search": {"algorithm": "tpe", "seed": seed, "n_startup_trials": args.startup},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "num_trials": args.trials,
        "max_concurrent": SLOTS,
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 0,
        "tracking": {"wandb": args.wandb == "offline", "mode": "offline"},
    }
    spec_path = tmp / "peers.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp / "sweep"
    env = {**os.environ, "PIELAB_CACHE_DIR": str(tmp / "cache"), "WANDB_MODE": "offline"}
    exe = Path(sys.executable).with_name("pielab")
    began, wall, driver, tree = run_measured([str(exe), "sweep", str(spec_path), "--out", str(out)], env,
                                             tmp / "pielab.log")
    firsts = [began + t for t in first_batches(out, began)]  # from the trials' journals
    results = [json.loads(p.read_text()) for p in (out / "trials").glob("*/result.json")]
    ends = [p.stat().st_mtime for p in (out / "trials").glob("*/metrics.csv")]
    best = max((r.get("best_val_acc") or 0.0) for r in results) if results else float("nan")
    train = sum(row["time/epoch_s"] or 0.0 for p in (out / "trials").glob("*/metrics.csv")
                for row in read_metrics_csv(p).values())
    return dict(began=began, wall=wall, driver=driver, tree=tree, firsts=firsts, ends=ends, trials=len(results),
                best=best, train=train)


TUNE_SCRIPT = textwrap.dedent('''
    import json, sys
    import optuna, ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    base, trials, epochs, seed, startup, out, first_file, train_file = json.loads(sys.argv[1])

    def trainable(params):
        from pielab.config import build_config
        from pielab.train import fit

        cfg = {k: dict(v) for k, v in base.items()}
        for key, value in params.items():
            section, name = key.split(".")
            cfg[section][name] = value

        def first(t):
            with open(first_file, "a") as f:
                f.write(f"{t}\\n")

        def on_epoch(m, s):
            with open(train_file, "a") as f:
                f.write(f"{m['time/epoch_s']}\\n")
            tune.report({"val_acc": m["val/acc"], "epoch": m["epoch"]})

        fit(build_config(cfg), log=None, on_first_batch=first, on_epoch=on_epoch)

    space = {"model.residual": optuna.distributions.CategoricalDistribution([True, False]),
             "train.lr": optuna.distributions.FloatDistribution(3.0e-4, 1.0e-2, log=True)}
    if "depth" not in base["model"]:
        space["model.depth"] = optuna.distributions.CategoricalDistribution([10, 18])
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space=space, metric="val_acc", mode="max",
                                    sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)),
            scheduler=ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=epochs,
                                    grace_period=1, reduction_factor=2),
            num_samples=trials, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=out, name="tune", verbose=0),
    )
    grid = tuner.fit()
    best = grid.get_best_result(metric="val_acc", mode="max", scope="all")
    print(json.dumps({"best": best.metrics["val_acc"], "trials": len(grid), "errors": len(grid.errors)}))
''')


def arm_tune(base: dict, args, seed: int, tmp: Path) -> dict:
    base = json.loads(json.dumps(base))
    if not args.short:
        base["model"].pop("depth")  # searched
    first_file, train_file = tmp / FIRST_BATCH_FILE, tmp / TRAIN_FILE
    payload = json.dumps([base, args.trials, base["train"]["epochs"], seed, args.startup, str(tmp / "ray"),
                          str(first_file), str(train_file)])
    env = {**os.environ, "PIELAB_CACHE_DIR": str(tmp / "cache"), "RAY_USAGE_STATS_ENABLED": "0"}
    script = tmp / "tune_peer.py"
    script.write_text(TUNE_SCRIPT)
    began, wall, driver, tree = run_measured([sys.executable, str(script), payload], env, tmp / "tune.log")
    summary = json.loads((tmp / "tune.log").read_text().strip().splitlines()[-1])
    ends = [p.stat().st_mtime for p in (tmp / "ray" / "tune").glob("*/result.json")]
    return dict(began=began, wall=wall, driver=driver, tree=tree, firsts=_floats(first_file), ends=ends,
                trials=summary["trials"], best=summary["best"], train=sum(_floats(train_file)))


OPTUNA_SCRIPT = textwrap.dedent('''
    import json, subprocess, sys, time
    import optuna

    base, trials, epochs, seed, startup, url, first_file, ends_file, train_file = json.loads(sys.argv[1])
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def worker(index):
        from pielab.config import build_config
        from pielab.train import fit

        study = optuna.load_study(study_name="peers", storage=url,
                                  sampler=optuna.samplers.TPESampler(seed=seed + index, n_startup_trials=startup),
                                  pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))

        def objective(trial):
            cfg = {k: dict(v) for k, v in base.items()}
            cfg["model"]["residual"] = trial.suggest_categorical("model.residual", [True, False])
            cfg["train"]["lr"] = trial.suggest_float("train.lr", 3.0e-4, 1.0e-2, log=True)
            if "depth" not in base["model"]:
                cfg["model"]["depth"] = trial.suggest_categorical("model.depth", [10, 18])
            last = [0.0]

            def first(t):
                with open(first_file, "a") as f:
                    f.write(f"{t}\\n")

            def on_epoch(m, s):
                with open(train_file, "a") as f:
                    f.write(f"{m['time/epoch_s']}\\n")
                last[0] = m["val/acc"]
                trial.report(m["val/acc"], m["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

            try:
                fit(build_config(cfg), log=None, on_first_batch=first, on_epoch=on_epoch)
            finally:
                with open(ends_file, "a") as f:
                    f.write(f"{time.time()}\\n")
            return last[0]

        study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(trials, states=None)])

    if len(sys.argv) > 2:
        worker(int(sys.argv[2]))
        sys.exit(0)
    optuna.create_study(study_name="peers", storage=url, direction="maximize")
    procs = [subprocess.Popen([sys.executable, sys.argv[0], sys.argv[1], str(i)]) for i in range(2)]
    if any(p.wait() for p in procs):
        sys.exit("an Optuna worker failed")
    study = optuna.load_study(study_name="peers", storage=url)
    values = [t.value for t in study.trials if t.value is not None] + [
        max(t.intermediate_values.values()) for t in study.trials if t.value is None and t.intermediate_values]
    print(json.dumps({"best": max(values), "trials": len(study.trials)}))
''')


def arm_optuna(base: dict, args, seed: int, tmp: Path) -> dict:
    base = json.loads(json.dumps(base))
    if not args.short:
        base["model"].pop("depth")
    first_file, ends_file, train_file = tmp / FIRST_BATCH_FILE, tmp / "ends.txt", tmp / TRAIN_FILE
    payload = json.dumps([base, args.trials, base["train"]["epochs"], seed, args.startup,
                          f"sqlite:///{tmp / 'optuna.db'}", str(first_file), str(ends_file), str(train_file)])
    script = tmp / "optuna_peer.py"
    script.write_text(OPTUNA_SCRIPT)
    env = {**os.environ, "PIELAB_CACHE_DIR": str(tmp / "cache")}
    began, wall, driver, tree = run_measured([sys.executable, str(script), payload], env, tmp / "optuna.log")
    summary = json.loads((tmp / "optuna.log").read_text().strip().splitlines()[-1])
    return dict(began=began, wall=wall, driver=driver, tree=tree, firsts=_floats(first_file),
                ends=_floats(ends_file), trials=summary["trials"], best=summary["best"], train=sum(_floats(train_file)))


def _floats(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.is_file() else []


ARMS = {"pielab": arm_pielab, "tune": arm_tune, "optuna": arm_optuna}


# --------------------------------------------------------------------------- the report


def summarise(runs: list[dict]) -> dict:
    med = statistics.median
    return {
        "wall": med(r["wall"] for r in runs),
        "per_hour": med(r["trials"] / r["wall"] * 3600 for r in runs),
        "first": med(min(r["firsts"]) - r["began"] for r in runs if r["firsts"]) if any(r["firsts"] for r in runs)
        else float("nan"),
        "tail": med(r["began"] + r["wall"] - max(r["ends"]) for r in runs if r["ends"]) if any(r["ends"] for r in runs)
        else float("nan"),
        "driver": max(r["driver"] for r in runs),
        "tree": max(r["tree"] for r in runs),
        "best": med(r["best"] for r in runs),
        "trials": med(r["trials"] for r in runs),
        "walls": [round(r["wall"], 1) for r in runs],
        # Of the slot-seconds the command held (wall x slots), the share not spent in fit's epochs: Ray
        # Tune's "overhead" in its own benchmark's sense (start, scheduling, reporting, teardown).
        "outside": med(1 - r["train"] / (r["wall"] * SLOTS) for r in runs),
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset.npz"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=None, help="trials per arm (default 8; --short: 200)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 4; --short: 1)")
    parser.add_argument("--startup", type=int, default=4, help="TPE's random start-up trials")
    parser.add_argument("--seed", type=int, default=0, help="round r uses seed + r in every arm")
    parser.add_argument("--arms", default="pielab,tune,optuna")
    parser.add_argument("--wandb", choices=("offline", "off"), default="offline", help="pielab's W&B runs")
    parser.add_argument("--short", action="store_true",
                        help="the short-trial round (one epoch of a width-4 ResNet-10 on 100 images: 0.1-0.2 s)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="training images per epoch (default 100 with --short, else 1000; --short "
                             "--train-size 1000 makes trials of about one second)")
    args = parser.parse_args()
    args.trials = args.trials or (200 if args.short else 8)
    epochs = args.epochs or (1 if args.short else 4)
    if args.short:
        args.rounds = min(args.rounds, 1) if args.rounds == 3 else args.rounds
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        sys.exit(f"--arms: unknown {', '.join(sorted(unknown))} (known: {', '.join(ARMS)})")
    base = workload(args.data, epochs, args.short, args.train_size)
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    print(f"{args.trials} trials x {epochs} epochs per arm, {SLOTS} at a time, {args.rounds} round(s), "
          f"load average before: {load_average()}", flush=True)
    for r in range(args.rounds):
        for arm in arms:
            with tempfile.TemporaryDirectory(prefix=f"pielab-peers-{arm}-") as tmp:
                result = ARMS[arm](base, args, args.seed + r, Path(tmp))
            runs[arm].append(result)
            print(f"round {r + 1} {arm:>6}: {result['wall']:6.1f} s wall, {result['trials']} trials, "
                  f"best val/acc {result['best']:.3f}, driver peak {result['driver']:.0f} MiB, "
                  f"tree peak {result['tree']:.0f} MiB (load {load_average()})", flush=True)
    stats = {a: summarise(runs[a]) for a in arms}
    print()
    print("| arm | wall s (median; each) | trials/h | first batch s | tail s | slot-seconds outside epochs "
          "| driver peak MiB | tree peak MiB | best val/acc |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for arm, s in stats.items():
        print(f"| {arm} | {s['wall']:.1f} ({', '.join(map(str, s['walls']))}) | {s['per_hour']:.0f} | "
              f"{s['first']:.1f} | {s['tail']:.1f} | {s['outside']:.0%} | {s['driver']:.0f} | {s['tree']:.0f} | "
              f"{s['best']:.3f} |")
    print(f"load average after: {load_average()}")
    peers = [a for a in arms if a != "pielab"]
    if "pielab" in stats and peers:
        faster = max(peers, key=lambda a: stats[a]["per_hour"])
        print(f"pielab's throughput / {faster}'s: {stats['pielab']['per_hour'] / stats[faster]['per_hour']:.3f} "
              "(target >= 0.95)")
    if "pielab" in stats and "tune" in stats:
        print(f"pielab's driver peak RSS / Ray Tune's driver: {stats['pielab']['driver'] / stats['tune']['driver']:.2f} "
              "(target <= 1.25)")


if __name__ == "__main__":
    main()
