"""Multi-process tests of the synchronized norms and of `norms.recalibrate` (gloo on CPU, 2 ranks).

One torchrun launch (module-scoped fixture) runs every scenario in tests/norms/sync_worker.py;
the ranks save their outputs, gradients and buffers, and this process compares them against
single-process references on the concatenated batch: torch's own nn.BatchNorm2d, SwitchNorm2d
(itself checked against the released code's equations here) and statistics computed directly
from the equations.
"""
import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

import norms

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sync_worker.py")
WORLD = 2
C, H, W = 4, 3, 5
TOL = dict(rtol=1e-10, atol=1e-10)

SN_KWARGS = dict(eps=1e-3, momentum=0.3)
BN_KWARGS = dict(eps=1e-3, momentum=0.3)
SN_CASES = {"sn_equal": [3, 3], "sn_unequal": [2, 5], "sn_empty_rank": [0, 4]}
BN_CASES = {"bn_equal": [3, 3], "bn_unequal": [2, 5], "bn_empty_rank": [0, 4]}


# ----------------------------------------------------------------------------------------------
# Data and states
# ----------------------------------------------------------------------------------------------

def _batch(gen, n, c=C, h=H, w=W):
    """float64 batch whose IN, LN and BN statistics all differ (per-sample and per-channel shifts)."""
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    scale = 0.5 + torch.rand(n, c, 1, 1, generator=gen, dtype=torch.float64) * 2.0
    shift = torch.randn(n, c, 1, 1, generator=gen, dtype=torch.float64) * 1.5
    channel = torch.arange(c, dtype=torch.float64).view(1, c, 1, 1) - 1.0
    return x * scale + shift + channel


def _sn_state(gen, c=C):
    return {
        "weight": 1.0 + 0.5 * torch.randn(c, generator=gen, dtype=torch.float64),
        "bias": 0.5 * torch.randn(c, generator=gen, dtype=torch.float64),
        # softmax -> roughly [0.27, 0.13, 0.60] and [0.22, 0.48, 0.30]: every branch matters
        "mean_weight": torch.tensor([0.2, -0.5, 0.6], dtype=torch.float64),
        "var_weight": torch.tensor([-0.3, 0.45, -0.05], dtype=torch.float64),
        "running_mean": 0.3 * torch.randn(c, generator=gen, dtype=torch.float64),
        "running_var": 0.5 + torch.rand(c, generator=gen, dtype=torch.float64),
    }


