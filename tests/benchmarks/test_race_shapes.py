"""benchmarks/race_shapes.py, the program compute-sanitizer watches in the GPU check: its passes reach the
Triton kernels (interpreted on the CPU here), and a pass that does not is an error."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import race_shapes

REPO = Path(__file__).resolve().parents[2]


def test_passes_cover_both_norms_layouts_dtypes_and_eval():
    cases = race_shapes.cases()
    assert {(c[0], c[3], c[4]) for c in cases} == {("sn", "nchw", "fp32"), ("sn", "channels_last", "fp32"),
                                                     ("sn", "channels_last", "bf16"), ("gn", "nchw", "fp32"),
                                                     ("gn", "channels_last", "bf16")}
    assert any(not c[5] for c in cases) and all(c[1]["impl"] == "fused" for c in cases)
    assert all(c[2][1] % c[1]["groups"] == 0 for c in cases if c[0] == "gn")


def run(tmp_path, interpret):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **({"TRITON_INTERPRET": "1"} if interpret else {}))
    return subprocess.run([sys.executable, "-m", "benchmarks.race_shapes", "--device", "cpu", "--first", "2",
                           "--json", str(tmp_path / "race.json")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_the_kernels_run_and_a_pass_without_them_fails(tmp_path):
    pytest.importorskip("triton")
    proc = run(tmp_path, interpret=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = json.loads((tmp_path / "race.json").read_text())["cases"]
    assert len(done) == 2 and all("triton" in c["grad_fn"] for c in done)
    proc = run(tmp_path, interpret=False)  # the CPU kernels, not Triton's: nothing for the sanitizer to check
    assert proc.returncode == 1 and "did not run the Triton kernels" in proc.stderr
