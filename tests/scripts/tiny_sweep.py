"""A tiny dataset, one tiny config per norm and a sweep file over them, for real runs of the launchers."""
import json
import os
import subprocess
import sys

from tests.engine.tiny import REPO, make_image_folder, write_config

TRAIN_IMAGES = 4 * 12  # make_image_folder's default: 4 classes x 12 images


def write_sweep(tmp, norms=("bn", "gn", "sn"), settings=("2x4",), overrides=(), name="tiny", data_root=None):
    """Data, configs cfg_<norm>.yaml and sweep.yaml in tmp; returns the sweep file's path."""
    root = data_root or make_image_folder(os.path.join(tmp, "data"))
    for norm in norms:
        path = write_config(tmp, root, norm=norm, gpus=2, b=4, epochs=1, name=f"cfg_{norm}.yaml")
        if norm == "gn":  # 4 channels in the first stage: the default 32 groups do not fit
            with open(path) as f:
                text = f.read().replace("norm: {type: gn}", "norm: {type: gn, groups: 2}")
            with open(path, "w") as f:
                f.write(text)
    sweep = {"name": name, "config": "cfg_{norm}.yaml", "run_name": "tiny_{norm}_{setting}",
             "axes": {"norm": list(norms), "setting": list(settings)}, "overrides": list(overrides)}
    path = os.path.join(tmp, "sweep.yaml")
    with open(path, "w") as f:
        json.dump(sweep, f)  # JSON is YAML
    return path


def sweep_argv(args):
    return [sys.executable, os.path.join(REPO, "scripts", "sweep.py"), *map(str, args)]


def sweep_env(env=None):
    return {**(env or os.environ), "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def sweep_cli(args, env=None, timeout=600):
    """scripts/sweep.py as a real process."""
    return subprocess.run(sweep_argv(args), cwd=REPO, env=sweep_env(env), capture_output=True, text=True,
                          timeout=timeout)


def sweep_background(args, env=None):
    """scripts/sweep.py started and left running (for --wait); communicate() collects its output."""
    return subprocess.Popen(sweep_argv(args), cwd=REPO, env=sweep_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_final(run_dir):
    with open(os.path.join(run_dir, "final.json")) as f:
        return json.load(f)
