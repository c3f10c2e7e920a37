"""Export a training checkpoint of this repository to the model zoo: weights-only .safetensors + registry entry.

  python scripts/export_zoo.py CHECKPOINT --name NAME [--zoo-dir DIR] [--registry FILE | --repo-registry]
                               [--top1 X --top5 Y] [--config CONFIG] [--recipe TEXT] [--force]

Writes <zoo-dir>/<NAME>.safetensors (the model's state_dict, with the run's resolved config and the
class names it was trained on in its metadata, so that eval.py rebuilds the model from the file alone
and checks the validation folder's classes against them), computes its sha256 and adds or updates the
entry NAME in the zoo folder's own registry <zoo-dir>/zoo.yaml and its listing <zoo-dir>/MODEL_ZOO.md
(both created if absent). --repo-registry writes the repository's models/zoo.yaml and MODEL_ZOO.md
instead. Top-1/top-5 come from the run's final.json when the checkpoint is the run's final one, else from
--top1/--top5. An existing entry with another sha256 is kept unless --force. The "evaluate with:" line
printed at the end is a command that runs as printed.
"""
import argparse
import dataclasses
import hashlib
import os
import shlex
import shutil
import sys
from typing import NamedTuple

import norms
from configs import Config, from_dict
from engine import run_folder
from engine.cli import USER_ERRORS, error_line
from models import build_model, load_strict, zoo
from models.checkpoints import check_classes, load_file
from results import zoo_markdown

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTING = "MODEL_ZOO.md"  # the listing's name, next to its registry


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="this repository's checkpoint_<iter>.pt or best.pt")
    parser.add_argument("--name", required=True, help="zoo name; the file is NAME.safetensors")
    parser.add_argument("--zoo-dir", help="where to write the file (default: $SN_ZOO_DIR or ./zoo)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--registry", metavar="FILE",
                       help="registry to update, created if absent (default: <zoo-dir>/zoo.yaml)")
    where.add_argument("--repo-registry", action="store_true",
                       help="update the repository's registry models/zoo.yaml and its MODEL_ZOO.md")
    parser.add_argument("--zoo-md", metavar="FILE", help="listing whose table to regenerate, created if absent "
                                                         "(default: MODEL_ZOO.md next to the registry)")
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
            f"{t['epochs']} epochs, lr {o['lr']:g} per 256 images, {schedule}{warmup}, "
            f"weight decay {o['weight_decay']:g}")


class Plan(NamedTuple):
    """Everything an export writes, checked before anything is written."""
    path: str          # the .safetensors file
    data: bytes
    entry: dict
    registry: str
    registry_text: str
    markdown: str      # the listing file
    table: str         # the listing's new text
    hint: str          # a shell command that evaluates the export
    warning: str       # or None


def eval_hint(name, data_root, folder, registry, python="python", program="eval.py"):
    """The eval.py command line for zoo model `name`, shell-quoted; --zoo-registry unless it is the repository's."""
    argv = [python, program, "--zoo", name, "--data", data_root, "--zoo-dir", folder]
    if os.path.abspath(registry) != zoo.REGISTRY:
        argv += ["--zoo-registry", registry]
    return " ".join(shlex.quote(a) for a in argv)


def runnable(python="python", program="eval.py"):
    """(interpreter, eval.py) as this shell can run them: `python` when it is this interpreter, else its path;
    eval.py from the repository root, else its full path."""
    found = shutil.which(python)
    if not found or os.path.abspath(found) != os.path.abspath(sys.executable):
        python = sys.executable
    if os.path.abspath(os.getcwd()) != REPO:
        program = os.path.join(REPO, program)
    return python, program


def plan(args):
    """The Plan of an export: file, registry entry, listing and hint, with every check done first."""
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
    folder = zoo.zoo_dir(args.zoo_dir)
    registry = zoo.REGISTRY if args.repo_registry else args.registry or os.path.join(folder, "zoo.yaml")
    repository = os.path.abspath(registry) == zoo.REGISTRY
    data_root = cfg["data"]["root"]
    entry = {"name": args.name, "source": "this repository", "config": args.config,
             "file": f"{args.name}.safetensors", "sha256": digest, "top1": top1, "top5": top5,
             "recipe": args.recipe or recipe_of(cfg), "url": None,
             # the repository's registry documents a portable command; a user's own registry names its folders
             "eval": zoo.eval_command(args.name, data_root) if repository else
             eval_hint(args.name, data_root, os.path.abspath(folder), os.path.abspath(registry))}
    entries = zoo.upsert(zoo.load_registry(registry) if repository or os.path.exists(registry) else [],
                         entry, args.force)
    path = os.path.join(folder, entry["file"])
    if os.path.isfile(path) and not args.force and (old := zoo.sha256_file(path)) != digest:
        raise zoo.ZooError(f"{path} exists with sha256 {old}, the export has {digest}; pass --force to replace it")
    markdown = args.zoo_md or (os.path.join(REPO, LISTING) if repository
                               else os.path.join(os.path.dirname(os.path.abspath(registry)), LISTING))
    listing = _read(markdown) if os.path.exists(markdown) else zoo_markdown.new_listing(registry)
    table = zoo_markdown.update_markdown(listing, entries, markdown)
    hint = eval_hint(args.name, data_root, folder, registry, *runnable())
    return Plan(path, data, entry, registry, zoo.registry_text(entries), markdown, table, hint, warning)


def main(argv=None):
    args = parse_args(argv)
    try:
        todo = plan(args)
        if todo.warning:
            print(todo.warning, file=sys.stderr)
        run_folder.atomic_write(todo.path, lambda f: f.write(todo.data))
        run_folder.atomic_write(todo.registry, lambda f: f.write(todo.registry_text.encode()))
        run_folder.atomic_write(todo.markdown, lambda f: f.write(todo.table.encode()))
    except USER_ERRORS as e:  # also a write that fails (full disk, read-only folder)
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    print(f"wrote {todo.path} (sha256 {todo.entry['sha256']}); entry '{args.name}' in {todo.registry} and "
          f"{todo.markdown}\nevaluate with: {todo.hint}")
    return 0


def _read(path):
    with open(path) as f:
        return f.read()


if __name__ == "__main__":
    sys.exit(main())
