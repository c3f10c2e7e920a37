"""Model zoo entry point: `build_model(model_cfg, norm)` builds an architecture from its config."""
from .checkpoints import (
    Checkpoint,
    convert_released_sn,
    load_checkpoint,
    load_strict,
    read_checkpoint,
    read_released_sn,
    released_sn_options,
    strip_prefixes,
)
from .resnet import ResNet

ARCHS = {"resnet": ResNet}


def build_model(cfg, norm):
    """Build the model described by a `configs.ModelConfig` with norm layers from `norm`."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown model.arch '{cfg.arch}'; choose one of {sorted(ARCHS)}")
    return ARCHS[cfg.arch](depth=cfg.depth, variant=cfg.variant, num_classes=cfg.num_classes, norm=norm,
                           dropout=cfg.dropout, zero_init_last=cfg.zero_init_last, small_stem=cfg.small_stem,
                           width=cfg.width)


__all__ = ["Checkpoint", "ResNet", "build_model", "convert_released_sn", "load_checkpoint", "load_strict",
           "read_checkpoint", "read_released_sn", "released_sn_options", "strip_prefixes"]
