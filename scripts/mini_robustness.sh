#!/usr/bin/env bash
# The mini robustness study on a laptop CPU: the BN, GN and SN models of the mini reproduction at (1,32)
# (trained here if missing), Fashion-MNIST-C made from the 10,000 test images (15 common corruptions x 5
# severities, PER_CLASS images of each class per domain), evaluated without adaptation, with AdaBN, and with
# test-batch statistics, prior-mixed statistics and Tent at B = 128, 16, 2, 1
# (configs/robustness/fashion_mnist_mini.yaml), then the table and plots in docs/fashion_mnist_robustness/.
# Rerunning skips finished steps: trained models, corrupted images and result records are kept.
#   PER_CLASS=20 bash scripts/mini_robustness.sh [--only GLOB ...]     (--only: robustness cells, e.g. 'bn_*')
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PER_CLASS=${PER_CLASS:-20}
SEVERITIES=${SEVERITIES:-1,2,3,4,5}
DATA=data/fashion_mnist_c_pc${PER_CLASS}      # one folder per subsample: make_corruptions refuses to mix two
RECORDS=runs/fashion_mnist_robustness_pc${PER_CLASS}
TABLE=${TABLE:-docs/fashion_mnist_robustness}
bash scripts/setup.sh -r requirements-corruptions.txt
bash scripts/get_fashion_mnist.sh data/fashion_mnist_20k --train-limit 20000
# the three models (sweep.py skips the finished ones)
.venv/bin/python scripts/sweep.py configs/sweeps/fashion_mnist_mini.yaml --out runs/fashion_mnist_mini --local \
  --only 'fmnist_*_1x32'
echo "mini_robustness: models ready after $(( $(date +%s) - start )) s"
.venv/bin/python scripts/make_corruptions.py data/fashion_mnist_20k/val "$DATA" --corruptions common \
  --severities "$SEVERITIES" --seed 0 --per-class "$PER_CLASS" --workers "$(nproc)"
echo "mini_robustness: corruptions ready after $(( $(date +%s) - start )) s"
status=0
.venv/bin/python scripts/robustness_sweep.py configs/robustness/fashion_mnist_mini.yaml --out "$RECORDS" \
  --set "corruptions=$DATA" --set "severities=[$SEVERITIES]" "$@" || status=$?
# the table shows whatever finished (records of a second stream seed stay out: one folder down); the relative
# mCE is against BN without adaptation when that record exists; the exit code is still the sweep's
baseline=()
[ -f "$RECORDS/bn_source.json" ] && baseline=(--baseline fmnist_bn_1x32)
collected=0
.venv/bin/python scripts/collect_results.py --robustness "$RECORDS"/*.json "${baseline[@]}" --out "$TABLE" \
  || collected=$?
if [ "$status" != 0 ]; then
  echo "mini_robustness: a cell failed (exit code $status) after $(( $(date +%s) - start )) s; the table in" \
       "$TABLE/ holds the cells that finished" >&2
  exit "$status"
fi
if [ "$collected" != 0 ]; then
  echo "mini_robustness: collecting the records in $RECORDS/ failed (exit code $collected)" >&2
  exit "$collected"
fi
echo "mini_robustness: finished in $(( $(date +%s) - start )) s; table and plots in $TABLE/"
