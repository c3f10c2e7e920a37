#!/usr/bin/env bash
# The main job on this machine. Until the trainer lands (next issue) it sets up the environment and
# shows what the paper's three ResNet-50 (8, 32) configs resolve to, running one step of each.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for norm in bn gn sn; do
  echo "=== configs/imagenet/resnet50_v1_${norm}_8x32.yaml"
  .venv/bin/python scripts/describe.py "configs/imagenet/resnet50_v1_${norm}_8x32.yaml" | tail -n 3
done
echo "demo: training (train.py) and evaluation (eval.py) arrive with the trainer issue."
