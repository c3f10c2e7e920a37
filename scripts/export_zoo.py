"""Export a training checkpoint of this repository to the model zoo: weights-only .safetensors + registry entry.

  python scripts/export_zoo.py CHECKPOINT --name NAME [--zoo-dir DIR] [--registry models/zoo.yaml]
                               [--top1 X --top5 Y] [--config CONFIG] [--recipe TEXT] [--force]

Writes <zoo-dir>/<NAME>.safetensors (the model's state_dict, with the run's resolved config and the
class names it was trained on in its metadata, so that eval.py rebuilds the model from the file alone
and checks the validation folder's classes against them), computes its sha256 and adds or
updates the entry NAME in the registry (and the table of MODEL_ZOO.md for the repository's registry).
Top-1/top-5 come from the run's final.json when the checkpoint is the run's final one, else from
--top1/--top5. An existing entry with another sha256 is kept unless --force.
"""
import argparse
import dataclasses
import hashlib
import os
import sys

import norms
from configs import Config, from_dict
from engine import run_folder
from engine.cli import USER_ERRORS, error_line
from models import build_model, load_strict, zoo
from models.checkpoints import check_classes, load_file
from results import zoo_markdown

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="this repository's checkpoint_<iter>.pt or best.pt")
    parser.add_argument("--name", required=True, help="zoo name; the file is NAME.safetensors")
    parser.add_argument("--zoo-dir", help="where to write the file (default: $SN_ZOO_DIR or ./zoo)")
    parser.add_argument("--registry", default=zoo.REGISTRY, help="registry to update (default: models/zoo.yaml)")
    parser.add_argument("--zoo-md", help="MODEL_ZOO.md whose table to regenerate (default: the repository's, "
                                         "when --registry is the repository's)")
    parser.add_argument("--top1", type=float, help="top-1 to record (default: the run's final.json)")
    parser.add_argument("--top5", type=float, help="top-5 to record (default: the run's final.json)")
    parser.add_argument("--config", help="recipe config the run was trained from, recorded in the entry")
    parser.add_argument("--recipe", help="one-line recipe description (default: from the config)")
    parser.add_argument("--force", action="store_true", help="replace an entry or file with another sha256")
    return parser.parse_args(argv)


def read_repo_checkpoint(path):
    """(state_dict, resolved config dict, global step, class names or None), refusing files without this
    repository's config."""
    obj = load_file(path)
    if not (isinstance(obj, dict) and isinstance(obj.get("model"), dict) and isinstance(obj.get("config"), dict)):
        raise ValueError(f"{path}: not a training checkpoint of this repository (no 'model' and 'config'); "
                         "export checkpoint_<iter>.pt or best.pt from a run folder")
    cfg = from_dict(Config, obj["config"])
    norm = norms.build_norm(**dataclasses.asdict(cfg.norm))
    load_strict(build_model(cfg.model, norm), obj["model"], f"checkpoint {path}")  # it must rebuild from its config
    return obj["model"], obj["config"], obj.get("global_step"), check_classes(obj.get("classes"), path)


def final_metrics(checkpoint, step, args):
    """(top1, top5, warning or None): the flags, else final.json's when the checkpoint is the run's last one."""
    if args.top1 is not None or args.top5 is not None:
        return args.top1, args.top5, None
    final = run_folder.read_final(os.path.dirname(os.path.abspath(checkpoint)))
    if final is not None and run_folder.final_status(final) == "finished" and final.get("iterations") == step:
        return final.get("top1"), final.get("top5"), None
    return None, None, (f"warning: {checkpoint} is not the finished run's last checkpoint (or final.json is missing): "
                        "no top-1/top-5 recorded; pass --top1/--top5 (e.g. from eval.py on this checkpoint)")


def recipe_of(cfg):
    m, b, s, o, t = (cfg[k] for k in ("model", "batch", "schedule", "optim", "train"))
    schedule = f"x{s['gamma']:g} at epochs {'/'.join(map(str, s['milestones']))}" if s["type"] == "step" else "cosine"
    warmup = f", {s['warmup_epochs']:g} warmup epochs" if s["warmup_epochs"] else ""
    return (f"ResNet-{m['depth']} {m['variant']} + {cfg['norm']['type'].upper()} ({b['gpus']},{b['samples_per_gpu']}); "
            f"{t['epochs']} epochs, lr {o['lr']:g} per 256 images, {schedule}{warmup}, weight decay {o['weight_decay']:g}")


def plan(args):
    """Everything to write, checked before anything is written: (file path, bytes, entry, entries, md path, md)."""
    from safetensors.torch import save as safetensors_bytes
    if not zoo.NAME.match(args.name):
        raise ValueError(f"--name {args.name!r}: use letters, digits and . _ + - only (it names the file)")
    if args.config and not os.path.isfile(os.path.join(REPO, args.config)):
        raise FileNotFoundError(f"--config {args.config}: not found (give a path from the repository root)")
    state, cfg, step, classes = read_repo_checkpoint(args.checkpoint)
    top1, top5, warning = final_metrics(args.checkpoint, step, args)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    # deterministic metadata (one key, sorted JSON): the same export must give the same bytes, so the same hash
    data = safetensors_bytes(tensors, metadata=zoo.export_metadata(cfg, classes))
    digest = hashlib.sha256(data).hexdigest()
    entry = {"name": args.name, "source": "this repository", "config": args.config,
             "file": f"{args.name}.safetensors", "sha256": digest, "top1": top1, "top5": top5,
             "recipe": args.recipe or recipe_of(cfg), "url": None,
             "eval": zoo.eval_command(args.name, cfg["data"]["root"])}
    entries = zoo.upsert(zoo.load_registry(args.registry), entry, args.force)
    path = os.path.join(zoo.zoo_dir(args.zoo_dir), entry["file"])
    if os.path.isfile(path) and not args.force and (old := zoo.sha256_file(path)) != digest:
        raise zoo.ZooError(f"{path} exists with sha256 {old}, the export has {digest}; pass --force to replace it")
    markdown = args.zoo_md or (os.path.join(REPO, "MODEL_ZOO.md")
                               if os.path.abspath(args.registry) == zoo.REGISTRY else None)
    table = zoo_markdown.update_markdown(_read(markdown), entries) if markdown else None
    return path, data, entry, entries, markdown, table, warning


def main(argv=None):
    args = parse_args(argv)
    try:
        path, data, entry, entries, markdown, table, warning = plan(args)
    except USER_ERRORS as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    run_folder.atomic_write(path, lambda f: f.write(data))
    text = zoo.registry_text(entries)
    run_folder.atomic_write(args.registry, lambda f: f.write(text.encode()))
    if markdown:
        run_folder.atomic_write(markdown, lambda f: f.write(table.encode()))
    print(f"wrote {path} (sha256 {entry['sha256']}); entry '{args.name}' in {args.registry}"
          + (f" and {markdown}" if markdown else "") + f"\nevaluate with: {entry['eval']}")
    return 0


def _read(path):
    with open(path) as f:
        return f.read()


if __name__ == "__main__":
    sys.exit(main())
