"""Learning-rate schedules as pure functions of the (fractional) epoch."""
import bisect
import math


def lr_at(epoch, base_lr, cfg, total_epochs):
    """lr at fractional `epoch` for a ScheduleConfig: linear warmup, then step decay or cosine."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        start = base_lr * cfg.warmup_factor
        return start + (base_lr - start) * epoch / cfg.warmup_epochs
    if cfg.type == "step":
        return base_lr * cfg.gamma ** bisect.bisect_right(cfg.milestones, epoch)
    progress = (epoch - cfg.warmup_epochs) / max(total_epochs - cfg.warmup_epochs, 1e-12)
    return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
