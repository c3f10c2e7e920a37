#!/usr/bin/env bash
# Set up the environment and run the whole test suite: bash scripts/test.sh [pytest args]
# Tests run in 2 worker processes (pytest-xdist); PYTEST_WORKERS=0 runs them in this process, in order.
set -euo pipefail
cd "$(dirname "$0")/.."
# the test dependencies and the corruption generator's; versions pinned in constraints.txt
bash scripts/setup.sh pytest pytest-xdist ruff -r requirements-corruptions.txt
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
