"""How long ``pielab.load_sweep(DIR).trials_dataframe()`` takes on a 1,000-trial folder (issue 24: under 2 s).

The folder is made from a real sweep folder by copying one finished trial's files under 1,000 new ids (the
trial id and number rewritten in each ``result.json``), beside that sweep's ``sweep.yaml`` and ``status.json``;
so every file is in pielab's own format as the recorder wrote it. The timed part runs in a fresh process
(imports included, as a notebook's first cell pays them), then again warm in that process.

    .venv/bin/python benchmarks/read_api.py SWEEP_DIR [--trials 1000] [--repeats 3]

SWEEP_DIR: any finished sweep folder (e.g. ``pielab sweep sweeps/quickstart.yaml --out DIR``).
``tests/test_api.py`` builds the same folder with :func:`thousand_trials` and checks only its shape.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TIMED = """
import sys, time
t0 = time.perf_counter()
import pielab
frame = pielab.load_sweep(sys.argv[1]).trials_dataframe()
cold = time.perf_counter() - t0
t1 = time.perf_counter()
again = pielab.load_sweep(sys.argv[1]).trials_dataframe()
warm = time.perf_counter() - t1
print(f"{cold:.3f} {warm:.3f} {frame.shape[0]} {'ray' in sys.modules}")
"""


def thousand_trials(source: Path, dest: Path, n: int = 1000) -> Path:
    """A sweep folder at ``dest`` with ``n`` copies of ``source``'s first finished trial (new ids and numbers)."""
    source, dest = Path(source), Path(dest)
    dest.mkdir(parents=True)
    for name in ("sweep.yaml", "started_spec.json", "status.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
    template = next(p.parent for p in sorted((source / "trials").glob("*/result.json"))
                    if json.loads(p.read_text()).get("state") == "completed")
    result = json.loads((template / "result.json").read_text())
    for i in range(n):
        trial_id = f"t{i:05d}"
        folder = dest / "trials" / trial_id
        shutil.copytree(template, folder, ignore=shutil.ignore_patterns("result.json", "*.pt", "checkpoint*"))
        (folder / "result.json").write_text(json.dumps({**result, "trial_id": trial_id, "number": i}))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = thousand_trials(args.sweep_dir, Path(tmp) / "big", args.trials)
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", TIMED, str(folder)], capture_output=True, text=True,
                                 check=True).stdout.split()
            print(f"{args.trials} trials: load_sweep + trials_dataframe {float(out[0]):.2f} s in a fresh process "
                  f"(imports included), {float(out[1]):.2f} s warm; rows {out[2]}; ray imported: {out[3]}")


if __name__ == "__main__":
    main()
