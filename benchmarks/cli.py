"""Command line of scripts/benchmark.py: defaults per device, the three sections, tables and JSON."""
import argparse
import json
import os
import sys
import time

import torch

from . import compiled, layers, network, pipeline, report, shapes, timing, trainer, trainer_step, variants

SECTIONS = ("layers", "network", "pipeline")  # the default; the others run only when asked for
CHOICES = SECTIONS + ("compile", "trainer", "trainer-step")
# Per device (and --quick) defaults: the full matrix on CUDA, a few minutes on a 2-core CPU, seconds for tests.
DEFAULTS = {
    "cuda": dict(layer_batch=[32, 256], shape_size=224, precision=["fp32", "bf16"], repeats=10, warmup=3,
                 copy_mb=1024, min_sample_s=2e-3, depth=50, image_size=224, batch=[32, 256],
                 pipeline_images=2048, pipeline_unique=256, pipeline_batch=32, pipeline_repeats=3),
    "cpu": dict(layer_batch=[8], shape_size=224, precision=["fp32", "bf16"], repeats=5, warmup=2, copy_mb=256,
                min_sample_s=20e-3, depth=50, image_size=112, batch=[8], pipeline_images=256, pipeline_unique=256,
                pipeline_batch=32, pipeline_repeats=3),
    "quick": dict(layer_batch=[2], shape_size=64, precision=["fp32", "bf16"], repeats=1, warmup=1, copy_mb=8,
                  min_sample_s=0.0, depth=18, image_size=32, batch=[2], pipeline_images=16, pipeline_unique=4,
                  pipeline_batch=4, pipeline_repeats=1, workers=[0, 1]),
}
# The trainer section's defaults (trainer_*): on the CPU the run the issue "Trainer hot path at a plain loop's
# speed" was filed with (ResNet-18 at 32 px, 2 processes of 32, steps 20-200 of a one-epoch folder of 12,800
# PNGs); on CUDA the same on every GPU (trainer_world None), with more loader workers. trainer_images None:
# world * batch * steps, so that the epoch is the timed window.
TRAINER = {
    "cuda": dict(trainer_world=None, trainer_batch=32, trainer_steps=200, trainer_warmup=20, trainer_rounds=3,
                 trainer_data="folder", trainer_images=None, trainer_size=32, trainer_depth=18, trainer_width=64,
                 trainer_workers=8, trainer_threads=1),
    "cpu": dict(trainer_world=2, trainer_batch=32, trainer_steps=200, trainer_warmup=20, trainer_rounds=5,
                trainer_data="folder", trainer_images=None, trainer_size=32, trainer_depth=18, trainer_width=64,
                trainer_workers=1, trainer_threads=1),
    "quick": dict(trainer_world=2, trainer_batch=4, trainer_steps=6, trainer_warmup=2, trainer_rounds=1,
                  trainer_data="folder", trainer_images=None, trainer_size=32, trainer_depth=18, trainer_width=8,
                  trainer_workers=1, trainer_threads=1),
}
# The compile section's defaults: ResNet-50 in bf16 channels_last at 224 px on CUDA; on a 2-core CPU a batch
# of 8 at 96 px in fp32, where compiling (minutes per variant) and not the steps dominates; seconds for tests
# with TorchDynamo's graph capture only.
COMPILE = {
    "cuda": dict(compile_variants=["bn", "sn-fused", "gn-fused"], compile_batch=[32, 256], compile_size=224,
                 compile_depth=50, compile_precision="bf16", compile_layout="channels_last",
                 compile_backend="inductor"),
    "cpu": dict(compile_variants=["bn", "sn-fused", "gn-fused"], compile_batch=[8], compile_size=96,
                compile_depth=50, compile_precision="fp32", compile_layout="nchw", compile_backend="inductor"),
    "quick": dict(compile_variants=["bn", "sn-fused"], compile_batch=[2], compile_size=32, compile_depth=18,
                  compile_precision="fp32", compile_layout="nchw", compile_backend="eager"),
}
for _kind in DEFAULTS:
    DEFAULTS[_kind].update(TRAINER[_kind], **COMPILE[_kind])


def _list(kind, choices=None):
    def parse(text):
        items = [kind(t) for t in text.split(",") if t]
        bad = [i for i in items if choices is not None and i not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list of {sorted(choices)}"
                                             if choices else f"{text!r}: give a comma-separated list")
        if kind is int and min(items) < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: values must be >= 0")
        return items
    return parse


