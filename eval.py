"""Evaluate a checkpoint on a validation folder: top-1, top-5, loss, number of images.

  python eval.py CHECKPOINT --data ROOT [--config CONFIG] [section.key=value ...]
  python eval.py --zoo NAME --data ROOT [--zoo-dir DIR]
  torchrun --nproc_per_node=G eval.py CHECKPOINT --data ROOT ...

CHECKPOINT is this repository's checkpoint (its config picks the architecture), the SN authors'
released file, a torchvision state_dict or a .safetensors file (architecture from --config and
overrides; default ResNet-50 v1, with SN for the authors' files). --zoo NAME takes a model of the
registry models/zoo.yaml: its file from the zoo folder, verified by sha256, and its config.

The val folder's classes must be those the model was trained on, in label order: checked by name for
this repository's checkpoints and exported zoo files, which record them; for other files only their
number can be checked (against the model's outputs), and the output says the order was not verified.

Under distribution shift (docs/robustness.md):
  python eval.py CHECKPOINT --corruptions ROOT [--adapt METHOD --adapt-batch B ...] [--json] [--out FILE]
evaluates every ROOT/<corruption>/<severity>/ folder (ImageNet-C layout) with test-time adaptation METHOD
(source, batch, prior, adabn, tent) and prints one result record; --adapt alone adapts on the val split.
"""
import argparse
import dataclasses
import json
import os
import sys
import tempfile

import torch

import norms
from configs import AdaptConfig, Config, ConfigError, from_dict, load_config
from data import build_eval_loader, build_train_loader, corruptions, eval_transform
from engine import robustness
from engine.adapt import METHODS, USED_BY
from engine.cli import USER_ERRORS, error_line
from engine.distributed import all_gather_objects, init_distributed, shutdown
from engine.evaluate import evaluate, progress
from engine.precision import autocast
from engine.run_folder import atomic_write
from engine.setting import effective_setting, statistics_batch
from models import build_model, load_checkpoint, load_strict, released_sn_options, zoo


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="checkpoint file (or --zoo NAME)")
    parser.add_argument("--zoo", metavar="NAME", help="evaluate a model of the zoo registry, verified by sha256")
    parser.add_argument("--zoo-dir", metavar="DIR", help="folder of the zoo files (default: $SN_ZOO_DIR or ./zoo)")
    parser.add_argument("--zoo-registry", metavar="FILE", default=zoo.REGISTRY, help="default: models/zoo.yaml")
    parser.add_argument("--data", help="dataset root holding the val split (default: the config's data.root)")
    parser.add_argument("--config", help="config for checkpoints that carry none")
    parser.add_argument("--batch-size", type=int, default=100, help="images per batch on each process (default 100)")
    parser.add_argument("--workers", type=int, default=None,
                        help="data-loader worker processes per process (default: the config's data.workers)")
    parser.add_argument("--save-logits", metavar="FILE", help="write logits and targets in dataset order")
    parser.add_argument("--json", action="store_true", help="print one final JSON line")
    parser.add_argument("--recalibrate", type=_non_negative, default=0, metavar="N",
                        help="re-estimate norm statistics on N training batches first (each of the samples "
                             "one norm layer saw in training: samples_per_gpu, or the global batch for sync norms)")
    shift = parser.add_argument_group("distribution shift (docs/robustness.md)")
    shift.add_argument("--corruptions", metavar="ROOT", help="evaluate ROOT/<corruption>/<severity>/<class>/ folders")
    shift.add_argument("--corruption-list", metavar="NAMES", default="common",
                       help="comma-separated corruptions, 'common' (the 15 of the mCE, default) or 'all' (+4)")
    shift.add_argument("--severities", metavar="S", default="1,2,3,4,5", help="comma-separated (default 1,2,3,4,5)")
    shift.add_argument("--per-class", type=_positive, metavar="N", help="only the first N images of each class")
    shift.add_argument("--per-domain", type=_positive, metavar="N", help="only the first N images of each domain")
    shift.add_argument("--adapt", choices=METHODS, help="test-time adaptation method (default source: none)")
    shift.add_argument("--adapt-batch", type=_positive, metavar="B",
                       help="test batch of batch, prior and tent, 1 to 256 (default 64)")
    shift.add_argument("--prior-n", type=float, metavar="N", help="prior: source statistics weigh N samples (16)")
    shift.add_argument("--tent-lr", type=float, metavar="LR", help="tent: SGD lr (default 0.00025 * B / 64)")
    shift.add_argument("--tent-mode", choices=("episodic", "domain", "continual"),
                       help="tent: reset after every batch, at every domain (default), or never")
    shift.add_argument("--tent-switch", action="store_true", help="tent: also adapt SN's switch logits")
    shift.add_argument("--stream-seed", type=_non_negative, metavar="S", help="seed of the test stream's order (0)")
    shift.add_argument("--out", metavar="FILE", help="also write the result record (JSON) to FILE")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.depth=101")
    return parser.parse_intermixed_args(argv)


