#!/usr/bin/env bash
# GPU smoke test of `pielab train` (under 10 minutes): myresnet34 and res_lstm8 at the report's full width
# (ResNet-34 width 64; LSTM embedding 200, hidden 256, max_len 300, vocabulary 20,000) on a small carried
# subset of ../shared/data, a few epochs, bf16 autocast (and channels_last for the CNN); prints images and
# reviews per second (training throughput, perf/samples_per_s of the last epoch) and each run's provenance.
#
#   bash benchmarks/gpu_smoke.sh subset DIR   # here, once: write DIR/cifar10_subset.npz + DIR/imdb.parquet
#                                              # (about 15 MiB together; the GPU machine takes at most 64 MiB)
#   bash benchmarks/gpu_smoke.sh gpu DIR      # on the GPU machine, DIR carried there
#   bash benchmarks/gpu_smoke.sh cpu DIR      # the same path at tiny settings on a CPU (checks the script)
#
# Needs torch, torchvision, pandas, pyarrow, matplotlib, rich, typer and pydantic; not ray, optuna, wandb or
# datasets. pielab.config imports pydantic, so `pielab train` does not run without it: if it is missing and
# PIELAB_WHEELS names a folder of wheels (pydantic, pydantic_core, annotated_types, typing_extensions,
# typing_inspection), they are installed from there with no network; otherwise the script stops with one line.
# Env: PYTHON (default python3), EPOCHS (default 3), OUT (default /tmp/pielab-gpu-smoke).
set -euo pipefail

mode="${1:-}"
data="${2:-}"
if [[ -z "$mode" || -z "$data" ]]; then
    echo "usage: bash benchmarks/gpu_smoke.sh subset|gpu|cpu DIR" >&2
    exit 2
fi
PY="${PYTHON:-python3}"
OUT="${OUT:-/tmp/pielab-gpu-smoke}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
export PIELAB_CACHE_DIR="${PIELAB_CACHE_DIR:-$OUT/cache}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-$OUT/mpl}"

if [[ "$mode" == subset ]]; then
    src="$HERE/../shared/data"
    mkdir -p "$data"
    "$PY" - "$src" "$data" <<'PYEOF'
import sys
import numpy as np
import pandas as pd

src, dst = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
with np.load(f"{src}/cifar10_subset.npz") as a:
    tr = rng.permutation(len(a["y_train"]))[:5000]
    te = rng.permutation(len(a["y_test"]))[:1000]
    np.savez_compressed(f"{dst}/cifar10_subset.npz", x_train=a["x_train"][tr], y_train=a["y_train"][tr],
                        x_test=a["x_test"][te], y_test=a["y_test"][te], classes=a["classes"])
imdb = pd.read_parquet(f"{src}/imdb.parquet", columns=["text", "label", "split"])
parts = [imdb[imdb.split == s].sample(n, random_state=0) for s, n in (("train", 6000), ("test", 1000))]
pd.concat(parts).reset_index(drop=True).to_parquet(f"{dst}/imdb.parquet")
PYEOF
    du -sh "$data"
    exit 0
fi

if ! "$PY" -c "import pydantic" 2>/dev/null; then
    if [[ -n "${PIELAB_WHEELS:-}" && -d "$PIELAB_WHEELS" ]]; then
        "$PY" -m pip install -q --no-index --no-deps "$PIELAB_WHEELS"/*.whl
    else
        echo "gpu_smoke: pydantic is not installed and pielab.config needs it (set PIELAB_WHEELS to a folder of its wheels)" >&2
        exit 3
    fi
fi

case "$mode" in
    gpu)
        device=(--set train.device=cuda --set train.precision=bf16)
        cnn=(--set data.train_size=4500 --set data.val_size=500 --set data.test_size=1000)
        lstm=(--set data.train_size=5000 --set data.val_size=1000 --set data.test_size=1000)
        epochs="${EPOCHS:-3}"
        ;;
    cpu)  # the same commands at a scale a CPU runs in a minute: the script's own check
        device=(--set train.device=cpu --set train.precision=fp32)
        cnn=(--set model.width=4 --set data.train_size=200 --set data.val_size=100 --set data.test_size=100)
        lstm=(--set model.embed_dim=8 --set model.hidden=8 --set data.max_len=30 --set data.vocab_size=500
              --set data.train_size=200 --set data.val_size=100 --set data.test_size=100)
        epochs="${EPOCHS:-1}"
        ;;
    *)
        echo "gpu_smoke: unknown mode $mode (subset, gpu or cpu)" >&2
        exit 2
        ;;
esac

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
rm -rf "$OUT/myresnet34" "$OUT/res_lstm8"
start=$SECONDS
"$PY" -m pielab.cli train myresnet34 "${device[@]}" "${cnn[@]}" --set train.channels_last=true \
    --set "train.epochs=$epochs" --set "data.path=$data/cifar10_subset.npz" --out "$OUT/myresnet34"
"$PY" -m pielab.cli train res_lstm8 "${device[@]}" "${lstm[@]}" \
    --set "train.epochs=$epochs" --set "data.path=$data/imdb.parquet" --out "$OUT/res_lstm8"

"$PY" - "$OUT" <<'PYEOF'
import csv, json, sys
out = sys.argv[1]
for name, unit in (("myresnet34", "images"), ("res_lstm8", "reviews")):
    rows = list(csv.DictReader(open(f"{out}/{name}/metrics.csv")))
    summary = json.load(open(f"{out}/{name}/summary.json"))
    prov = summary["provenance"]
    print(f"{name}: {float(rows[-1]['perf/samples_per_s']):.0f} {unit}/s (epoch {rows[-1]['epoch']}), "
          f"val acc {summary['best_val_acc']:.4f}, {summary['train_time_s']:.1f} s, "
          f"device {prov['device'].get('name')}, code {prov['code']}, torch {prov['versions'].get('torch')}")
PYEOF
echo "gpu_smoke: done in $((SECONDS - start)) s"
