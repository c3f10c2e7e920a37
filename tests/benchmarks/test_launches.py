"""benchmarks/launches.py: what it counts as a kernel launch, on known sequences of operators."""
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
