"""Read training run folders (config.yaml, final.json) into plain records, without torch."""
import os
from dataclasses import dataclass, field

from configs.schema import DataConfig, ModelConfig, NormConfig, TrainConfig
from engine import run_folder

from .recipe import recipe

# no final.json yet: running, queued, stopped or crashed; the trainer writes final.json last, so which
# of these it is cannot be told from the folder
INCOMPLETE = "incomplete"


class ResultsError(ValueError):
    """A problem with a runs folder, naming the file and what to do."""


@dataclass(frozen=True)
class ModelKey:
    """What makes two runs comparable: the same architecture, classes and dataset."""
    arch: str
    depth: int
    variant: str
    num_classes: int
    width: int
    small_stem: bool
    data_root: str

    @property
    def paper_model(self):
        """The paper's model group (ResNet-50 v1, 1000 classes): tables and plots keep the paper's layout."""
        return (self.arch, self.depth, self.variant, self.num_classes) == ("resnet", 50, "v1", 1000)

    def heading(self):
        extras = ([f"width {self.width}"] if self.width != ModelConfig.width else []) + \
                 (["small stem"] if self.small_stem else [])
        name = f"{'ResNet' if self.arch == 'resnet' else self.arch}-{self.depth} {self.variant}"
        return ", ".join([name] + extras + [f"{self.num_classes} classes", f"data {self.data_root}"])


@dataclass
class Run:
    name: str                      # folder path relative to the runs folder
    path: str
    model: ModelKey
    norm: str
    gpus: int
    samples_per_gpu: int
    using_bn: bool
    status: str                    # finished | diverged | incomplete (no final.json) | what final.json says
    final: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)     # what can change the result (results/recipe.py)
    seed: object = TrainConfig.seed

    @property
    def setting(self):
        return (self.gpus, self.samples_per_gpu)

    def metric(self, name):
        """The run's `name` metric (top1, best_top1, ...) when finished, else None."""
        value = self.final.get(name) if self.status == "finished" else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def switch_weights(self):
        return self.final.get("switch_weights") or {}


def read_runs(root):
    """Every run under `root` (any folder holding config.yaml, at any depth), sorted by name."""
    if not os.path.isdir(root):
        raise ResultsError(f"runs folder not found: {root}; pass the folder that holds the run folders "
                           "(log.out_dir of the training configs)")
    runs = []
    for folder, subdirs, files in os.walk(root):
        subdirs.sort()
        if run_folder.CONFIG_NAME in files:
            runs.append(read_run(folder, os.path.relpath(folder, root)))
            subdirs[:] = []  # a run's own subfolders (tb/) hold no runs
    return sorted(runs, key=lambda r: r.name)


def read_run(folder, name=None):
    """One run folder: its resolved config and, when present, final.json."""
    try:
        cfg = run_folder.read_config(folder)
        final = run_folder.read_final(folder)
    except run_folder.RunFolderError as e:
        raise ResultsError(str(e)) from None
    model, norm, batch, data, train = (_section(cfg, key, folder)
                                       for key in ("model", "norm", "batch", "data", "train"))
    status = INCOMPLETE if final is None else run_folder.final_status(final)
    key = ModelKey(arch=model.get("arch", ModelConfig.arch), depth=model.get("depth", ModelConfig.depth),
                   variant=model.get("variant", ModelConfig.variant),
                   num_classes=model.get("num_classes", ModelConfig.num_classes),
                   width=model.get("width", ModelConfig.width),
                   small_stem=bool(model.get("small_stem", ModelConfig.small_stem)),
                   data_root=str(data.get("root", DataConfig.root)))
    gpus, per_gpu = batch.get("gpus"), batch.get("samples_per_gpu")
    if not isinstance(gpus, int) or not isinstance(per_gpu, int):
        raise ResultsError(f"{folder}/config.yaml: batch.gpus and batch.samples_per_gpu must be integers, "
                           f"got {gpus!r} and {per_gpu!r}")
    return Run(name=name or os.path.basename(folder), path=folder, model=key,
               norm=str(norm.get("type", NormConfig.type)), gpus=gpus, samples_per_gpu=per_gpu,
               using_bn=bool(norm.get("using_bn", NormConfig.using_bn)), status=status, final=final or {},
               recipe=recipe(cfg), seed=train.get("seed", TrainConfig.seed))


def _section(cfg, key, folder):
    value = cfg.get(key, {}) if isinstance(cfg, dict) else None
    if not isinstance(value, dict):
        raise ResultsError(f"{folder}/config.yaml: '{key}' must be a mapping; is this a training run's config?")
    return value
