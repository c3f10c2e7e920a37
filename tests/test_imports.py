"""Without the optional packages (tensorboardX, matplotlib, safetensors, tqdm, timm, the corruption generator's)
every core module imports and a tiny CPU training, with TensorBoard off, runs and resumes: the GPU machine has
none of them installed."""
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ["tensorboardX", "matplotlib", "safetensors", "tqdm", "timm",
           "imagecorruptions", "cv2", "numba", "skimage", "scipy"]  # requirements-corruptions.txt
PACKAGES = ["norms", "models", "configs", "data", "engine", "launch", "results", "benchmarks"]
# results.plots and results.robustness_plots draw the figures and need matplotlib by design; nothing else may
NEEDS_OPTIONAL = {"results.plots", "results.robustness_plots"}

PROGRAM = textwrap.dedent("""
    import importlib, importlib.util, os, pkgutil, sys, tempfile
    for name in {blocked!r}:
        sys.modules[name] = None  # `import name` now raises ImportError
    failed = []
    names = []
    for package in {packages!r}:
        module = importlib.import_module(package)
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
    for name in names:
        if name in {skip!r}:
            continue
        try:
            importlib.import_module(name)
        except Exception as error:
            failed.append(f"{{name}}: {{type(error).__name__}}: {{error}}")
    scripts = {{}}
    for script in ("train", "eval"):
        spec = importlib.util.spec_from_file_location(f"{{script}}_script", os.path.join({repo!r}, script + ".py"))
        scripts[script] = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(scripts[script])
        except Exception as error:
            failed.append(f"{{script}}.py: {{type(error).__name__}}: {{error}}")
    print("imported", len(names) + 2, "modules")
    if failed:
        print("FAILED", *failed, sep="\\n")
        sys.exit(1)
    from tests.engine.tiny import make_image_folder, write_config
    tmp = tempfile.mkdtemp()
    data = make_image_folder(os.path.join(tmp, "data"), train_per_class=4, val_per_class=1)
    config = write_config(tmp, data, norm="sn", gpus=1, b=4, epochs=1)
    off = ["log.tensorboard=false", "checkpoint.every_epochs=0"]
    for steps in (2, 3):  # 2 steps and a checkpoint, then a resume from it for one more step
        code = scripts["train"].main(["--config", config, f"train.max_iters={{steps}}", *off])
        assert code == 0, f"train.py exited with {{code}} at max_iters={{steps}}"
    print("trained and resumed")
""")


@pytest.mark.slow
def test_core_imports_and_training_without_optional_packages():
    program = PROGRAM.format(blocked=BLOCKED, packages=PACKAGES, skip=sorted(NEEDS_OPTIONAL), repo=REPO)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trained and resumed" in proc.stdout
