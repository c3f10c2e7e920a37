"""Input pipeline: ImageFolder with bad-file substitution, transforms, distributed samplers, loaders."""
from .folder import ImageFolder
from .loaders import build_eval_loader, build_stream_loader, build_train_loader
from .samplers import EvalSampler, TrainSampler
from .synthetic import SyntheticDataset
from .transforms import eval_transform, train_transform

__all__ = ["ImageFolder", "SyntheticDataset", "TrainSampler", "EvalSampler", "train_transform", "eval_transform",
           "build_train_loader", "build_eval_loader", "build_stream_loader"]