def _bn_state(gen, c=C):
    return {
        "weight": 1.0 + 0.5 * torch.randn(c, generator=gen, dtype=torch.float64),
        "bias": 0.5 * torch.randn(c, generator=gen, dtype=torch.float64),
        "running_mean": 0.3 * torch.randn(c, generator=gen, dtype=torch.float64),
        "running_var": 0.5 + torch.rand(c, generator=gen, dtype=torch.float64),
        "num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }


def make_inputs():
    gen = torch.Generator().manual_seed(20240611)
    layer_cases = {}
    for cases, kind, state_fn, kwargs in ((SN_CASES, "sn", _sn_state, SN_KWARGS),
                                          (BN_CASES, "bn", _bn_state, BN_KWARGS)):
        for name, sizes in cases.items():
            n = sum(sizes)
            layer_cases[name] = {
                "kind": kind,
                "num_features": C,
                "kwargs": dict(kwargs),
                "sizes": list(sizes),
                "x": _batch(gen, n),
                "grad_weights": torch.randn(n, C, H, W, generator=gen, dtype=torch.float64),
                "state": state_fn(gen),
            }
    recal = {
        "num_features": C,
        "sn_kwargs": dict(SN_KWARGS),
        "bn_kwargs": dict(BN_KWARGS),
        "sn_state": _sn_state(gen),
        "bn_state": _bn_state(gen),
        # rank 0: 2 batches, all used; rank 1: 4 batches of which num_batches=3 are used
        "batches": [[_batch(gen, n) for n in (3, 4)], [_batch(gen, n) for n in (2, 5, 3, 6)]],
        "num_batches": 3,
    }
    return {"layer_cases": layer_cases, "recalibrate": recal}


# ----------------------------------------------------------------------------------------------
# Single-process references
# ----------------------------------------------------------------------------------------------

def _train_step(layer, x, grad_weights):
    layer.train()
    x = x.clone().requires_grad_(True)
    y = layer(x)
    (y * grad_weights).sum().backward()
    return {
        "y": y.detach(),
        "x_grad": x.grad.detach(),
        "param_grads": {name: p.grad.detach().clone() for name, p in layer.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in layer.named_buffers()},
    }


def _reference(case):
    """Single process, whole concatenated batch: SwitchNorm2d(stat_groups=1) or torch's BatchNorm2d."""
    if case["kind"] == "sn":
        layer = norms.SwitchNorm2d(case["num_features"], stat_groups=1, **case["kwargs"])
    else:
        layer = nn.BatchNorm2d(case["num_features"], **case["kwargs"])
    layer = layer.double()
    layer.load_state_dict(case["state"])
    return _train_step(layer, case["x"], case["grad_weights"])


def _switchnorm_equations(x, state, eps, momentum):
    """The released SwitchNorm2d forward (training mode) written out from its equations.

    Returns (y, new_running_mean, new_running_var); differentiable w.r.t. x and the state tensors.
    """
    mean_in = x.mean((2, 3))
    var_in = x.var((2, 3), unbiased=True)
    temp = var_in + mean_in ** 2
    mean_ln = mean_in.mean(1, keepdim=True)
    var_ln = temp.mean(1, keepdim=True) - mean_ln ** 2
    mean_bn = mean_in.mean(0, keepdim=True)
    var_bn = temp.mean(0, keepdim=True) - mean_bn ** 2
    mw = torch.softmax(state["mean_weight"], 0)
    vw = torch.softmax(state["var_weight"], 0)
    mean = mw[0] * mean_in + mw[1] * mean_ln + mw[2] * mean_bn
    var = vw[0] * var_in + vw[1] * var_ln + vw[2] * var_bn
    xn = (x - mean[:, :, None, None]) / torch.sqrt(var[:, :, None, None] + eps)
    y = xn * state["weight"].view(1, -1, 1, 1) + state["bias"].view(1, -1, 1, 1)
    rm = (1 - momentum) * state["running_mean"] + momentum * mean_bn[0].detach()
    rv = (1 - momentum) * state["running_var"] + momentum * var_bn[0].detach()
    return y, rm, rv


def _bn_population(batches):
    """Count-weighted average of per-batch (mean, unbiased var) over (N, H, W); weight N*H*W."""
    total, mean_sum, var_sum = 0, 0, 0
    for x in batches:
        count = x.shape[0] * x.shape[2] * x.shape[3]
        total += count
        mean_sum = mean_sum + count * x.mean((0, 2, 3))
        var_sum = var_sum + count * x.var((0, 2, 3), unbiased=True)
    return mean_sum / total, var_sum / total


def _sn_population(batches):
    """Count-weighted average of per-batch SN BN-branch statistics; weight N (samples)."""
    total, mean_sum, var_sum = 0, 0, 0
    for x in batches:
        n = x.shape[0]
        mean_in = x.mean((2, 3))
        var_in = x.var((2, 3), unbiased=True)
        mean_bn = mean_in.mean(0)
        var_bn = (var_in + mean_in ** 2).mean(0) - mean_bn ** 2
        total += n
        mean_sum = mean_sum + n * mean_bn
        var_sum = var_sum + n * var_bn
    return mean_sum / total, var_sum / total


def _close(actual, expected, what):
    torch.testing.assert_close(actual, expected, **TOL, msg=lambda m: f"{what}: {m}")


def _compare_to_reference(case, ranks, ref):
    sizes = case["sizes"]
    start = 0
    for r, res in enumerate(ranks):
        sl = slice(start, start + sizes[r])
        start += sizes[r]
        assert res["y"].shape[0] == sizes[r]
        _close(res["y"], ref["y"][sl], f"rank {r} output")
        _close(res["x_grad"], ref["x_grad"][sl], f"rank {r} input grad")
        for name in ("running_mean", "running_var"):
            _close(res["buffers"][name], ref["buffers"][name], f"rank {r} {name}")
    assert set(ranks[0]["param_grads"]) == set(ref["param_grads"])
    for name, grad in ref["param_grads"].items():
        _close(sum(res["param_grads"][name] for res in ranks), grad, f"grad of {name} summed over ranks")


# ----------------------------------------------------------------------------------------------
# The torchrun launch
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dist_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sync_norms")
    inputs = make_inputs()
    torch.save(inputs, folder / "inputs.pt")
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           WORKER, str(folder)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun timed out\nstdout:\n{exc.stdout}\nstderr:\n{exc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed with exit code {proc.returncode}\n"
                    f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-6000:]}")
    results = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return inputs, results


