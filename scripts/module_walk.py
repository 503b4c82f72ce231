"""The walk of one sweep through pielab's modules: which modules a one-trial, one-epoch ``pielab sweep`` passes
through, in order, in the driver and in the trial's worker.

Usage: ``python scripts/module_walk.py [--code DIR] [--keep]``: ``--code`` runs another checkout's pielab
(put first on PYTHONPATH; default: this one). Prints, per process that ran pielab code, the modules in the
order first entered and the counts: modules, stops (a call that enters another pielab module than the
caller's) and returns to a module already left. Needs ``../shared/data/cifar10_subset.npz``.

How: a ``sitecustomize`` on PYTHONPATH installs ``sys.setprofile`` in every Python process of the sweep
(the driver, Ray's workers inherit the environment) and writes each process's walk when it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = r'''
import atexit, json, os, sys, threading
_out = os.environ.get("PIELAB_WALK_DIR")
if _out:
    _walk, _last = [], [None]

    def _module(frame):
        name = frame.f_globals.get("__name__", "")
        return name if name == "pielab" or name.startswith("pielab.") else None

    def _profile(frame, event, arg):
        if event != "call":
            return
        mod = _module(frame)
        if mod is None or mod == _last[0] or frame.f_code.co_name == "<module>":  # imports are not the walk
            return
        caller = frame.f_back
        # a call from pielab code (or the first pielab call of the process) into another pielab module
        if caller is None or _module(caller) is not None or _last[0] is None:
            _walk.append(mod)
            _last[0] = mod
            if len(_walk) % 25 == 0:
                _dump()  # Ray ends its workers without atexit

    def _dump():
        if _walk:
            with open(os.path.join(_out, f"{os.getpid()}.json"), "w") as f:
                json.dump({"argv": sys.argv[:3], "walk": _walk}, f)

    sys.setprofile(_profile)
    threading.setprofile(_profile)
    atexit.register(_dump)
'''

SPEC = """name: walk
base:
  model: {name: myresnet34, width: 4, depth: 10}
  data: {path: %s, train_size: 200, val_size: 100, test_size: 100}
  train: {epochs: 1, batch_size: 50, device: cpu, threads: 1}
space: {parameters: {train.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}}}
search: {algorithm: tpe, seed: 0}
scheduler: {name: fifo}
num_trials: 1
max_concurrent: 1
resources: {cpu: 1, gpu: 0}
tracking: {wandb: false}
"""


def summarize(walk: list[str]) -> dict:
    seen, left, returns = [], set(), 0
    for prev, mod in zip([None, *walk], walk):
        if mod in left:
            returns += 1
        if prev is not None:
            left.add(prev)
        if mod not in seen:
            seen.append(mod)
    return {"modules": len(seen), "stops": len(walk), "returns": returns, "order": seen}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(REPO), help="the checkout whose pielab runs (default: this one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    data = REPO.parent / "shared" / "data" / "cifar10_subset.npz"
    tmp = Path(tempfile.mkdtemp(prefix="pielab-walk-"))
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (tmp / "walks").mkdir()
    (tmp / "home").mkdir()
    (tmp / "spec.yaml").write_text(SPEC % data)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp / "site"), str(Path(args.code).resolve())]),
               PIELAB_WALK_DIR=str(tmp / "walks"), HOME=str(tmp / "home"))
    exe = Path(sys.executable).with_name("pielab")
    # cwd: Ray puts the driver's working directory first on its workers' sys.path
    run = subprocess.run([str(exe), "sweep", str(tmp / "spec.yaml"), "--out", str(tmp / "sweep")], env=env, cwd=tmp,
                         capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        return run.returncode
    for path in sorted((tmp / "walks").glob("*.json")):
        rec = json.loads(path.read_text())
        if not any("sweep" in m or "train" in m or "folder" in m or "cli" in m for m in rec["walk"]):
            continue
        info = summarize(rec["walk"])
        print(f"process {' '.join(rec['argv'])[:60]}: {info['modules']} modules, {info['stops']} stops, "
              f"{info['returns']} returns to a module already left")
        print("  " + " -> ".join(m.removeprefix("pielab.") for m in info["order"]))
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