def parser():
    p = argparse.ArgumentParser(description="Benchmark norm layers, whole-network training and the input "
                                "pipeline; prints tables, --json writes every raw median and ratio.")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--what", type=_list(str, CHOICES), default=list(SECTIONS),
                   help="sections, e.g. layers,network (default: layers,network,pipeline; compile: eager against "
                   "torch.compile, trainer: train.py against a plain loop, trainer-step: the trainer's step "
                   "against a plain step in one process, only when named)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and 1 repeat (for tests)")
    p.add_argument("--repeats", type=int, help="timed repeats per variant (median reported)")
    p.add_argument("--warmup", type=int, help="untimed calls per variant before timing")
    p.add_argument("--json", metavar="PATH", help="write all results here")
    p.add_argument("--variants", type=_list(str, variants.VARIANTS), default=list(variants.VARIANTS))
    p.add_argument("--precision", type=_list(str, layers.PRECISIONS), help="fp32,bf16 (bf16: autocast)")
    p.add_argument("--layout", type=_list(str, layers.LAYOUTS), default=list(layers.LAYOUTS))
    p.add_argument("--channels-last", action="store_true", help="same as --layout channels_last")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (network section)")
    g = p.add_argument_group("layers")
    g.add_argument("--layer-batch", type=_list(int), help="samples per GPU N of the layer inputs")
    g.add_argument("--shape-size", type=int, help="image size at which ResNet-50's norm input shapes are taken")
    g.add_argument("--copy-mb", type=int, help="size of the tensor copied to measure the copy rate")
    g.add_argument("--min-sample-ms", type=float, help="back-to-back calls per timed sample until a sample lasts "
                   "this long (CUDA 2, CPU 20; 0: one call per sample)")
    g = p.add_argument_group("network")
    g.add_argument("--depth", type=int, choices=[18, 34, 50, 101, 152])
    g.add_argument("--image-size", type=int)
    g.add_argument("--batch", type=_list(int), help="images per step")
    g = p.add_argument_group("pipeline")
    g.add_argument("--workers", type=_list(int), help="DataLoader worker counts to compare")
    g.add_argument("--pipeline-images", type=int, help="files in the generated folder")
    g.add_argument("--pipeline-unique", type=int, help="distinct JPEGs among them (the rest are hard links)")
    g.add_argument("--pipeline-batch", type=int)
    g.add_argument("--pipeline-repeats", type=int, help="passes over the folder per worker count (median)")
    g.add_argument("--crop", type=int, default=224)
    g.add_argument("--cache-dir", default=pipeline.default_cache_dir(),
                   help="where the generated JPEG and PNG folders are kept")
    g = p.add_argument_group("compile", "a ResNet training step of every variant eager and under torch.compile, "
                             "interleaved; compile time apart")
    g.add_argument("--compile-variants", type=_list(str, variants.VARIANTS), help="variants (must include bn)")
    g.add_argument("--compile-batch", type=_list(int), help="images per step (CUDA 32,256; CPU 8)")
    g.add_argument("--compile-size", type=int, help="image size (CUDA 224, CPU 96)")
    g.add_argument("--compile-depth", type=int, choices=[18, 34, 50, 101, 152])
    g.add_argument("--compile-precision", choices=list(layers.PRECISIONS), help="CUDA bf16, CPU fp32")
    g.add_argument("--compile-layout", choices=list(layers.LAYOUTS), help="CUDA channels_last, CPU nchw")
    g.add_argument("--compile-backend", choices=compiled.BACKENDS, help="torch.compile backend (default inductor)")
    g = p.add_argument_group("trainer", "train.py under torchrun against benchmarks/plain_loop.py (and --timm-train), "
                             "same model, data, batch, precision and processes; interleaved rounds")
    g.add_argument("--trainer-world", type=int, help="processes (CPU 2; CUDA: one per GPU, default every GPU)")
    g.add_argument("--trainer-batch", type=int, help="images per process and step")
    g.add_argument("--trainer-steps", type=int, help="last timed step; the trainer stops there")
    g.add_argument("--trainer-warmup", type=int, help="first timed step (steps before it are start-up)")
    g.add_argument("--trainer-rounds", type=int, help="rounds, each running every program once (median)")
    g.add_argument("--trainer-data", choices=trainer.DATA_KINDS,
                   help="folder: generated ImageFolder of PNGs; synthetic: data/synthetic.py's random tensors")
    g.add_argument("--trainer-images", type=int, help="training images of the generated folder (default: world * "
                   "batch * steps, one epoch)")
    g.add_argument("--trainer-size", type=int, help="image size (train crop, val resize and crop)")
    g.add_argument("--trainer-depth", type=int, choices=[18, 34, 50, 101, 152])
    g.add_argument("--trainer-width", type=int, help="channels of the stem and first stage (64: torchvision)")
    g.add_argument("--trainer-precision", choices=["fp32", "bf16"], default="fp32")
    g.add_argument("--trainer-workers", type=int, help="DataLoader workers per process")
    g.add_argument("--trainer-threads", type=int, help="OMP_NUM_THREADS of every process")
    g.add_argument("--trainer-tensorboard", choices=["true", "false"], default="true",
                   help="the trainer's log.tensorboard (false where tensorboardX is not installed)")
    g.add_argument("--timm-train", metavar="PATH", help="a copy of timm's train.py, run as a third program "
                   "(on the CPU it needs the one-line DDP patch in docs/performance.md)")
    return p


