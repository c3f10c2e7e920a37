#!/usr/bin/env bash
# The GPU check: on one CUDA GPU, the kernel tests on CUDA, a compute-sanitizer race check (if installed)
# and the headline benchmarks, each under a time limit within 8 minutes; ends with a table.
#   bash scripts/gpu_check.sh [--dry-run] [--only PARTS] [--skip PARTS] [--out DIR] [--total SECONDS]
#                             [--cache-dir DIR]
# Outputs (logs, JSON, report.md) go to --out, else $OUT when set, else ./gpu_check_out. Python: $PYTHON,
# else python, else python3. Exit 0: the correctness parts passed (or were skipped, as the table says);
# 1: one failed or timed out; 2: bad usage or no CUDA. See docs/performance.md, "GPU check".
set -u
repo=$(cd "$(dirname "$0")/.." && pwd) || exit 2
# The repository is not installed where this runs (no .venv): its packages are found through PYTHONPATH.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-}
if [ -z "$python" ]; then
  python=$(command -v python || command -v python3 || true)
fi
if [ -z "$python" ]; then
  echo "gpu_check: no python on PATH; set PYTHON=/path/to/python" >&2
  exit 2
fi
exec "$python" -m benchmarks.gpu_check "$@"
