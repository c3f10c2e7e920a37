#!/usr/bin/env bash
# Set up the environment and run the whole test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh pytest ruff  # the test dependencies; versions pinned in constraints.txt
exec .venv/bin/python -m pytest "$@"
