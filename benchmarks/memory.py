"""What one more concurrent trial costs in machine memory, against one plain `pielab train`.

Three commands of the same quickstart-sized workload (sweeps/quickstart.yaml's base: a width-8 ResNet,
at depth 18 with residual connections, the largest point of its search space; 2,000 train / 1,000 val /
1,000 test real CIFAR-10 images, batch 64, CPU, one thread), each in its own subprocess, measured from
outside:

* ``pielab sweep`` at ``max_concurrent: 1`` and at ``max_concurrent: 2``: two trials per slot (so each
  Ray worker is reused once, as in a real sweep), fifo, fixed values, one CPU per trial, W&B offline as
  in a real sweep (``--wandb off`` turns it off);
* one plain ``pielab train`` of the same config (its peak includes writing the plots at the end).

    .venv/bin/python benchmarks/memory.py [--epochs 1] [--trials-per-slot 2] [--wandb offline|off] [--trace DIR]

Memory is the command's process tree: the command and all its descendants (the sweep driver starts
Ray's gcs_server, raylet and helpers; the raylet starts the trial workers; W&B's service), read from
``/proc/<pid>/smaps`` about every 0.2 s. Processes that are not descendants but carry this run's marker
(its Ray temp folder in their command line, or its token in their environment) are counted too and
listed, so a daemonised Ray process cannot slip out. Each sample is summed three ways (see
:class:`TreeSampler`): PSS, the run's own memory (each page once, whoever else maps it) and RSS.

The peak of a run is the largest sample. The last line prints (peak of the 2-slot sweep - peak of the
1-slot sweep) / peak of the plain run, by own memory; target <= 1.0. PSS gives the same ratio on a quiet
machine, but on a shared one it drifts with unrelated processes that map the same torch libraries
(another sweep from the same venv halves this run's share of them), so its ratio is printed above as a
cross-check. The dataset cache is built beforehand in a throwaway process: no run pays for building it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MARKER_ENV = "PIELAB_MEMBENCH_TOKEN"
# The largest point of the quickstart's search space (search_spaces/quickstart.yaml), as fixed values.
FIXED = {"model.depth": 18, "model.residual": True, "train.lr": 3.0e-3}


def workload(data: str, epochs: int) -> dict:
    """sweeps/quickstart.yaml's base, shortened: peak memory is reached within the first epoch."""
    return {
        "model": {"name": "myresnet34", "width": 8},
        "data": {"path": data, "train_size": 2000, "val_size": 1000, "test_size": 1000},
        "train": {"epochs": epochs, "batch_size": 64, "device": "cpu", "threads": 1},
    }


def with_fixed(base: dict) -> dict:
    raw = {k: dict(v) for k, v in base.items()}
    for key, value in FIXED.items():
        section, _, name = key.partition(".")
        raw[section][name] = value
    return raw


# --------------------------------------------------------------------------- measuring a process tree


