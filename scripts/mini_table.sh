#!/usr/bin/env bash
# The mini reproduction of the paper's table on a laptop CPU: BN, GN and SN on 20,000 Fashion-MNIST
# images at 32, 8, 2 and 1 samples per GPU (configs/sweeps/fashion_mnist_mini.yaml), then the table and
# plots in docs/fashion_mnist_mini/. Runs the cells one after another (scripts/sweep.py --local), or as a
# Slurm job array with --slurm when a cluster answers. Rerunning skips finished cells.
#   bash scripts/mini_table.sh [--slurm] [--only GLOB ...]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
mode=--local
if [ "${1:-}" = "--slurm" ]; then
  mode=--slurm
  shift
fi
bash scripts/setup.sh
bash scripts/get_fashion_mnist.sh data/fashion_mnist_20k --train-limit 20000
OUT=runs/fashion_mnist_mini
status=0
if [ "$mode" = --slurm ]; then
  # one process per cell on the whole node (2 threads on a 2-core machine); --wait: collect when all are done
  .venv/bin/python scripts/sweep.py configs/sweeps/fashion_mnist_mini.yaml --out "$OUT" --slurm --gpus-per-node 0 \
    --cpus-per-proc "$(nproc)" --wait "$@" || status=$?
else
  .venv/bin/python scripts/sweep.py configs/sweeps/fashion_mnist_mini.yaml --out "$OUT" --local "$@" || status=$?
fi
# the table shows whatever finished, failed cells included as gaps; the exit code is still the sweep's
collected=0
.venv/bin/python scripts/collect_results.py "$OUT" --out docs/fashion_mnist_mini || collected=$?
if [ "$status" != 0 ]; then
  echo "mini_table: the sweep failed (exit code $status) after $(( $(date +%s) - start )) s; the table in" \
       "docs/fashion_mnist_mini/ holds the cells that finished" >&2
  exit "$status"
fi
[ "$collected" = 0 ] || exit "$collected"
echo "mini_table: finished in $(( $(date +%s) - start )) s; table and plots in docs/fashion_mnist_mini/"
