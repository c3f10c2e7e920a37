#!/usr/bin/env bash
# Create .venv (or reuse it) with the pinned dependencies. Idempotent; prints the python it made.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r requirements.txt -c constraints.txt "$@"
"$VENV/bin/python" -c "import torch, torchvision; print(f'setup: torch {torch.__version__}, torchvision {torchvision.__version__} in $VENV')"
