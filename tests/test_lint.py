"""`ruff check` with the settings of pyproject.toml passes on the whole repository.

Ruff comes with the test dependencies (bash scripts/setup.sh pytest installs it), so a missing
ruff is a failure, not a skip: CI must not pass without linting. `ruff format` is not enforced.
"""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ruff(*args, cwd=REPO):
    """ruff of this Python's environment on args, as (exit code, output)."""
    proc = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "No module named ruff" in proc.stderr:
        pytest.fail(f"ruff is not installed in {sys.prefix}: run `bash scripts/setup.sh pytest` "
                    "(it installs the version pinned in constraints.txt)")
    return proc.returncode, proc.stdout + proc.stderr


def test_repository_passes_ruff_check():
    code, out = ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert code == 0, f"ruff check found problems (fix them, or `ruff check --fix` the fixable ones):\n{out}"


def test_the_settings_catch_what_ci_relies_on(tmp_path):
    """The repository's settings report unused imports, undefined names, import order and long lines."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\n\ndef f():\n    return undefined_name + " + "1 + " * 30 + "1\n")
    code, out = ruff("check", "--no-cache", "--output-format", "concise", "--config", str(REPO / "pyproject.toml"),
                     str(bad), cwd=tmp_path)
    assert code == 1, out
    for rule in ("F401", "F821", "I001", "E501"):
        assert rule in out, f"{rule} not reported:\n{out}"
