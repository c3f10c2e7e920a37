"""Worker for tests/norms/test_sync.py, launched by torchrun with 2 ranks (gloo backend, CPU).

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 sync_worker.py DIR

Reads DIR/inputs.pt (written by the test: full concatenated batches, loss weights, layer states
and per-rank batch sizes), runs every scenario on this rank's share of the data and writes
DIR/rank{RANK}.pt with the outputs, gradients and buffers. It compares nothing itself: all
checks happen in the pytest process against single-process references.
"""
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import norms  # noqa: E402
from norms.distributed import active_group  # noqa: E402


def rank_slice(sizes, rank):
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def train_step(layer, x, grad_weights):
    """One training-mode forward and backward of this rank's partial loss sum(y * grad_weights)."""
    layer.train()
    x = x.clone().requires_grad_(True)
    y = layer(x)
    (y * grad_weights).sum().backward()  # this rank's part of the global loss, no division
    return {
        "y": y.detach().clone(),
        "x_grad": x.grad.detach().clone(),
        "param_grads": {name: p.grad.detach().clone() for name, p in layer.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in layer.named_buffers()},
    }


def run_layer_case(case, rank):
    sl = rank_slice(case["sizes"], rank)
    if case["kind"] == "sn":
        layer = norms.SyncSwitchNorm2d(case["num_features"], **case["kwargs"])
    elif case["kind"] == "bn":
        layer = norms.SyncBatchNorm2d(case["num_features"], **case["kwargs"])
    else:
        raise ValueError(case["kind"])
    layer = layer.double()
    layer.load_state_dict(case["state"])
    return train_step(layer, case["x"][sl], case["grad_weights"][sl])


class Parallel(nn.Module):
    """Two independent norm layers fed the same raw input, so each one sees the raw batches."""

    def __init__(self, sn, bn):
        super().__init__()
        self.sn = sn
        self.bn = bn

    def forward(self, x):
        return self.sn(x), self.bn(x)


def run_recalibrate(case, rank):
    c = case["num_features"]
    sn = norms.SwitchNorm2d(c, stat_groups=1, **case["sn_kwargs"]).double()
    sn.load_state_dict(case["sn_state"])
    bn = norms.BatchNorm2d(c, **case["bn_kwargs"]).double()
    bn.load_state_dict(case["bn_state"])
    model = Parallel(sn, bn)
    model.eval()  # recalibrate must restore this mode afterwards
    batches = case["batches"][rank]
    if rank == 1:  # exercise the (inputs, targets) batch form on one rank
        batches = [(b, torch.zeros(b.shape[0], dtype=torch.long)) for b in batches]
    used = norms.recalibrate(model, batches, case["num_batches"])
    return {
        "used": used,
        "training_after": model.training,
        "sn_buffers": {name: b.detach().clone() for name, b in sn.named_buffers()},
        "bn_buffers": {name: b.detach().clone() for name, b in bn.named_buffers()},
    }


def main():
    folder = sys.argv[1]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(1234 + rank)  # nothing random should be used; differs per rank on purpose
    inputs = torch.load(os.path.join(folder, "inputs.pt"), weights_only=True)
    results = {
        "meta": {
            "rank": rank,
            "world_size": dist.get_world_size(),
            "backend": str(dist.get_backend()),
            "group_active": active_group() is not None,
        }
    }
    for name, case in inputs["layer_cases"].items():
        results[name] = run_layer_case(case, rank)
    results["recalibrate"] = run_recalibrate(inputs["recalibrate"], rank)
    torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
