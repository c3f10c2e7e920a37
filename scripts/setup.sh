#!/usr/bin/env bash
# Create .venv (or reuse it) with the pinned dependencies. Idempotent; prints the python it made.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
log="$VENV/pip-install.log"
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check \
    -r requirements.txt -c constraints.txt "$@" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "setup: pip install failed; full log in $log" >&2
  exit 1
fi
# The repository itself, editable: `import norms` etc. work from scripts/ and any folder.
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . >>"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "setup: pip install -e . failed; full log in $log" >&2
  exit 1
fi
"$VENV/bin/python" -c "import torch, torchvision; print(f'setup: torch {torch.__version__}, torchvision {torchvision.__version__} in $VENV')"