def _non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def adapt_config(args, model):
    """The AdaptConfig of the flags; a flag the chosen method does not use is an error, not ignored."""
    method = args.adapt or "source"
    given = {("--adapt-batch", "batch"): args.adapt_batch, ("--prior-n", "prior"): args.prior_n,
             ("--tent-lr", "tent_lr"): args.tent_lr, ("--tent-mode", "tent_mode"): args.tent_mode,
             ("--tent-switch", "tent_switch"): args.tent_switch or None}
    for (flag, field), value in given.items():
        if value is not None and method not in USED_BY[field]:
            raise ValueError(f"{flag} applies to --adapt {' or '.join(USED_BY[field])}, not {method}"
                             + ("; source and adabn do not depend on the test batch (see --batch-size)"
                                if flag == "--adapt-batch" else ""))
    if args.tent_switch and not any(m.switch_parameters() for _, m in norms.adaptation.norm_layers(model)):
        raise ValueError("--tent-switch adapts SN's switch logits, and this model has no SN layer")
    values = {"method": method, "batch": args.adapt_batch, "prior": args.prior_n, "tent_lr": args.tent_lr,
              "tent_mode": args.tent_mode, "tent_switch": args.tent_switch, "seed": args.stream_seed}
    return from_dict(AdaptConfig, {k: v for k, v in values.items() if v is not None}, prefix="adapt")


def pick_checkpoint(args, warn):
    """The zoo entry for --zoo NAME (setting args.checkpoint and args.config from it), else None."""
    if not args.zoo:
        if args.checkpoint is None:
            raise ValueError("give a CHECKPOINT file or --zoo NAME")
        return None
    if args.checkpoint is not None:
        if "=" not in args.checkpoint:
            raise ValueError(f"give either CHECKPOINT ({args.checkpoint}) or --zoo {args.zoo}, not both")
        args.overrides.insert(0, args.checkpoint)  # with --zoo, argparse takes the first override for CHECKPOINT
    if args.config:
        raise ValueError("--zoo takes the config from the registry entry; drop --config")
    args.checkpoint, entry = zoo.resolve(args.zoo, args.zoo_dir, args.zoo_registry, warn)
    args.config = zoo.config_path(entry)
    return entry


def resolve_config(args, saved, kind, state, note=print):
    """The checkpoint's own config wins (it is the effective one, saved by the trainer); otherwise --config
    (or the defaults) with overrides and the setting's rules applied, so the model is built as training built it."""
    if saved is not None:
        cfg = from_dict(Config, saved)
        if args.overrides:
            raise ConfigError("this checkpoint carries its config; overrides are not accepted")
    else:
        cfg, _, notes = effective_setting(load_config(args.config, args.overrides), world=None)
        for line in notes:
            note(f"note: {line}")
        if kind == "released":
            cfg.norm = dataclasses.replace(cfg.norm, type="sn", **released_sn_options(state))
    if args.data:
        cfg.data = dataclasses.replace(cfg.data, root=args.data)
    if args.workers is not None:
        cfg.data = dataclasses.replace(cfg.data, workers=args.workers)
    return cfg


def check_output(path, flag="--save-logits"):
    """Refuse an output path that cannot be written, before any work, by creating a file beside it.

    os.access is not enough: it grants root write access to folders that refuse new files anyway (/proc).
    """
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a folder; give a file name, e.g. {os.path.join(path, 'logits.pt')}")
    if not os.path.exists(folder):
        raise FileNotFoundError(f"{flag} {path}: folder {folder} does not exist; create it first")
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: {folder} is not a folder; give a path inside a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".eval-write-check-"):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write in {folder} ({e.strerror or type(e).__name__}); "
                         "choose a writable folder") from None


