"""Map the paper's (#GPUs g, samples-per-GPU b) setting onto the processes actually launched."""
import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    gpus: int              # g: GPUs of the setting
    samples_per_gpu: int   # b: the statistics batch
    world: int             # w: processes launched
    per_process: int       # samples each process holds per step: g/w * b
    stat_groups: int       # g/w: virtual GPUs per process
    lr: float              # base lr per 256 images scaled by g*b/256

    @property
    def total(self):
        return self.gpus * self.samples_per_gpu

    def describe(self):
        emulation = (f", each process emulates {self.stat_groups} GPUs (stat_groups={self.stat_groups})"
                     if self.stat_groups > 1 else "")
        return (f"setting ({self.gpus}, {self.samples_per_gpu}) on {self.world} process(es): total batch "
                f"{self.total}, {self.per_process} samples per process, statistics over {self.samples_per_gpu} "
                f"samples{emulation}, lr {self.lr:g}")


def resolve_setting(batch_cfg, base_lr, world):
    """w == g: plain DDP; w divides g: g/w virtual GPUs per process; anything else is an error."""
    g, b = batch_cfg.gpus, batch_cfg.samples_per_gpu
    for name, value in (("batch.gpus", g), ("batch.samples_per_gpu", b), ("the number of processes", world)):
        if not _positive_int(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(base_lr, bool) or not isinstance(base_lr, (int, float)) or not 0 < base_lr < math.inf:
        raise ValueError(f"optim.lr must be a finite number > 0, got {base_lr!r}")
    if g % world:
        raise ValueError(f"the setting ({g}, {b}) needs {g} GPUs or a divisor of {g} processes, got {world}; "
                         f"launch torchrun with --nproc_per_node*--nnodes dividing {g}")
    k = g // world
    return Setting(g, b, world, k * b, k, base_lr * g * b / 256)


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def effective_setting(cfg, world=None):
    """(effective cfg, Setting, notes) of a config launched on `world` processes (None: batch.gpus, one per
    GPU of the setting): the one place that derives what runs, for train.py, the trainer, the sweep and eval.py."""
    cfg, notes = _setting_rules(cfg)
    return cfg, resolve_setting(cfg.batch, cfg.optim.lr, cfg.batch.gpus if world is None else world), notes


def norm_factory(cfg, setting):
    """The norm layer factory of the effective config under `setting`: each process batch split into the
    emulated GPUs (stat_groups) for the types that take it, those with per-GPU batch statistics."""
    import norms  # torch: only where layers are built
    options = dataclasses.asdict(cfg.norm)
    if "stat_groups" in norms.factory.norm_options(cfg.norm.type):
        options["stat_groups"] = setting.stat_groups
    return norms.build_norm(**options)


def _setting_rules(cfg):
    """(cfg, notes): the config with the paper's per-setting rules applied, so saved configs say what ran.

    With one sample per GPU, SN's BN branch would normalize single samples: the paper dropped it
    (using_bn=False). SyncSN keeps it, as its statistics cover the whole global batch.
    """
    notes = []
    if cfg.batch.samples_per_gpu == 1 and cfg.norm.type == "sn" and cfg.norm.using_bn:
        cfg = dataclasses.replace(cfg, norm=dataclasses.replace(cfg.norm, using_bn=False))
        notes.append("one sample per GPU: SN drops its BN branch (using_bn=False), as the paper did")
    return cfg, notes


def statistics_batch(cfg, world):
    """Samples per process whose statistics one norm layer saw in training (for recalibration)."""
    if cfg.norm.type in ("syncbn", "syncsn"):
        return max(cfg.batch.total // world, 1)  # synchronized: the global batch, shared by the ranks
    return cfg.batch.samples_per_gpu