def settings(args):
    """args with every unset option filled from the device's (or --quick's) defaults; raises ValueError on misuse."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch.cuda.is_available() is False (no GPU or a CPU-only torch); "
                         "use --device cpu")
    defaults = dict(DEFAULTS["quick" if args.quick else args.device])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    defaults.setdefault("workers", sorted({max(1, cpus // 2), cpus}))
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.min_sample_ms is not None:
        if args.min_sample_ms < 0:
            raise ValueError(f"--min-sample-ms must be >= 0, got {args.min_sample_ms}")
        args.min_sample_s = args.min_sample_ms / 1e3
    if args.channels_last:
        args.layout = ["channels_last"]
    if variants.BASELINE not in args.variants:
        raise ValueError(f"--variants must include {variants.BASELINE}: every ratio is taken against it")
    for key in ("repeats", "shape_size", "copy_mb", "image_size", "pipeline_images", "pipeline_unique",
                "pipeline_batch", "pipeline_repeats", "crop"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.warmup < 1:
        raise ValueError(f"--warmup must be >= 1 (the first call allocates and compiles), got {args.warmup}")
    if 0 in args.layer_batch or 0 in args.batch:
        raise ValueError("--layer-batch and --batch need values >= 1")
    if variants.BASELINE not in args.compile_variants:
        raise ValueError(f"--compile-variants must include {variants.BASELINE}: every ratio is taken against it")
    if args.compile_size < 1 or 0 in args.compile_batch:
        raise ValueError("--compile-size and --compile-batch need values >= 1")
    if "trainer" in args.what or "trainer-step" in args.what:
        trainer_settings(args)
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise ValueError(f"--json {args.json}: its folder does not exist; create it or choose another path")
    return args


def trainer_settings(args):
    """The trainer section's checks; fills args.trainer_world on CUDA and sets args.trainer_setup."""
    if args.trainer_world is None:
        args.trainer_world = torch.cuda.device_count()
    if args.trainer_images is None:
        args.trainer_images = args.trainer_world * args.trainer_batch * args.trainer_steps
    if args.device == "cuda" and args.trainer_world > torch.cuda.device_count():
        raise ValueError(f"--trainer-world {args.trainer_world}: one GPU per process, but "
                         f"{torch.cuda.device_count()} are visible")
    for key in ("world", "batch", "warmup", "rounds", "size", "width", "threads"):
        if getattr(args, f"trainer_{key}") < 1:
            raise ValueError(f"--trainer-{key} must be >= 1, got {getattr(args, f'trainer_{key}')}")
    if args.trainer_workers < 0:
        raise ValueError(f"--trainer-workers must be >= 0, got {args.trainer_workers}")
    if args.trainer_steps <= args.trainer_warmup:
        raise ValueError(f"--trainer-steps ({args.trainer_steps}) must exceed --trainer-warmup "
                         f"({args.trainer_warmup}): the rate is timed between them")
    if args.trainer_data == "folder" and args.trainer_images < args.trainer_world * args.trainer_batch:
        raise ValueError(f"--trainer-images {args.trainer_images} do not fill one step of --trainer-world * "
                         f"--trainer-batch = {args.trainer_world * args.trainer_batch} images")
    if args.timm_train and not os.path.isfile(args.timm_train):
        raise ValueError(f"--timm-train {args.timm_train}: no such file")
    args.trainer_setup = trainer.Setup(
        device=args.device, world=args.trainer_world, batch=args.trainer_batch, steps=args.trainer_steps,
        warmup=args.trainer_warmup, data=args.trainer_data, images=args.trainer_images, size=args.trainer_size,
        depth=args.trainer_depth, width=args.trainer_width, precision=args.trainer_precision,
        workers=args.trainer_workers, threads=args.trainer_threads, tensorboard=args.trainer_tensorboard == "true")
    if args.timm_train:
        trainer.timm_argv(args.trainer_setup, args.timm_train, "", "")


