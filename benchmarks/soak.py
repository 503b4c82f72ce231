"""Soak: does a long sweep stay lean? `pielab sweep` with ~1,000 tiny trials, the driver's memory watched.

Each trial is a width-4 ResNet-10 on 200 real CIFAR-10 images for one epoch (a few seconds), random
search over the learning rate, FIFO (no early stopping), two at a time, W&B off. While the sweep runs,
the driver process's resident memory (VmRSS, the `pielab sweep` process itself, not Ray's workers) is
sampled every second and recorded when the sweep folder holds 100 (--early) and then N ended trials
(result.json with an `ended` time). Afterwards: the folder must hold all N trials and the Optuna study all N;
`pielab status` and `pielab report` are timed on the finished folder.

    .venv/bin/python benchmarks/soak.py [--trials 1000] [--early 100] [--keep]

It prints a table and, last, RSS(N)/RSS(100): near 1 means the driver does not grow with the number of
trials. Run it on a quiet machine: 60 trials took 74 s on two busy shared cores (Tune reuses the
workers), so 1,000 take roughly 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' tiny sweep spec
DATA = REPO.parent / "shared" / "data" / "cifar10_subset.npz"
EARLY = 100  # the first memory reading, when the driver has settled (Ray, Tune, the study all started)


def spec(trials: int, data: Path, storage: Path) -> dict:
    """The tests' tiny sweep (tests/helpers.py) at one epoch, batches of 100, learning rates from 1e-4."""
    from helpers import tiny_spec

    out = tiny_spec(str(data), name="soak", num_trials=trials, epochs=1, storage={"path": str(storage)})
    out["base"]["data"].update(val_size=200, test_size=200)
    out["base"]["train"]["batch_size"] = 100
    out["space"]["parameters"]["train.lr"]["low"] = 1.0e-4
    return out


def rss_bytes(pid: int) -> int | None:
    """Resident memory of one process (VmRSS in /proc/PID/status), None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def ended_trials(sweep_dir: Path) -> int:
    n = 0
    for path in (sweep_dir / "trials").glob("*/result.json"):
        try:
            if json.loads(path.read_text()).get("ended"):
                n += 1
        except (OSError, ValueError):
            pass  # being rewritten: counted at the next sample
    return n


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"  {' '.join(cmd[1:3])} exited {proc.returncode}: {proc.stderr.strip()[-500:]}", file=sys.stderr)
    return time.perf_counter() - start, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials in the sweep (default 1000)")
    parser.add_argument("--data", type=Path, default=DATA, help="CIFAR-10 .npz (default ../shared/data)")
    parser.add_argument("--early", type=int, help=f"the first memory reading after this many trials "
                        f"(default {EARLY}; a quarter of --trials below {2 * EARLY})")
    parser.add_argument("--keep", action="store_true", help="keep the sweep folder (printed at the end)")
    args = parser.parse_args()
    early = args.early or (EARLY if args.trials >= 2 * EARLY else max(1, args.trials // 4))
    if not 0 < early < args.trials:
        parser.error(f"--early must be between 1 and --trials - 1, got {early}")
    pielab = Path(sys.executable).with_name("pielab")
    tmp = Path(tempfile.mkdtemp(prefix="pielab-soak-"))
    env = {**os.environ, "PIELAB_CACHE_DIR": str(tmp / "cache"), "RAY_TMPDIR": str(tmp / "ray"),
           "MPLCONFIGDIR": str(tmp / "mpl")}
    spec_path = tmp / "soak.yaml"
    spec_path.write_text(yaml.safe_dump(spec(args.trials, args.data, tmp), sort_keys=False))
    sweep_dir = tmp / "soak"
    print(f"soak: {args.trials} trials, folder {sweep_dir}", flush=True)

    start = time.perf_counter()
    proc = subprocess.Popen([str(pielab), "sweep", str(spec_path), "--out", str(sweep_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int, int]] = []  # (seconds, ended trials, driver RSS)
    at: dict[int, tuple[float, int]] = {}  # checkpoint -> (seconds, RSS) when first reached
    stderr_tail: list[str] = []
    reader = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss = rss_bytes(proc.pid)
        ended = ended_trials(sweep_dir) if sweep_dir.is_dir() else 0
        if rss is not None:
            now = time.perf_counter() - start
            samples.append((now, ended, rss))
            for mark in (early, args.trials):
                if ended >= mark and mark not in at:
                    at[mark] = (now, rss)
                    print(f"  {ended} trials ended at {now:.0f} s: driver RSS {rss / 2**20:.0f} MiB", flush=True)
        time.sleep(1.0)
    wall = time.perf_counter() - start
    if args.trials not in at and samples:  # the driver exited within a second of the last trial's end
        at[args.trials] = samples[-1][0], samples[-1][2]
    reader.join(timeout=5)
    if proc.returncode != 0:
        print("".join(stderr_tail)[-3000:], file=sys.stderr)
        sys.exit(f"the sweep exited {proc.returncode} after {wall:.0f} s")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    in_folder = ended_trials(sweep_dir)
    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    in_study = len(study.get_trials())
    status_s, status_rc = timed([str(pielab), "status", str(sweep_dir)], env)
    report_s, report_rc = timed([str(pielab), "report", str(sweep_dir)], env)
    peak = max((rss for _, _, rss in samples), default=0)

    rows = [
        ("trials asked", f"{args.trials}"),
        ("trials ended in the folder", f"{in_folder}" + ("" if in_folder == args.trials else "  MISSING")),
        ("trials in the Optuna study", f"{in_study}" + ("" if in_study == args.trials else "  MISSING")),
        ("sweep wall time", f"{wall:.0f} s ({wall / args.trials:.2f} s a trial)"),
        (f"driver RSS after {early} trials", f"{at[early][1] / 2**20:.0f} MiB" if early in at else "-"),
        (f"driver RSS after {args.trials} trials",
         f"{at[args.trials][1] / 2**20:.0f} MiB" if args.trials in at else "-"),
        ("driver RSS peak", f"{peak / 2**20:.0f} MiB"),
        ("pielab status", f"{status_s:.1f} s (exit {status_rc})"),
        ("pielab report", f"{report_s:.1f} s (exit {report_rc})"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.keep:
        print(f"sweep folder kept: {sweep_dir}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = in_folder == in_study == args.trials and status_rc == report_rc == 0
    if early in at and args.trials in at:
        print(f"RSS({args.trials})/RSS({early}) = {at[args.trials][1] / at[early][1]:.2f}")
    else:
        print(f"RSS({args.trials})/RSS({early}) = - (the sweep ended before {early} trials)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
