"""A tiny real dataset on disk and a tiny config, for end-to-end runs of train.py and eval.py."""
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = ("a_red", "b_green", "c_blue", "d_gray")


def make_image_folder(root, train_per_class=12, val_per_class=5, size=12, seed=0):
    """Class-coloured noisy PNGs in root/{train,val}/<class>/; learnable in a few steps."""
    rng = np.random.default_rng(seed)
    colours = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (128, 128, 128))
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name, colour in zip(CLASSES, colours):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.png"))
    return root


CONFIG = """\
model: {{depth: 18, num_classes: 4, width: 4, small_stem: true, dropout: 0.2}}
norm: {{type: {norm}}}
batch: {{gpus: {gpus}, samples_per_gpu: {b}}}
optim: {{lr: 0.5, weight_decay: 1.0e-4}}
schedule: {{type: cosine, warmup_epochs: 0.5, milestones: [1]}}
data: {{root: {root}, train_crop: 12, min_crop_scale: 0.5, val_resize: 12, val_crop: 12, workers: 0}}
train: {{epochs: {epochs}, seed: 3}}
log: {{out_dir: {out}, name: run, print_every: 1, tensorboard: true}}
checkpoint: {{every_epochs: 1, keep_last: 50}}
"""


def write_config(tmp_path, root, norm="sn", gpus=4, b=2, epochs=2, name="cfg.yaml"):
    path = os.path.join(tmp_path, name)
    with open(path, "w") as f:
        f.write(CONFIG.format(norm=norm, gpus=gpus, b=b, root=root, epochs=epochs, out=os.path.join(tmp_path, "runs")))
    return path


def run(script, args, nproc=0, timeout=300, check=True):
    """Run train.py/eval.py as a real process (nproc > 0: under torchrun with gloo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc \
        else [sys.executable]
    proc = subprocess.run(launcher + [os.path.join(REPO, script)] + list(map(str, args)), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def start(args, nproc=0, script="train.py", **popen):
    """train.py as a background process whose stdout (with stderr) can be read line by line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc \
        else [sys.executable]
    return subprocess.Popen(launcher + [os.path.join(REPO, script)] + list(map(str, args)), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def read_until(proc, marker):
    """Lines of proc's output up to and including the first one containing `marker` (all, if it never comes)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            break
    return lines


def final_state(run_dir):
    """(name, state) of the newest checkpoint in run_dir."""
    names = sorted(n for n in os.listdir(run_dir) if n.startswith("checkpoint_"))
    state = torch.load(os.path.join(run_dir, names[-1]), weights_only=True)
    return names[-1], state


def assert_bitwise_equal(a, b):
    """Same step, model (running statistics included), every rank's own buffers and optimizer state."""
    assert a["global_step"] == b["global_step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for rank, (mine, theirs) in enumerate(zip(a.get("rank_buffers") or [], b.get("rank_buffers") or [])):
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), f"rank {rank}: {key}"
    assert (a.get("rank_buffers") is None) == (b.get("rank_buffers") is None)
    for pid, buf in a["optimizer"]["state"].items():
        assert torch.equal(buf["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"])
