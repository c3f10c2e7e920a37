"""Small helpers shared by the norm layers."""
import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)


def stats_dtype(x):
    """Statistics are always accumulated in at least float32."""
    return torch.float32 if x.dtype in LOW_PRECISION else x.dtype


def check_4d(x, layer):
    if x.dim() != 4:
        raise ValueError(f"{layer} expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")


def check_groups(batch, groups, layer):
    if batch % groups:
        raise ValueError(
            f"{layer}: batch of {batch} samples does not split into stat_groups={groups} equal "
            f"chunks; use a per-process batch that is a multiple of {groups}")


def affine(x, scale, shift):
    """y = x * scale + shift with per-(n, c) coefficients broadcast over H, W, keeping x's memory format."""
    return torch.addcmul(shift[..., None, None], x, scale[..., None, None])