def class_order(trained, dataset, outputs):
    """("verified", None) when the val folder's classes are `trained` (the checkpoint's, in label order);
    ("not verified", why) when the checkpoint records none, after checking one class folder per output.

    Any mismatch raises a one-line ValueError: the folder's labels would not be the model's, and every
    number printed would be wrong.
    """
    found = getattr(dataset, "classes", None)
    if found is None:
        return "not verified", "synthetic data has no class folders"
    if trained is None:
        if len(found) != outputs:
            raise ValueError(f"{dataset.root} has {len(found)} class folders but the model has {outputs} outputs, "
                             "and the checkpoint records no class names to match them by, so the labels would be "
                             f"shifted; evaluate on a folder holding exactly the {outputs} classes it was trained on")
        return "not verified", f"no class names recorded; {outputs} class folders for the model's {outputs} outputs"
    known, seen = set(trained), set(found)
    missing = [c for c in trained if c not in seen]
    extra = [c for c in found if c not in known]
    if missing or extra:
        parts = [f"{what} {_names(names)}" for what, names in (("missing", missing), ("extra", extra)) if names]
        raise ValueError(f"{dataset.root}: the class folders differ from the {len(trained)} classes the model was "
                         f"trained on ({'; '.join(parts)}), so the labels would be shifted; evaluate on a folder "
                         "holding exactly the training classes")
    if found != trained:
        i = next(i for i, (a, b) in enumerate(zip(trained, found)) if a != b)
        raise ValueError(f"{dataset.root}: the model was trained on these classes in another order (label {i} is "
                         f"'{trained[i]}' in the checkpoint, '{found[i]}' here) and this folder labels classes in "
                         "sorted name order, so its labels would not be the model's")
    return "verified", None


def _names(names, most=5):
    quoted = ", ".join(f"'{n}'" for n in names[:most])
    return quoted + (f" and {len(names) - most} more" if len(names) > most else "")


def shift_eval(args, cfg, model, classes, env, note):
    """(record, logits) of one adaptation method over the --corruptions domains, or over the val split alone."""
    adapt = adapt_config(args, model)
    if args.corruptions:
        # the default takes the common corruptions that are present; naming them requires every one
        names = None if args.corruption_list == "common" else corruptions.parse_corruptions(args.corruption_list)
        domains = corruptions.find_domains(args.corruptions, names, corruptions.parse_severities(args.severities),
                                           log=note)
    else:
        domains = [corruptions.Domain("clean", 0, os.path.join(cfg.data.root, cfg.data.val_split))]
    transform = eval_transform(cfg.data)

    def open_domain(domain):
        dataset = corruptions.domain_dataset(domain, transform, args.per_class, args.per_domain)
        return dataset, class_order(classes, dataset, cfg.model.num_classes)[0]

    return robustness.result_record(model, cfg, adapt, domains, open_domain, env, args.batch_size,
                                    checkpoint=args.checkpoint, corruptions_root=args.corruptions,
                                    keep_logits=bool(args.save_logits))


