"""Exact distributed evaluation: every image counted once, counts summed over ranks."""
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .distributed import all_reduce_sum
from .precision import autocast


def progress(loader, desc="eval", total=None):
    """`loader` wrapped in a tqdm bar on rank 0 when stderr is a terminal; unchanged otherwise (logs, tests)."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank != 0 or not sys.stderr.isatty():
        return loader
    from tqdm import tqdm
    return tqdm(loader, desc=desc, total=total, unit="batch", leave=False)


def batch_sums(logits, targets, ok):
    """(images, top-1 hits, top-5 hits, summed loss, unreadable) of one batch, float64; `ok`: readable images."""
    top5 = logits.topk(min(5, logits.shape[1]), 1).indices
    hit = top5 == targets[:, None]
    losses = F.cross_entropy(logits, targets, reduction="none")
    return torch.stack([ok.sum(), (hit[:, 0] & ok).sum(), (hit.any(1) & ok).sum(),
                        losses[ok].sum(), (~ok).sum()]).double()


def metrics(sums):
    """The metrics dict of summed `batch_sums` (all-reduced already when distributed)."""
    n = max(sums[0].item(), 1.0)
    return {"images": int(sums[0].item()), "top1": 100.0 * sums[1].item() / n, "top5": 100.0 * sums[2].item() / n,
            "loss": sums[3].item() / n, "unreadable": int(sums[4].item()),
            "correct1": int(sums[1].item()), "correct5": int(sums[2].item())}


@torch.no_grad()
def evaluate(model, loader, device, channels_last=False, precision="fp32", keep_logits=False):
    """Return {"images", "top1", "top5", "loss", "unreadable"} (+ "logits", "targets", "indices").

    Unreadable images (a substituted sample, `bad >= 0`) are excluded and counted separately.
    Sums are all-reduced, so every rank returns the same totals whatever the world size. Rank 0 shows a
    progress bar when stderr is a terminal.
    """
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # images, correct1, correct5, loss, unreadable
    kept = {"logits": [], "targets": [], "indices": []}
    order = torch.as_tensor(list(loader.sampler)) if keep_logits else None  # dataset index of each position
    offset = 0
    for images, targets, bad in progress(loader):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device.type):
            logits = model(images).float()
        ok = (bad.to(device) < 0)
        sums += batch_sums(logits, targets, ok)
        if keep_logits:
            kept["logits"].append(logits[ok].cpu())
            kept["targets"].append(targets[ok].cpu())
            kept["indices"].append(order[offset:offset + len(targets)][ok.cpu()])
        offset += len(targets)
    all_reduce_sum(sums)
    out = metrics(sums)
    if keep_logits:
        out.update({k: torch.cat(v) if v else torch.empty(0) for k, v in kept.items()})
    return out