@pytest.mark.multiprocess
def test_workers_ran_under_gloo_process_group(dist_run):
    _, results = dist_run
    for r, res in enumerate(results):
        assert res["meta"] == {"rank": r, "world_size": WORLD, "backend": "gloo", "group_active": True}


# ----------------------------------------------------------------------------------------------
# 1. SyncSwitchNorm2d (2 ranks) == SwitchNorm2d on the concatenated batch
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SN_CASES))
def test_switchnorm_reference_matches_equations(name):
    """Anchors the SN reference: SwitchNorm2d equals the released code's equations, by autograd."""
    case = make_inputs()["layer_cases"][name]
    ref = _reference(case)
    state = {k: v.clone().requires_grad_(k in ("weight", "bias", "mean_weight", "var_weight"))
             for k, v in case["state"].items()}
    x = case["x"].clone().requires_grad_(True)
    y, rm, rv = _switchnorm_equations(x, state, **case["kwargs"])
    (y * case["grad_weights"]).sum().backward()
    _close(ref["y"], y.detach(), "output")
    _close(ref["x_grad"], x.grad, "input grad")
    for k in ("weight", "bias", "mean_weight", "var_weight"):
        _close(ref["param_grads"][k], state[k].grad, f"grad of {k}")
    _close(ref["buffers"]["running_mean"], rm, "running_mean")
    _close(ref["buffers"]["running_var"], rv, "running_var")


