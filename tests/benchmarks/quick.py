"""Run scripts/benchmark.py --quick for one section, as the section tests do."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_quick(tmp_path, what):
    """(completed process, the JSON it wrote) of `scripts/benchmark.py --device cpu --quick --what WHAT`."""
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--device", "cpu", "--quick",
                           "--what", what, "--json", str(out), "--cache-dir", str(tmp_path / "cache")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())
