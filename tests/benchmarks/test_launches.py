"""benchmarks/launches.py: what it counts as a kernel launch, on known sequences of operators."""
import pytest
import torch

from benchmarks.launches import count, layer_launches, total


def test_counts_computing_operators_and_not_views_or_allocations():
    x = torch.randn(4, 6)
    counts = count(lambda: (x.view(6, 4).t() * 2 + torch.empty(4, 6)).sum())
    assert counts == {"triton": {}, "torch": {"mul": 1, "add": 1, "sum": 1}}
    assert total(counts) == 3


def test_batchnorm_step_is_its_native_kernels():
    layer = torch.nn.BatchNorm2d(3)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    counts = layer_launches(layer, x, torch.randn(2, 3, 4, 4))
    # num_batches_tracked += 1, the forward kernel, the backward kernel
    assert counts["torch"] == {"add_": 1, "native_batch_norm": 1, "native_batch_norm_backward": 1}


@pytest.mark.slow
def test_command_line_table(tmp_path):
    """python -m benchmarks.launches: SN's whole-layer kernels against the generic fused path, interpreted here."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "benchmarks.launches", "--shape", "2,64,2,3"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[1:]}
    assert rows["bn"] == "3" and rows["sn-fused"] == "10" and rows["gn-fused"] == "7", done.stdout
    assert int(rows["sn-fused-generic"]) > 100 and int(rows["sn-reference"]) > 100, done.stdout
