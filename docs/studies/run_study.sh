#!/usr/bin/env bash
# Regenerates the committed CPU-scale studies (tables, figures, HTML) on the shared data, 3 seeds each.
#   bash docs/studies/run_study.sh [all|imdb|cifar10_he|cifar10]     # from the repo root, after scripts/setup.sh
# Sweep folders (checkpoints, W&B runs) go to sweep_results/ (not committed); the reports to docs/studies/.
# One trial at a time per study (STUDY_SLOTS=1, one thread each); two studies started side by side use both
# cores of a 2-core machine. Measured times on 2 cores are in docs/studies/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PIELAB_DATA_DIR=${PIELAB_DATA_DIR:-../shared/data}
pielab=.venv/bin/pielab
stamp=$(date +%Y%m%d-%H%M%S)
slots=${STUDY_SLOTS:-1}
only=${1:-all}
cpu=(--set train.threads=1 --set resources.gpu=0 --set resources.cpu=1 --set max_concurrent="$slots"
     --set 'seeds=[0,1,2]' --set tracking.mode=offline)

if [[ $only == all || $only == imdb ]]; then
# IMDB: 1/2/4/8 LSTM layers x residual on/off; embedding and hidden 64 on 10,000 training reviews cut to
# 150 tokens, 8 epochs, Adam 3e-3 (the 1-layer stack reaches 75% validation accuracy at this budget).
$pielab sweep sweeps/imdb_depth_residual.yaml --out "sweep_results/study-imdb-$stamp" \
    --set model.embed_dim=64 --set model.hidden=64 --set data.train_size=10000 --set data.max_len=150 \
    --set data.val_size=1000 --set data.test_size=2000 --set train.epochs=8 --set train.lr=3e-3 "${cpu[@]}"
fi

if [[ $only == all || $only == cifar10_he ]]; then
# CIFAR-10, He et al.'s 6n+2 family: plain and residual depth 20/32/44/56 at the paper's width 16 on 2,500
# training images, 8 epochs.
$pielab sweep sweeps/cifar10_he_family.yaml --out "sweep_results/study-cifar10-he-$stamp" \
    --set model.width=16 --set data.train_size=2500 --set data.val_size=1000 --set data.test_size=1000 \
    --set train.epochs=8 "${cpu[@]}"
fi

if [[ $only == all || $only == cifar10 ]]; then
# CIFAR-10, the report's four-stage layout (ResNet-34 = myresnet34, its plain twin = mycnn) at depth 10/18/34,
# width 8 on 2,000 training images, 8 epochs.
$pielab sweep sweeps/cifar10_depth_residual.yaml --out "sweep_results/study-cifar10-$stamp" \
    --set model.width=8 --set data.train_size=2000 --set data.val_size=1000 --set data.test_size=2000 \
    --set train.epochs=8 "${cpu[@]}"
fi

# Reports last: they rewrite tracked files under docs/studies/, and a trial that starts after that would
# record its code version as "-dirty".
for study in imdb:imdb cifar10-he:cifar10_he cifar10:cifar10; do
    folder="sweep_results/study-${study%%:*}-$stamp"
    if [[ -d $folder ]]; then $pielab report "$folder" --out "docs/studies/${study##*:}"; fi
done
