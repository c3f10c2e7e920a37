"""Print what a config resolves to (setting, scaled lr, norm, model size) and run one step on random data.

usage: python scripts/describe.py CONFIG [section.key=value ...]
"""
import dataclasses
import os
import sys

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import norms  # noqa: E402
from configs import ConfigError, load_config, to_dict  # noqa: E402
from models import build_model  # noqa: E402


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
        norm = norms.build_norm(**dataclasses.asdict(cfg.norm))
        model = build_model(cfg.model, norm)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
    b = cfg.batch
    print(f"\nsetting ({b.gpus}, {b.samples_per_gpu}): total batch {b.total}, "
          f"lr {cfg.optim.lr} x {b.total}/256 = {cfg.optim.lr * b.total / 256:g}, "
          f"normalization statistics over {b.samples_per_gpu} samples per GPU")
    print(f"model: ResNet-{cfg.model.depth} {cfg.model.variant}, norm {norm}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    x = torch.randn(2, 3, 64, 64)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    print(f"one training step on a random 2x3x64x64 batch: loss {loss.item():.4f}, gradients finite: "
          f"{all(torch.isfinite(p.grad).all() for p in model.parameters())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