_START = time.perf_counter()


def progress(message):
    print(f"[{time.perf_counter() - _START:6.0f} s] {message}", file=sys.stderr, flush=True)


def run(args):
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # an explicit index for nvJPEG and the events
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # as the trainer does
    clock = timing.clock_for(device)
    resolved = variants.resolve_all(args.variants)
    factories = {n: v["factory"] for n, v in resolved.items() if v["factory"]}
    env = report.environment(device)
    print(report.header(env))
    for name, v in resolved.items():
        print(f"  {name}: {v.get('description') or v.get('reason')}")
    out = {"environment": env, "settings": {k: v for k, v in vars(args).items() if k != "trainer_setup"},
           "variants": variants.describe(resolved)}
    if "layers" in args.what:
        progress("layers: measuring the copy rate")
        copy = timing.copy_rate(device, args.copy_mb * 2**20, clock, max(args.repeats, 3), args.warmup)
        found = shapes.norm_input_shapes(50, args.shape_size)
        runs = layers.run_layers(device, found, args.layer_batch, args.precision, args.layout, factories, clock,
                                 args.repeats, args.warmup, args.min_sample_s, copy["bytes_per_s"], progress)
        out["layers"] = {"shape_source": f"forward hooks on the norm layers of models.ResNet(50, 'v1') at "
                                         f"{args.shape_size} px, batch 1", "repeats": args.repeats,
                         "variants": list(factories), "copy": copy,
                         "shapes": [{"chw": list(s), "count": c} for s, c in found], "runs": runs}
        print("\n" + report.layers_text(out["layers"]))
    if "network" in args.what:
        runs = network.run_network(device, factories, args.depth, args.image_size, args.batch, args.precision,
                                   args.layout, args.compile, clock, args.repeats, args.warmup, progress)
        out["network"] = {"repeats": args.repeats, "runs": runs}
        print("\n" + report.network_text(out["network"]))
    if "pipeline" in args.what:
        # One warm-up pass is enough here: it fills the page cache and starts nvJPEG; nothing is compiled.
        out["pipeline"] = pipeline.run_pipeline(device, args.cache_dir, args.pipeline_images, args.pipeline_unique,
                                                args.pipeline_batch, args.crop, args.workers, clock,
                                                args.pipeline_repeats, 1, progress)
        print("\n" + report.pipeline_text(out["pipeline"]))
    if "compile" in args.what:
        resolved_compile = variants.resolve_all(args.compile_variants)
        chosen = {n: v["factory"] for n, v in resolved_compile.items() if v["factory"]}
        section = out["compile"] = {"repeats": args.repeats, "warmup": args.warmup,
                                    "variants": variants.describe(resolved_compile), "runs": []}

        def save(runs):  # a partial file after every batch size: compiling may outlast a time limit
            section["runs"] = runs
            if args.json:
                write_json(args.json, out)
        compiled.run_compile(device, chosen, args.compile_depth, args.compile_size, args.compile_batch,
                             args.compile_precision, args.compile_layout, args.compile_backend, clock,
                             args.repeats, args.warmup, progress, save)
        print("\n" + report.compile_text(section))
    if "trainer" in args.what:
        out["trainer"] = trainer.run_trainer(args.trainer_setup, args.trainer_rounds, args.cache_dir,
                                             args.timm_train, progress=progress)
        print("\n" + report.trainer_text(out["trainer"]))
    if "trainer-step" in args.what:
        out["trainer_step"] = trainer_step.run_trainer_step(args.trainer_setup, args.cache_dir, progress=progress)
        print("\n" + report.trainer_step_text(out["trainer_step"]))
    from norms import backends
    out["kernel_self_checks"] = backends.self_checks()  # a failed one: that kernel fell back to the reference
    for failed in backends.fallbacks():
        print(f"warning: kernel self-check failed, the reference ran instead: {failed}", file=sys.stderr)
    progress("done")
    return out


def write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)  # str: a torch.device or dtype in a record
    os.replace(tmp, path)


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        args = settings(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        out = run(args)
    except trainer.ProgramFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        write_json(args.json, out)
        print(f"\nwrote {args.json}")
    return 0