def _proc_table() -> dict[int, int]:
    """pid -> ppid for every process visible now."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        table[int(name)] = int(fields[1])
    return table


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _smaps(pid: int) -> tuple[int, int, int, dict[bytes, int]] | None:
    """(Pss, Rss, Anonymous, {mapped file: resident file-backed kB}) of one process; None when gone.

    From ``/proc/<pid>/smaps``, mapping by mapping: a mapping's Rss less its Anonymous pages is what it
    holds of its file (page cache, shared memory); shared anonymous mappings without a path count as
    anonymous here.
    """
    text = _read(f"/proc/{pid}/smaps")
    if not text:
        return None
    pss = rss = anon = 0
    files: dict[bytes, int] = {}
    path, r = b"", 0
    for line in text.split(b"\n"):
        head, _, rest = line.partition(b" ")
        if not head:
            continue
        if not head.endswith(b":"):  # a mapping's header: "start-end perms offset dev inode [path]"
            parts = line.split(None, 5)
            path = parts[5] if len(parts) > 5 else b""
        elif head == b"Rss:":
            r = int(rest.split()[0])
            rss += r
        elif head == b"Pss:":
            pss += int(rest.split()[0])
        elif head == b"Anonymous:":
            a = int(rest.split()[0])
            if path.startswith(b"/") and r > a:
                files[path] = files.get(path, 0) + r - a
                anon += a
            else:
                anon += r
    return pss, rss, anon, files


def carries(pid: int, markers: tuple[bytes, ...]) -> bool:
    """Whether a process belongs to this run: its command line or environment holds one of ``markers``."""
    blob = _read(f"/proc/{pid}/cmdline") + _read(f"/proc/{pid}/environ")
    return any(m in blob for m in markers)


def _kind(pid: int) -> str:
    """A short label for the breakdown: the command, gcs, raylet, Ray workers, W&B, other Ray parts."""
    cmd = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace")
    if "gcs_server" in cmd:
        return "gcs_server"
    if "raylet" in cmd.split(" ", 1)[0]:
        return "raylet"
    if cmd.startswith("ray::"):  # Ray workers retitle themselves: ray::IDLE, ray::ImplicitFunc.train, ...
        return cmd.split(" ", 1)[0]
    if "wandb" in cmd:
        return "wandb"
    if "-m pielab" in cmd:
        return "pielab command"
    for part in ("log_monitor", "monitor.py", "dashboard", "runtime_env", "agent"):
        if part in cmd:
            return f"ray {part}"
    return cmd[:40] or "?"


class TreeSampler(threading.Thread):
    """Every ``interval`` s, the memory of ``root`` and its descendants (plus marked strays), three ways.

    * ``pss``: summed PSS. A page shared by n processes counts 1/n in each, so shared libraries and the
      memory-mapped dataset count once across the tree -- but also only 1/n when the other sharers are
      unrelated processes (another sweep from the same venv maps the same torch libraries), so on a
      shared machine it drifts with whatever else runs.
    * ``own``: what the tree holds, each page once, whoever else maps it: every process's anonymous
      memory, plus, per mapped file, the most any one process of the tree holds of it (a lower bound of
      the union, exact when the processes touch the same pages, as they do for libraries and the data).
    * ``rss``: summed RSS, which counts a shared page once per process.
    """

    def __init__(self, root: int, markers: tuple[bytes, ...], interval: float = 0.2,
                 done_file: Path | None = None, trace: Path | None = None):
        super().__init__(daemon=True)
        self.root, self.markers, self.interval, self.done_file = root, markers, interval, done_file
        self.trace = open(trace, "w") if trace else None
        self.stop = threading.Event()
        self.samples, self.seconds = 0, 0.0
        self.peak = {"pss": 0, "own": 0, "rss": 0}
        self.at_peak: dict = {}  # the sample of the largest "own"
        self.peak_own_before_done = 0
        self.max_procs = 0
        self.strays: dict[int, str] = {}
        self._checked: set[int] = set()

    def _marked(self, pid: int) -> bool:
        if pid in self._checked:
            return False
        if carries(pid, self.markers):
            return True
        self._checked.add(pid)  # the environment is fixed at exec: an unmarked pid stays unmarked
        return False

    def sample(self) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, ppid in table.items():
            children.setdefault(ppid, []).append(pid)
        tree, todo = set(), [self.root]
        while todo:
            pid = todo.pop()
            if pid in tree or pid not in table:
                continue
            tree.add(pid)
            todo.extend(children.get(pid, ()))
        me = os.getpid()
        for pid in table:
            if pid not in tree and pid != me and self._marked(pid):
                self.strays.setdefault(pid, _kind(pid))
                tree.add(pid)
        pss = rss = anon = 0
        files: dict[bytes, int] = {}
        procs = []
        for pid in sorted(tree):
            m = _smaps(pid)
            if m is None:
                continue
            p_pss, p_rss, p_anon, p_files = m
            pss, rss, anon = pss + p_pss, rss + p_rss, anon + p_anon
            for path, kb in p_files.items():
                files[path] = max(files.get(path, 0), kb)
            procs.append((pid, _kind(pid), p_pss, p_rss, p_anon))
        shared = sum(files.values())
        own = anon + shared
        now = {"t": round(time.monotonic(), 2), "pss": pss, "own": own, "rss": rss, "files": shared, "procs": procs}
        if self.trace:
            self.trace.write(json.dumps(now) + "\n")
        self.samples += 1
        self.max_procs = max(self.max_procs, len(procs))
        if own > self.peak["own"]:
            self.at_peak = now
        for key in self.peak:
            self.peak[key] = max(self.peak[key], now[key])
        if self.done_file is None or not self.done_file.exists():
            self.peak_own_before_done = max(self.peak_own_before_done, own)

    def run(self) -> None:
        begin = time.monotonic()
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a measuring hiccup must not kill the run silently
                print(f"sampler: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - start)))
        self.seconds = time.monotonic() - begin
        if self.trace:
            self.trace.close()


def measure(name: str, cmd: list[str], env: dict, tmp: Path, done_file: Path | None = None,
            trace: Path | None = None) -> dict:
    """Run ``cmd`` and sample its process tree until it exits; fail loudly if the command fails."""
    log = tmp / f"{name}.log"
    markers = (env["RAY_TMPDIR"].encode(), f"{MARKER_ENV}={env[MARKER_ENV]}".encode())
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
        sampler = TreeSampler(proc.pid, markers, done_file=done_file,
                              trace=trace / f"{name.replace(' ', '')}.jsonl" if trace else None)
        sampler.start()
        rc = proc.wait()
        sampler.stop.set()
        sampler.join()
    wall = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"{name} failed (exit {rc}):\n{log.read_text()[-4000:]}")
    # Processes of this run still alive after the command returned (Ray workers should exit with it).
    me, deadline = os.getpid(), time.monotonic() + 15
    while True:
        left = {pid: _kind(pid) for pid in _proc_table() if pid != me and carries(pid, markers)}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return {"name": name, "wall": wall, "sampler": sampler, "left": left}


# --------------------------------------------------------------------------- the three runs


def sweep_spec(base: dict, slots: int, per_slot: int, tmp: Path, wandb: str) -> Path:
    trials = per_slot * slots  # each worker runs per_slot trials: a reused worker's growth is a slot's cost
    spec = {
        "name": f"memory-{slots}",
        "base": base,
        "space": {"parameters": {k: {"type": "fixed", "value": v} for k, v in FIXED.items()}},
        "search": {"algorithm": "grid", "seed": 0},
        "scheduler": {"name": "fifo"},
        "num_trials": trials,
        "max_concurrent": slots,
        "resources": {"cpu": 1, "gpu": 0},
        "seeds": list(range(trials)),  # fixed values: the seeds make the trials distinct
        "max_failures": 0,
        "tracking": {"wandb": True, "mode": "offline"} if wandb == "offline" else {"wandb": False},
        "storage": {"path": str(tmp / "results")},
    }
    path = tmp / f"memory-{slots}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def mib(kb: int) -> str:
    return f"{kb / 1024:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10_subset.npz"))
    parser.add_argument("--epochs", type=int, default=1, help="per trial (default 1: the peak comes within it)")
    parser.add_argument("--wandb", choices=("offline", "off"), default="offline")
    parser.add_argument("--trials-per-slot", type=int, default=2, help="trials each Ray worker runs (default 2)")
    parser.add_argument("--trace", type=Path, help="write every sample of every run to DIR/<run>.jsonl")
    args = parser.parse_args()
    if args.trace:
        args.trace.mkdir(parents=True, exist_ok=True)
    if not Path("/proc/self/smaps").exists():
        sys.exit("needs Linux /proc/<pid>/smaps")
    if not Path(args.data).is_file():
        sys.exit(f"no CIFAR-10 file at {args.data} (pass --data FILE.npz)")
    base = workload(str(Path(args.data).resolve()), args.epochs)

    # A short folder: Ray's unix socket paths under RAY_TMPDIR must stay under ~107 characters.
    with tempfile.TemporaryDirectory(prefix="pmem-", dir="/tmp") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "PIELAB_CACHE_DIR": str(tmp / "cache"), "RAY_TMPDIR": str(tmp / "ray"),
               "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp / "wandb"),
               "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
               "WANDB_DATA_DIR": str(tmp / "wandb-data"), "MPLCONFIGDIR": str(tmp / "mpl"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               MARKER_ENV: uuid.uuid4().hex}
        env.pop("PIELAB_DATA_DIR", None)
        for key in ("RAY_TMPDIR", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "MPLCONFIGDIR"):
            Path(env[key]).mkdir(parents=True, exist_ok=True)
        config = tmp / "plain.yaml"
        config.write_text(yaml.safe_dump(with_fixed(base), sort_keys=False))

        # Build the data cache (and its subsets) in a throwaway process: no measured run pays for it.
        build = subprocess.run([sys.executable, "-c", "import sys; from pielab.config import load_config; "
                                "from pielab.data import prepare; c = load_config(sys.argv[1]); "
                                "prepare(c.task, c.data)", str(config)], env=env, cwd=tmp,
                               capture_output=True, text=True)
        if build.returncode != 0:
            sys.exit(f"preparing the data failed:\n{build.stderr[-3000:]}")

        runs = [measure("plain", [sys.executable, "-m", "pielab", "train", str(config), "--out", str(tmp / "run")],
                        env, tmp, done_file=tmp / "run" / "summary.json", trace=args.trace)]
        for slots in (1, 2):
            spec = sweep_spec(base, slots, args.trials_per_slot, tmp, args.wandb)
            runs.append(measure(f"sweep x{slots}", [sys.executable, "-m", "pielab", "sweep", str(spec),
                                                     "--out", str(tmp / f"sweep{slots}")], env, tmp, trace=args.trace))
            states = [json.loads(p.read_text()).get("state")
                      for p in (tmp / f"sweep{slots}" / "trials").glob("*/result.json")]
            if states != ["completed"] * args.trials_per_slot * slots:
                sys.exit(f"sweep x{slots}: expected {args.trials_per_slot * slots} completed trials, got {states}:\n"
                         f"{(tmp / f'sweep x{slots}.log').read_text()[-3000:]}")

    print(f"workload: myresnet34 width 8 depth 18 residual, 2000/1000/1000 CIFAR-10 images, batch 64, "
          f"{args.epochs} epoch(s), 1 thread; sweeps: {args.trials_per_slot} trials per slot, fifo, 1 CPU each, "
          f"W&B {args.wandb}")
    print(f"{'run':<10} {'peak PSS':>9} {'peak own':>9} {'peak RSS':>9} {'procs':>6} {'every':>7} {'wall':>6}")
    for r in runs:
        s = r["sampler"]
        print(f"{r['name']:<10} {mib(s.peak['pss']):>9} {mib(s.peak['own']):>9} {mib(s.peak['rss']):>9} "
              f"{s.max_procs:>6} {s.seconds / max(s.samples, 1):>6.2f}s {r['wall']:>5.0f}s")
    for r in runs:
        s = r["sampler"]
        at = s.at_peak
        by_kind: Counter = Counter()
        count: Counter = Counter()
        for _pid, kind, _pss, _rss, anon in at.get("procs", []):
            by_kind[kind] += anon
            count[kind] += 1
        parts = ", ".join(f"{k}{f' x{count[k]}' if count[k] > 1 else ''} {mib(v)}" for k, v in by_kind.most_common())
        print(f"  {r['name']} at its peak: anonymous memory: {parts}; mapped files (each once): "
              f"{mib(at.get('files', 0))}")
        if s.strays:
            print(f"  {r['name']}: not descendants, found by marker: "
                  + ", ".join(f"{pid} {kind}" for pid, kind in sorted(s.strays.items())))
        else:
            print(f"  {r['name']}: every process carrying the run's marker was a descendant of the command")
        if r["left"]:
            print(f"  {r['name']}: still alive 15 s after the command returned: "
                  + ", ".join(f"{pid} {kind}" for pid, kind in sorted(r["left"].items())))
    plain, one, two = (r["sampler"] for r in runs)
    print(f"  plain run's peak before it wrote summary.json and the plots: {mib(plain.peak_own_before_done)} (own)")
    ratios = {k: (two.peak[k] - one.peak[k]) / plain.peak[k] for k in ("pss", "rss", "own")}
    for key, what in (("pss", "summed PSS"), ("rss", "summed RSS (a shared page once per process)"),
                      ("own", "own memory (each page once)")):
        print(f"by {what}: the 2nd concurrent trial adds {mib(two.peak[key] - one.peak[key])}; "
              f"plain run {mib(plain.peak[key])}; ratio {ratios[key]:.3f}")
    print(f"extra machine peak of the 2nd concurrent trial / peak of plain `pielab train` (own memory): "
          f"{ratios['own']:.3f}")

if __name__ == "__main__":
    main()
