#!/usr/bin/env bash
# The main job on an embedded default: Fashion-MNIST through the ImageNet pipeline, ResNet-18 (narrow,
# small stem) with Switchable Normalization in the emulated (8, 4) setting on 2 CPU processes with
# torchrun, then eval.py on the final checkpoint. Extra arguments are config overrides for train.py.
# Rerunning continues (or, when finished, re-evaluates) the same run; delete its folder to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
bash scripts/get_fashion_mnist.sh data/fashion_mnist
CONFIG=configs/demo/fashion_mnist_sn_8x4.yaml
RUN=runs/demo_fashion_mnist_sn_8x4
OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node=2 train.py --config "$CONFIG" "$@"
CKPT=$(ls "$RUN"/checkpoint_*.pt | sort | tail -n 1)
OMP_NUM_THREADS=2 .venv/bin/python eval.py "$CKPT" --data data/fashion_mnist
echo "demo: finished in $(( $(date +%s) - start )) s"
echo "demo: run folder $RUN (config.yaml, metrics.jsonl, final.json, checkpoints)"
echo "demo: TensorBoard logs in $RUN/tb  (view: pip install tensorboard && tensorboard --logdir $RUN/tb)"
