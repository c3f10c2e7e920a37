"""Run folders written the way the trainer writes them, and the collector run as a real process without torch."""
import importlib.util
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import yaml
from PIL import Image

from configs import load_config, to_dict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the paper's columns, typed here from arXiv:1806.10779 Table 1, independent of results/published.py
PAPER_COLUMNS = ["(8,32)", "(8,16)", "(8,8)", "(8,4)", "(8,2)", "(1,16)", "(1,32)", "(8,1)", "(1,8)"]
SN_LAYERS = ("bn1", "layer1.0.bn1", "layer1.0.bn2", "layer1.0.bn3", "layer1.0.downsample.1", "layer2.0.bn1")


def softmax(logits):
    exps = [math.exp(x) for x in logits]
    return [e / sum(exps) for e in exps]


def random_switch_weights(seed, using_bn=True, layers=SN_LAYERS):
    rng = random.Random(seed)
    branches = ("in", "ln", "bn") if using_bn else ("in", "ln")
    out = {}
    for layer in layers:
        mean, var = softmax([rng.gauss(0, 1) for _ in branches]), softmax([rng.gauss(0, 1) for _ in branches])
        out[layer] = {**{f"mean_{b}": w for b, w in zip(branches, mean)},
                      **{f"var_{b}": w for b, w in zip(branches, var)}}
    return out


def write_run(root, name, norm, setting, status="finished", top1=None, top5=None, best_top1=None, using_bn=True,
              depth=50, variant="v1", num_classes=1000, data_root="data/imagenet", switch_weights=None, width=64,
              small_stem=False, overrides=()):
    """A run folder: resolved config.yaml, metrics.jsonl, a checkpoint name, and final.json unless incomplete.

    `overrides` ("optim.lr=0.2", ...) change the recipe further."""
    folder = os.path.join(root, name)
    os.makedirs(folder)
    g, b = setting
    cfg = load_config(None, [f"norm.type={norm}", f"norm.using_bn={str(using_bn).lower()}", f"batch.gpus={g}",
                             f"batch.samples_per_gpu={b}", f"model.depth={depth}", f"model.variant={variant}",
                             f"model.num_classes={num_classes}", f"data.root={data_root}", f"log.name={name}",
                             f"model.width={width}", f"model.small_stem={str(small_stem).lower()}", *overrides])
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"iteration": 10, "loss": 2.5}) + "\n")
    open(os.path.join(folder, "checkpoint_000000010.pt"), "wb").close()
    setting_json = {"gpus": g, "samples_per_gpu": b, "world": g, "per_process": b, "stat_groups": 1, "lr": 0.1}
    if status == "finished":
        final = {"status": "finished", "top1": top1, "top5": top5, "loss": 1.1, "images": 50000, "epochs": 100,
                 "iterations": 500000, "best_top1": top1 if best_top1 is None else best_top1, "setting": setting_json,
                 "switch_weights": switch_weights or {}, "train_time_s": 1234.5}
    elif status == "diverged":
        final = {"status": "diverged", "error": "non-finite loss at iteration 7 (rank 0)", "epochs": 0,
                 "iterations": 7, "setting": setting_json}
    else:
        return folder  # incomplete (running, queued, stopped or crashed): no final.json yet
    with open(os.path.join(folder, "final.json"), "w") as f:
        json.dump(final, f, indent=1)
    return folder


def collect(args, check=True):
    """scripts/collect_results.py as a real process in which importing torch fails."""
    argv = ["collect_results.py"] + [str(a) for a in args]
    code = ("import runpy, sys; sys.modules['torch'] = None; "  # any `import torch` now raises ImportError
            f"sys.argv = {argv!r}; runpy.run_path('scripts/collect_results.py', run_name='__main__')")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"collect_results.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def collect_in_process(args, capsys):
    """(exit code, stdout, stderr) of the collector's main() in this process: quicker for many small calls."""
    script = os.path.join(REPO, "scripts", "collect_results.py")
    spec = importlib.util.spec_from_file_location("collect_results", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def parse_tables(markdown):
    """{heading: {row label: {column header: cell text}}} from the Markdown the collector writes."""
    tables, heading, header = {}, None, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading, header = line[3:].strip(), None
            tables[heading] = {}
        elif line.startswith("|") and heading is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|- "):
                tables[heading][cells[0]] = dict(zip(header[1:], cells[1:]))
    return tables


def columns_of(markdown, heading):
    """The column headers of one table, in order."""
    lines = markdown.split(f"## {heading}\n", 1)[1].splitlines()
    header = next(line for line in lines if line.startswith("|"))
    return [c.strip() for c in header.strip().strip("|").split("|")][1:]


def assert_png(path, min_bytes=10_000):
    """A real PNG of a drawn figure, not an empty canvas."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > min_bytes, (path, len(data))
    with Image.open(path) as image:
        assert image.size[0] > 300 and image.size[1] > 300
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 20  # more than a blank canvas