def main(argv=None):
    args = parse_args(argv)
    env = init_distributed()
    note = (lambda line: print(line, file=sys.stderr)) if env.is_main else (lambda line: None)
    recalibrated = None
    try:
        for flag, path in (("--save-logits", args.save_logits), ("--out", args.out)):
            if path:
                check_output(path, flag)
        entry = pick_checkpoint(args, note)
        ckpt = load_checkpoint(args.checkpoint)
        saved, classes = ckpt.config, ckpt.classes
        if saved is None:  # files written by scripts/export_zoo.py carry their resolved config and classes
            saved, classes = zoo.embedded(args.checkpoint)
        cfg = resolve_config(args, saved, ckpt.kind, ckpt.state, note)
        norm = norms.build_norm(**dataclasses.asdict(cfg.norm))
        model = load_strict(build_model(cfg.model, norm), ckpt.state, f"checkpoint {args.checkpoint}").to(env.device)
        if args.corruptions or args.adapt:
            return shift_main(args, cfg, model, classes, ckpt.kind, env, note)
        # a folder's classes are checked here, by name or count, so data/ gets num_classes only to draw synthetic labels
        loader = build_eval_loader(cfg.data, args.batch_size, env.rank, env.world,
                                   num_classes=cfg.model.num_classes if cfg.data.synthetic else None)
        classes_checked, unverified = class_order(classes, loader.dataset, cfg.model.num_classes)
        if args.recalibrate:
            # batches of the samples one norm layer normalized over in training
            train = build_train_loader(cfg.data, statistics_batch(cfg, env.world), env.rank, env.world,
                                       cfg.train.seed, num_classes=cfg.model.num_classes)
            with autocast(cfg.train.precision, env.device.type):
                recalibrated = norms.recalibrate(
                    model, progress(train, "recalibrate", total=min(args.recalibrate, len(train))), args.recalibrate)
            note(f"recalibrated norm statistics on {recalibrated} training "
                 + ("batch" if recalibrated == 1 else "batches") + (" per process" if env.world > 1 else "")
                 + (f" ({args.recalibrate} requested, only {recalibrated} available)"
                    if recalibrated < args.recalibrate else ""))
        # the training precision, so the numbers equal the trainer's own validation
        metrics = evaluate(model, loader, env.device, precision=cfg.train.precision,
                           keep_logits=bool(args.save_logits))
    except USER_ERRORS + (RuntimeError,) as e:  # RuntimeError: e.g. a folder with no readable image
        print(f"error: {error_line(e)}", file=sys.stderr)
        shutdown()
        return 2
    code = 0
    if args.save_logits:
        parts = all_gather_objects({k: metrics.pop(k) for k in ("logits", "targets", "indices")})
        if env.is_main:
            order = torch.cat([p["indices"] for p in parts]).argsort()
            logits = {k: torch.cat([p[k] for p in parts])[order] for k in ("logits", "targets", "indices")}
            try:
                atomic_write(args.save_logits, lambda f: torch.save(logits, f))
            except USER_ERRORS as e:  # e.g. the disk filled up: the metrics below are still printed
                print(f"error: --save-logits: {error_line(e)}", file=sys.stderr)
                args.save_logits, code = None, 2
            else:
                note(f"wrote the logits of {len(order)} images to {args.save_logits}")
    if env.is_main:
        summary = {"checkpoint": args.checkpoint, "format": ckpt.kind, **metrics, "class_order": classes_checked}
        if recalibrated is not None:
            summary["recalibrated_batches"] = recalibrated
        if args.save_logits:
            summary["logits_file"] = args.save_logits
        if entry:
            summary.update(zoo=entry["name"], published_top1=entry["top1"], published_top5=entry["top5"])
        if args.json:
            print(json.dumps(summary))
        else:
            print(f"{args.checkpoint} ({ckpt.kind}): top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f} "
                  f"loss {metrics['loss']:.4f} on {metrics['images']} images"
                  + (f", {metrics['unreadable']} unreadable skipped" if metrics["unreadable"] else "")
                  + (f"; class order not verified ({unverified})" if unverified else "")
                  + (f"; published for {entry['name']}: top1 {_pct(entry['top1'])} top5 {_pct(entry['top5'])}"
                     if entry else ""))
    shutdown()
    return code


def shift_main(args, cfg, model, classes, kind, env, note):
    """Print (and with --out write) the result record of --corruptions / --adapt; the exit code."""
    try:
        if args.recalibrate:
            raise ValueError("--recalibrate re-estimates statistics on training data; with --corruptions or --adapt "
                             "use --adapt adabn for the target data's statistics")
        record, logits = shift_eval(args, cfg, model, classes, env, note)
    except USER_ERRORS + (RuntimeError,) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        shutdown()
        return 2
    code = 0
    if env.is_main:
        record["format"] = kind
        for line in record["notes"]:
            note(f"note: {line}")
        for path, write in ((args.save_logits, lambda f: torch.save({"method": record["method"], "domains": logits},
                                                                     f)),
                            (args.out, lambda f: f.write(json.dumps(record, indent=1).encode()))):
            if path:
                try:
                    atomic_write(path, write)
                except USER_ERRORS as e:
                    print(f"error: {path}: {error_line(e)}", file=sys.stderr)
                    code = 2
        print(json.dumps(record) if args.json else robustness.summary_line(record))
    shutdown()
    return code


def _pct(value):
    return "unknown" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