@pytest.mark.multiprocess
@pytest.mark.parametrize("name", list(SN_CASES))
def test_sync_switchnorm_matches_single_process(dist_run, name):
    inputs, results = dist_run
    case = inputs["layer_cases"][name]
    ref = _reference(case)
    ranks = [res[name] for res in results]
    assert set(ranks[0]["param_grads"]) == {"weight", "bias", "mean_weight", "var_weight"}
    _compare_to_reference(case, ranks, ref)
    # the BN branch must really be global: a per-rank SwitchNorm2d gives different outputs
    if case["sizes"][0] == 0:
        return
    r0 = slice(0, case["sizes"][0])
    local = norms.SwitchNorm2d(C, stat_groups=1, **case["kwargs"]).double()
    local.load_state_dict(case["state"])
    local_y = local(case["x"][r0]).detach()
    assert not torch.allclose(local_y, ranks[0]["y"], rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# 2. SyncBatchNorm2d (2 ranks) == torch.nn.BatchNorm2d on the concatenated batch
# ----------------------------------------------------------------------------------------------

@pytest.mark.multiprocess
@pytest.mark.parametrize("name", list(BN_CASES))
def test_sync_batchnorm_matches_torch_batchnorm(dist_run, name):
    inputs, results = dist_run
    case = inputs["layer_cases"][name]
    ref = _reference(case)
    ranks = [res[name] for res in results]
    assert set(ranks[0]["param_grads"]) == {"weight", "bias"}
    _compare_to_reference(case, ranks, ref)
    for res in ranks:
        assert int(res["buffers"]["num_batches_tracked"]) == int(ref["buffers"]["num_batches_tracked"]) == 1
    # torch's running_var is the unbiased variance of the whole batch: check it from the equation
    x = case["x"]
    m = case["kwargs"]["momentum"]
    expected_var = (1 - m) * case["state"]["running_var"] + m * x.var((0, 2, 3), unbiased=True)
    expected_mean = (1 - m) * case["state"]["running_mean"] + m * x.mean((0, 2, 3))
    for r, res in enumerate(ranks):
        _close(res["buffers"]["running_var"], expected_var, f"rank {r} running_var (equation)")
        _close(res["buffers"]["running_mean"], expected_mean, f"rank {r} running_mean (equation)")


# ----------------------------------------------------------------------------------------------
# 3. recalibrate under 2 ranks == population averages over all batches of both ranks
# ----------------------------------------------------------------------------------------------

@pytest.mark.multiprocess
def test_recalibrate_two_ranks_population_average(dist_run):
    inputs, results = dist_run
    case = inputs["recalibrate"]
    used = [min(len(b), case["num_batches"]) for b in case["batches"]]
    assert [res["recalibrate"]["used"] for res in results] == used == [2, 3]
    seen = [x for r in range(WORLD) for x in case["batches"][r][:used[r]]]

    bn_mean, bn_var = _bn_population(seen)
    sn_mean, sn_var = _sn_population(seen)
    r0, r1 = results[0]["recalibrate"], results[1]["recalibrate"]
    for key in ("sn_buffers", "bn_buffers"):
        for buf in ("running_mean", "running_var"):
            assert torch.equal(r0[key][buf], r1[key][buf]), f"{key}.{buf} differs between ranks"
    for r, res in enumerate(results):
        rec = res["recalibrate"]
        assert rec["training_after"] is False
        _close(rec["bn_buffers"]["running_mean"], bn_mean, f"rank {r} BN running_mean")
        _close(rec["bn_buffers"]["running_var"], bn_var, f"rank {r} BN running_var")
        _close(rec["sn_buffers"]["running_mean"], sn_mean, f"rank {r} SN running_mean")
        _close(rec["sn_buffers"]["running_var"], sn_var, f"rank {r} SN running_var")
        # recalibrate replaces the EMA: num_batches_tracked is left alone
        assert int(rec["bn_buffers"]["num_batches_tracked"]) == 0

    # a rank's own batches alone give different statistics, so the all-reduce is really checked
    own_mean, _ = _bn_population(case["batches"][0][:used[0]])
    assert not torch.allclose(own_mean, bn_mean, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# 4. No process group: the sync layers are the plain layers
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sn", "bn"])
def test_sync_layers_without_process_group(kind):
    assert not (dist.is_available() and dist.is_initialized())
    case = make_inputs()["layer_cases"][f"{kind}_unequal"]
    ref = _reference(case)
    if kind == "sn":
        layer = norms.SyncSwitchNorm2d(C, **case["kwargs"])
    else:
        layer = norms.SyncBatchNorm2d(C, **case["kwargs"])
    layer = layer.double()
    layer.load_state_dict(case["state"])
    res = _train_step(layer, case["x"], case["grad_weights"])
    _close(res["y"], ref["y"], "output")
    _close(res["x_grad"], ref["x_grad"], "input grad")
    assert set(res["param_grads"]) == set(ref["param_grads"])
    for name, grad in ref["param_grads"].items():
        _close(res["param_grads"][name], grad, f"grad of {name}")
    for name, buf in ref["buffers"].items():
        _close(res["buffers"][name], buf, name)


# ----------------------------------------------------------------------------------------------
# 5. SyncSwitchNorm2d with impl="fused" and impl="reference" in two real processes
# ----------------------------------------------------------------------------------------------

@pytest.mark.multiprocess
def test_sync_switchnorm_both_impls_match_single_process(tmp_path):
    """The fused backward recomputes the small statistics graph, all-reduce included, on every rank.

    Each result is compared with the reference SwitchNorm2d on the concatenated batch in one process
    (test_switchnorm_reference_matches_equations anchors that reference to the released equations).
    """
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
