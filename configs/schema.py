"""The typed configuration schema: every key a config file or override may set, with its range."""
from dataclasses import dataclass, field
from typing import List, Literal, Optional


def spec(default, **limits):
    """A field with a default and range limits (gt, ge, lt, le) checked when a config is loaded."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=limits)
    return field(default=default, metadata=limits)


@dataclass
class ModelConfig:
    arch: Literal["resnet"] = "resnet"
    depth: Literal[18, 34, 50, 101, 152] = 50
    variant: Literal["v1", "v2"] = "v1"        # v1: torchvision layout; v2: pre-activation
    num_classes: int = spec(1000, gt=0)
    dropout: float = spec(0.0, ge=0, lt=1)     # before fc; the SN authors used 0.5
    zero_init_last: bool = False               # every residual branch starts as zero
    small_stem: bool = False                   # 3x3/1 stem without max-pool, for 28-64 px images
    width: int = spec(64, gt=0)                # channels of the stem and first stage (torchvision: 64)


@dataclass
class NormConfig:
    type: Literal["bn", "syncbn", "gn", "sn", "syncsn", "in", "ln"] = "bn"
    eps: float = spec(1e-5, gt=0)
    momentum: Optional[float] = spec(None, gt=0, le=1)  # PyTorch convention; null: BN 0.1, SN 0.003
    groups: int = spec(32, gt=0)                        # gn only
    using_moving_average: bool = True                   # sn/syncsn; false: recalibrate after training
    using_bn: bool = True                               # sn/syncsn; false: IN+LN only
    impl: Literal["auto", "reference", "fused"] = "auto"  # sn/syncsn/gn/in/ln: fused kernels (Triton on
                                                        # CUDA), the reference code, or auto: the faster there


@dataclass
class BatchConfig:
    """The paper's (#GPUs, samples-per-GPU) setting: total batch gpus*samples_per_gpu, statistics over
    samples_per_gpu."""
    gpus: int = spec(8, gt=0)
    samples_per_gpu: int = spec(32, gt=0)

    @property
    def total(self):
        return self.gpus * self.samples_per_gpu


@dataclass
class OptimConfig:
    lr: float = spec(0.1, gt=0)                # for a total batch of 256; scaled linearly with the batch
    momentum: float = spec(0.9, ge=0, lt=1)
    weight_decay: float = spec(1e-4, ge=0)
    nesterov: bool = False
    decay_norm: bool = True                    # decay norm gammas/betas and SN logits (the paper did)
    decay_bias: bool = True                    # decay conv/fc biases (the paper did)
    clip_grad_norm: Optional[float] = spec(None, gt=0)  # clip the global gradient L2 norm to this; null: off


@dataclass
class ScheduleConfig:
    type: Literal["step", "cosine"] = "step"
    milestones: List[int] = spec([30, 60, 90])  # epochs, for step
    gamma: float = spec(0.1, gt=0, le=1)        # lr factor at each milestone
    warmup_epochs: float = spec(0.0, ge=0)      # linear warmup from warmup_factor * lr
    warmup_factor: float = spec(0.0, ge=0, le=1)
    min_lr: float = spec(0.0, ge=0)             # final lr of cosine


@dataclass
class DataConfig:
    root: str = "data/imagenet"                # ImageFolder root with train/ and val/
    train_split: str = "train"
    val_split: str = "val"
    train_crop: int = spec(224, gt=0)          # RandomResizedCrop size
    min_crop_scale: float = spec(0.08, gt=0, le=1)  # RandomResizedCrop's lower area bound
    val_resize: int = spec(256, gt=0)          # shorter side before the center crop
    val_crop: int = spec(224, gt=0)
    workers: int = spec(8, ge=0)
    color_jitter: float = spec(0.0, ge=0)
    pca_lighting: float = spec(0.0, ge=0)      # AlexNet-style PCA noise std (the SN authors: 0.1)
    synthetic: bool = False                    # random tensors, for speed measurements
    max_bad_images: int = spec(100, ge=0)      # unreadable files skipped before the run fails


@dataclass
class TrainConfig:
    epochs: int = spec(100, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    seed: int = spec(0, ge=0)
    deterministic: bool = False
    label_smoothing: float = spec(0.0, ge=0, lt=1)
    eval_every: int = spec(1, gt=0)            # epochs
    max_iters: int = spec(0, ge=0)             # stop (after a checkpoint) at this global iteration; 0: off
    recalibrate_batches: int = spec(100, gt=0)  # with norm.using_moving_average=false: batches per rank
                                                # used to recompute norm statistics before each evaluation


@dataclass
class LogConfig:
    out_dir: str = "runs"
    name: Optional[str] = None                 # run folder name; null: derived from the config
    tensorboard: bool = True
    print_every: int = spec(50, gt=0)          # iterations


@dataclass
class CheckpointConfig:
    every_epochs: int = spec(1, ge=0)
    every_iters: int = spec(0, ge=0)           # 0: only at epoch ends
    keep_last: int = spec(3, gt=0)
    resume: str = "auto"                       # auto | none | path to a checkpoint


@dataclass
class AdaptConfig:
    """Test-time adaptation of one evaluation (eval.py --adapt, robustness sweeps); not part of training.
    Defaults and their sources: docs/robustness.md."""
    method: Literal["source", "batch", "prior", "adabn", "tent"] = "source"
    batch: int = spec(64, ge=1, le=256)        # test batch B of batch, prior and tent (Tent's ImageNet B)
    prior: float = spec(16.0, ge=0)            # prior: the source statistics count as N samples
    tent_lr: Optional[float] = spec(None, gt=0)  # null: 0.00025 * B / 64 (Tent's ImageNet SGD lr, linear in B)
    tent_momentum: float = spec(0.9, ge=0, lt=1)
    tent_mode: Literal["episodic", "domain", "continual"] = "domain"  # reset per batch / per domain / never
    tent_switch: bool = False                  # also adapt SN's switch logits
    seed: int = spec(0, ge=0)                  # the test stream's permutation


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def check(self):
        """Cross-field rules; returns a list of (key path, message)."""
        errors = []
        ms = self.schedule.milestones
        if self.schedule.type == "step":
            if any(b <= a for a, b in zip(ms, ms[1:])):
                errors.append(("schedule.milestones", f"must be strictly increasing, got {ms}"))
            if any(m <= 0 or m > self.train.epochs for m in ms):
                errors.append(("schedule.milestones", f"must lie in 1..train.epochs={self.train.epochs}, got {ms}"))
        if self.schedule.warmup_epochs >= self.train.epochs:
            errors.append(("schedule.warmup_epochs", f"must be below train.epochs={self.train.epochs}"))
        if self.data.val_crop > self.data.val_resize:
            errors.append(("data.val_crop", f"{self.data.val_crop} exceeds data.val_resize={self.data.val_resize}"))
        if not self.checkpoint.resume.strip():
            errors.append(("checkpoint.resume",
                           f"must be auto, none or a checkpoint path, got {self.checkpoint.resume!r}"))
        return errors
