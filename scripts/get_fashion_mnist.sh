#!/usr/bin/env bash
# Make sure Debian's dataset-fashion-mnist is installed, then convert it to an ImageFolder:
#   bash scripts/get_fashion_mnist.sh OUT [--train-limit N]      (used by demo.sh and mini_table.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=/usr/share/datasets/fashion-mnist
if [ ! -d "$SRC" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian's dataset-fashion-mnist"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "error: Fashion-MNIST is missing: sudo apt-get install dataset-fashion-mnist" >&2
    exit 1
  fi
fi
.venv/bin/python scripts/prepare_fashion_mnist.py --src "$SRC" --out "$@"
