"""SyncSwitchNorm2d with impl="fused" and impl="reference" in two real processes (gloo, torchrun).

The fused backward recomputes the small statistics graph, all-reduce included, on every rank;
each result is compared with the reference SwitchNorm2d on the concatenated batch in one process
(tests/norms/test_sync.py anchors that reference to the released code's equations).
"""
import copy
import os
import subprocess
import sys

import pytest
import torch

from tests.norms.test_sync import REPO, SN_CASES, WORKER, WORLD, _compare_to_reference, _reference, make_inputs


def test_sync_switchnorm_both_impls_match_single_process(tmp_path):
    base = make_inputs()
    cases = {}
    for impl in ("fused", "reference"):
        for name in SN_CASES:
            case = copy.deepcopy(base["layer_cases"][name])
            case["kwargs"]["impl"] = impl
            cases[f"{name}_{impl}"] = case
    torch.save({"layer_cases": cases, "recalibrate": base["recalibrate"]}, tmp_path / "inputs.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)  # the ranks use the torch-op primitives
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           WORKER, str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed with exit code {proc.returncode}\nstderr:\n{proc.stderr[-6000:]}")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert all(res["meta"]["group_active"] for res in results)
    for name, case in cases.items():
        single = copy.deepcopy(case)
        single["kwargs"]["impl"] = "reference"
        _compare_to_reference(case, [res[name] for res in results], _reference(single))
