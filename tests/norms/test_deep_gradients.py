"""Float32 parameter gradients of a small ResNet-18, kernels against the reference, both measured against float64.

Whole-network gradients in float32 differ from the exact ones by rounding that the network amplifies,
so the kernels and the reference, both float32, differ from each other by about as much as either
differs from float64; a comparison of the two alone cannot tell a kernel bug from that noise. Here
every parameter's float32 gradient is compared with the float64 reference's (impl='reference' in
float64), for the float32 reference and for the float32 kernels, and the kernels must be about as
close to float64 as the reference is: an error in any kernel's forward or backward moves the
gradients of every parameter before it by far more than rounding does.

The ReLUs and the max-pool of the model are replaced by SiLU and average pooling. With them, the
gradient is a discontinuous function of the activations: a pre-activation within rounding of zero
(one of ~2e4 here: 3.5e-7, where float32 rounding at that layer is ~4e-7) takes the
other side in one float32 run and not in another, and moves the gradients of all earlier layers by
a few percent, for the reference as much as for the kernels (test_relu_kink_is_the_same_for_both).
That, not the kernels, is what makes float32 deep gradients of ReLU networks differ by up to a few
percent between implementations; the smooth network measures the kernels' rounding alone.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import norms
from configs import ModelConfig
from models import build_model
from norms import GroupNorm2d, SwitchNorm2d, backends

pytestmark = pytest.mark.usefixtures("compiled_kernels")  # tests/norms/conftest.py: builds or skips

RATIO = 3.0  # the kernels' error may be this multiple of the reference's (or of the floor)
REFERENCE_RUNS = 4  # the reference's error per parameter: the worst over the input and three one-ulp changes of it
FLOOR_QUANTILE = 0.9  # floor: this quantile of the reference's errors over the parameters of the same kind
MIXTURE = ("mean_weight", "var_weight")  # SN's importance logits: one kind, the other parameters the other
# Per-parameter float32 errors fluctuate from one rounding pattern to another (a one-ulp change of the
# input moves them by up to ~10x for SN's logits, whose gradients cancel, ~1.5x for the others), so a
# parameter whose reference error is small by luck is held to its kind's typical float32 error instead.
# Measured (torch 2.14 CPU): worst kernels / max(reference, floor) 2.2 over 120 nets (both backends,
# SN train/eval, GN, 16/32 px, N 2/4, 5 seeds), median ~0.7; a dx off by a relative 3e-5 in every layer
# gives >= 28, by 1e-4 only in the H*W = 1 layers >= 40, d weight off by 1e-4 >= 7, d var logits by 1e-3 >= 30.


def tiny_resnet(norm_type, seed, smooth=True):
    """ResNet-18 of width 8 with random norm parameters and running statistics, every norm impl='reference'."""
    torch.manual_seed(seed)
    options = dict(groups=4) if norm_type == "gn" else {}
    model = build_model(ModelConfig(depth=18, num_classes=5, width=8),
                        norms.build_norm(norm_type, impl="reference", **options))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (SwitchNorm2d, GroupNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, SwitchNorm2d):
                m.mean_weight.normal_()
                m.var_weight.normal_()
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    if smooth:
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.ReLU):
                    setattr(module, name, nn.SiLU())
                elif isinstance(child, nn.MaxPool2d):
                    setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    return model


def gradients(model, x, target, impl, dtype, train, backend=None):
    """{name: float64 gradient} of the cross-entropy loss, with every norm layer at `impl`.

    `backend`, when given, is what norms.backends must choose for every norm layer (checked per call).
    Also returns the ReLU masks in call order (empty for the smooth network).
    """
    model = copy.deepcopy(model).to(dtype).train(train)
    chosen, masks = set(), []
    for m in model.modules():
        if isinstance(m, (SwitchNorm2d, GroupNorm2d)):
            m.impl = impl
            m.register_forward_pre_hook(lambda layer, args: chosen.add(backends.choose(layer, args[0])))
        elif isinstance(m, nn.ReLU):
            m.register_forward_pre_hook(lambda layer, args: masks.append(args[0] > 0))
    F.cross_entropy(model(x.to(dtype)), target).backward()
    if backend is not None:
        assert chosen == {backend}, f"expected every norm layer to run {backend}, got {chosen}"
    return {name: p.grad.double() for name, p in model.named_parameters()}, masks


def relative_errors(grads, exact):
    return {k: ((grads[k] - exact[k]).norm() / exact[k].norm().clamp_min(1e-30)).item() for k in exact}


def kernel_vs_reference(norm_type, seed, px, n, train, backend, smooth=True):
    """(kernels' errors, reference's errors) per parameter, both relative to the float64 reference."""
    model = tiny_resnet(norm_type, seed, smooth)
    gen = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(n, 3, px, px, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 5, (n,), generator=gen)
    exact, _ = gradients(model, x, target, "reference", torch.float64, train)
    ref = {k: 0.0 for k in exact}
    for i in range(REFERENCE_RUNS):  # the reference's float32 error: the worst of a few rounding patterns
        x_i = x if i == 0 else x * (1 + 2.0 ** -23 * torch.randn(x.shape, generator=gen, dtype=x.dtype))
        errors = relative_errors(gradients(model, x_i, target, "reference", torch.float32, train, "reference")[0],
                                 exact)
        ref = {k: max(ref[k], errors[k]) for k in ref}
    impl = "fused" if backend == "fused_torch" else "auto"  # GN's impl='auto' is the reference without kernels
    kern, _ = gradients(model, x, target, impl, torch.float32, train, backend)
    return relative_errors(kern, exact), ref


def worst_excess(kern, ref):
    """max over parameters of kernels' error / max(reference's error, its kind's floor), and the parameter."""
    excess = {}
    for mixture in (True, False):
        names = [k for k in ref if k.endswith(MIXTURE) == mixture]
        if names:
            floor = torch.tensor([ref[k] for k in names]).quantile(FLOOR_QUANTILE).item()
            excess.update({k: kern[k] / max(ref[k], floor) for k in names})
    name = max(excess, key=excess.get)
    return excess[name], name


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster than two on a shared 2-core machine (the kernels read the count too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# (px, N, seed). 16 px: layer3 and layer4 run at H*W = 1 (IN's variance is 0 there); 32 px: layer4 at 1, layer3 at 4.
CASES = [(16, 2, 0), (32, 4, 3)]
SWEEP = [(px, n, seed) for seed in range(1, 4) for px in (16, 32) for n in (2, 4)]
CONFIGS = [("cpu_kernels", "sn", True), ("cpu_kernels", "sn", False), ("cpu_kernels", "gn", True),
           ("fused_torch", "sn", True), ("fused_torch", "sn", False), ("fused_torch", "gn", True)]
# GroupNorm2d computes the same in train and eval mode: train only.


def check(backend, norm_type, train, cases, monkeypatch):
    if backend == "fused_torch":
        monkeypatch.setenv("NORMS_CPU_KERNELS", "0")  # CPU float32 then runs norms/fused.py's generic path
    for px, n, seed in cases:
        kern, ref = kernel_vs_reference(norm_type, seed, px, n, train, backend)
        excess, name = worst_excess(kern, ref)
        assert excess <= RATIO, (
            f"{norm_type} {backend} {px}px N={n} seed {seed} {'train' if train else 'eval'}: gradient of {name} is "
            f"{kern[name]:.2e} from float64, the float32 reference's {ref[name]:.2e}")
        assert max(ref.values()) < 1e-3  # the network is well conditioned: float32 keeps ~3 digits or more


@pytest.mark.parametrize("backend, norm_type, train", CONFIGS)
def test_deep_gradients_as_close_to_float64_as_the_reference(backend, norm_type, train, monkeypatch):
    check(backend, norm_type, train, CASES, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("backend, norm_type, train", CONFIGS)
def test_deep_gradients_sweep(backend, norm_type, train, monkeypatch):
    check(backend, norm_type, train, SWEEP, monkeypatch)


@pytest.mark.parametrize("norm_type, function", [("sn", "switch_norm_backward"), ("gn", "group_norm_backward")])
def test_a_slightly_wrong_kernel_fails(norm_type, function, monkeypatch):
    """The comparison fails a backward whose dx is off by a relative 1e-4 (the kernels' own error is ~1e-7)."""
    from norms.kernels import cpu

    original = getattr(cpu, function)

    def off(*args):
        dx, *rest = original(*args)
        return dx * (1 + 1e-4), *rest

    monkeypatch.setattr(cpu, function, off)
    kern, ref = kernel_vs_reference(norm_type, 2, 32, 2, True, "cpu_kernels")
    assert worst_excess(kern, ref)[0] > 10 * RATIO


def test_relu_kink_is_the_same_for_both():
    """With ReLUs, one pre-activation within rounding of zero flips the float32 kernels' gradients by percents.

    Found in this network (GN, 32 px, N=4): the float32 kernels' gradients of layer2.0 and everything before it
    are ~3e-2 from float64, the float32 reference's ~3e-6. The float64 gradient taken with the kernels' ReLU
    masks is as close to the kernels' as the reference is to float64: the kernels computed the gradient of the
    other side of the kink, exactly, and the reference flips the same way under one-ulp changes of the input.
    """
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=18, num_classes=5, width=8), norms.build_norm("gn", groups=4,
                                                                                        impl="reference"))
    x, target = torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))
    exact, exact_masks = gradients(model, x, target, "reference", torch.float64, True)
    ref, _ = gradients(model, x, target, "reference", torch.float32, True, "reference")
    kern, masks = gradients(model, x, target, "auto", torch.float32, True, "cpu_kernels")
    flips = sum((a != b).sum().item() for a, b in zip(masks, exact_masks))
    ref_err = max(relative_errors(ref, exact).values())
    if flips == 0:  # another torch build rounds otherwise: then the kernels must simply be as close
        assert max(relative_errors(kern, exact).values()) <= RATIO * ref_err
        return

    class FixedMask(nn.Module):  # the kernels' ReLU decisions, replayed in float64
        def __init__(self, masks):
            super().__init__()
            self.masks = list(masks)

        def forward(self, t):
            return t * self.masks.pop(0).to(t.dtype)

        def __deepcopy__(self, memo):  # gradients() copies the model: keep this one, to see every mask used
            return self

    replay = copy.deepcopy(model)
    fixed = FixedMask(masks)
    for module in list(replay.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, fixed)
    same_side, _ = gradients(replay, x, target, "reference", torch.float64, True)
    assert not fixed.masks
    assert max(relative_errors(kern, exact).values()) > 100 * ref_err  # the kink: percents, not 1e-6
    assert max(relative_errors(kern, same_side).values()) <= RATIO * ref_err  # the same side of it: rounding
