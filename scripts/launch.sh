#!/usr/bin/env bash
# Train one config on this machine: bash scripts/launch.sh [--nproc N] CONFIG [section.key=value ...]
#
# Default N: the visible CUDA GPUs, capped to the largest divisor of batch.gpus (each process then
# emulates batch.gpus/N GPUs); 1 on a machine without GPUs. N=1 runs train.py in one plain process,
# N>1 under torchrun --standalone. PYTHON overrides the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage="usage: bash scripts/launch.sh [--nproc N] CONFIG [section.key=value ...]"

NPROC=""
case "${1:-}" in
  --nproc) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; NPROC=$2; shift 2 ;;
  --nproc=*) NPROC=${1#--nproc=}; shift ;;
  -h|--help) echo "$usage"; exit 0 ;;
esac
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || { echo "$usage" >&2; exit 2; }
if [ -n "$NPROC" ] && ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: --nproc must be a positive integer, got '$NPROC'" >&2
  exit 2
fi
CONFIG=$1
shift

if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ -x "$REPO/.venv/bin/python" ] && PYTHON=$REPO/.venv/bin/python
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

if [ -z "$NPROC" ]; then
  NPROC=$("$PYTHON" - "$CONFIG" "$@" <<'EOF'
import sys
from configs import ConfigError
from launch.sweep import launch_nproc
try:
    print(launch_nproc(sys.argv[1], sys.argv[2:]))
except ConfigError as e:
    sys.exit(f"error: {e}")
EOF
  ) || exit 2
fi

if [ -z "${OMP_NUM_THREADS:-}" ]; then
  export OMP_NUM_THREADS=$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))
fi
echo "launch.sh: $NPROC process(es), OMP_NUM_THREADS=$OMP_NUM_THREADS" >&2
if [ "$NPROC" = 1 ]; then
  exec "$PYTHON" "$REPO/train.py" --config "$CONFIG" "$@"
fi
exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" "$REPO/train.py" --config "$CONFIG" "$@"
