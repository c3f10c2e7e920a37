"""Normalization layers and the factory that builds them from a config; models use only `build_norm`."""
from . import adaptation
from .batchnorm import BatchNorm2d, SyncBatchNorm2d
from .factory import NormFactory, available_norms, build_norm, check_norms, register_norm
from .groupnorm import GroupNorm2d
from .recalibrate import recalibrate
from .switchable import SwitchNorm2d, SyncSwitchNorm2d
from .tools import average_running_stats, is_norm, switch_weights

__all__ = ["BatchNorm2d", "SyncBatchNorm2d", "SwitchNorm2d", "SyncSwitchNorm2d", "GroupNorm2d", "build_norm",
           "available_norms", "check_norms", "register_norm", "NormFactory", "recalibrate",
           "average_running_stats", "is_norm", "switch_weights", "adaptation"]
