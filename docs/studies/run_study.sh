#!/usr/bin/env bash
# Regenerates the committed CPU-scale depth x residual study (tables, figures, HTML) on the shared data.
#   bash docs/studies/run_study.sh            # from the repo root, after scripts/setup.sh
# Sweep folders (checkpoints, W&B runs) go to sweep_results/ (not committed); the reports to docs/studies/.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PIELAB_DATA_DIR=${PIELAB_DATA_DIR:-../shared/data}
pielab=.venv/bin/pielab
stamp=$(date +%Y%m%d-%H%M%S)
slots=${STUDY_SLOTS:-1}
only=${1:-all}  # all | cifar10 | imdb

if [[ $only != imdb ]]; then
# CIFAR-10: width-8 ResNets on 2,000 training images, 8 epochs, two seeds.
$pielab sweep sweeps/cifar10_depth_residual.yaml --out "sweep_results/study-cifar10-$stamp" \
    --set model.width=8 --set data.train_size=2000 --set data.val_size=1000 --set data.test_size=2000 \
    --set train.epochs=8 --set train.threads=1 --set resources.gpu=0 --set resources.cpu=1 \
    --set max_concurrent="$slots" --set 'seeds=[0,1]' --set tracking.mode=offline
$pielab report "sweep_results/study-cifar10-$stamp" --out docs/studies/cifar10
fi
[[ $only == cifar10 ]] && exit 0

# IMDB: LSTMs with embedding and hidden 64 on 4,000 training reviews cut to 120 tokens, 5 epochs, Adam 3e-3.
$pielab sweep sweeps/imdb_depth_residual.yaml --out "sweep_results/study-imdb-$stamp" \
    --set model.embed_dim=64 --set model.hidden=64 --set data.train_size=4000 --set data.max_len=120 \
    --set data.val_size=1000 --set data.test_size=2000 --set train.epochs=5 --set train.lr=3e-3 \
    --set train.threads=1 --set resources.gpu=0 --set resources.cpu=1 --set max_concurrent="$slots" \
    --set 'seeds=[0]' --set tracking.mode=offline
$pielab report "sweep_results/study-imdb-$stamp" --out docs/studies/imdb
