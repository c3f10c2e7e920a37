"""Typed experiment configs: the schema, the YAML loader with `base:` inheritance and overrides."""
from .loader import ConfigError, from_dict, load_config, read_yaml, to_dict
from .schema import (
    AdaptConfig,
    BatchConfig,
    CheckpointConfig,
    Config,
    DataConfig,
    LogConfig,
    ModelConfig,
    NormConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = ["Config", "AdaptConfig", "ConfigError", "load_config", "read_yaml", "from_dict", "to_dict",
           "ModelConfig", "NormConfig", "BatchConfig", "OptimConfig", "ScheduleConfig", "DataConfig", "TrainConfig",
           "LogConfig", "CheckpointConfig"]
