"""The numeric precision of training and evaluation (train.precision) as an autocast context."""
import contextlib

import torch


def autocast(precision, device_type):
    """The autocast context for train.precision ('fp32' runs without autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
