"""ResNet v1/v2 at every depth: builds, runs forward/backward, channels_last, torchvision compatibility."""
import pytest
import torch
import torchvision

import norms
from configs import ModelConfig
from models import ResNet, build_model, load_strict


@pytest.mark.parametrize("variant", ["v1", "v2"])
@pytest.mark.parametrize("depth", [18, 34, 50, pytest.param(101, marks=pytest.mark.slow),
                                   pytest.param(152, marks=pytest.mark.slow)])
def test_every_depth_and_variant_trains_a_step(depth, variant):
    torch.manual_seed(0)
    norm = "sn" if depth in (18, 50) else "bn"
    model = ResNet(depth, variant, num_classes=7, norm=norms.build_norm(norm), dropout=0.5)
    x = torch.randn(2, 3, 40, 40)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert (model.bn_out is not None) == (variant == "v2")


@pytest.mark.parametrize("variant", ["v1", "v2"])
@pytest.mark.parametrize("norm", ["bn", "gn", "sn"])
def test_channels_last_matches_contiguous(variant, norm):
    torch.manual_seed(0)
    model = ResNet(18, variant, num_classes=5, norm=norms.build_norm(norm)).eval()
    x = torch.randn(2, 3, 48, 48)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    out = model(x_cl)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert x_cl.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("depth", [18, 34, 50, pytest.param(101, marks=pytest.mark.slow),
                                   pytest.param(152, marks=pytest.mark.slow)])
def test_torchvision_state_dict_loads_strict_with_identical_logits(depth):
    torch.manual_seed(depth)
    theirs = getattr(torchvision.models, f"resnet{depth}")(num_classes=10)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    ours = ResNet(depth, "v1", num_classes=10, norm=norms.build_norm("bn"))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_strict(ours, theirs.state_dict(), "torchvision")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=0, atol=0)


def test_zero_init_makes_every_branch_zero():
    x = torch.randn(2, 256, 8, 8)
    for variant in ("v1", "v2"):
        model = ResNet(50, variant, norm=norms.build_norm("bn"), zero_init_last=True).eval()
        block = model.layer1[1]  # identity shortcut
        expected = torch.relu(x) if variant == "v1" else x
        torch.testing.assert_close(block(x.clone()), expected)
        plain = ResNet(50, variant, norm=norms.build_norm("bn")).eval().layer1[1]
        assert not torch.allclose(plain(x.clone()), expected)
    # the v2 branch must still learn: its last conv receives a gradient
    model = ResNet(18, "v2", norm=norms.build_norm("bn"), zero_init_last=True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.layer1[0].conv2.weight.grad.abs().sum() > 0


def test_small_stem_and_any_input_size():
    model = ResNet(18, norm=norms.build_norm("bn"), num_classes=10, small_stem=True)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    assert ResNet(18, norm=norms.build_norm("bn"))(torch.randn(2, 3, 97, 61)).shape == (2, 1000)


def test_width_scales_every_stage():
    model = ResNet(50, norm=norms.build_norm("bn"), width=16, num_classes=4)
    assert model.conv1.out_channels == 16 and model.layer4[0].conv3.out_channels == 16 * 8 * 4
    assert model.fc.in_features == 512 and model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_dropout_before_fc():
    model = ResNet(18, norm=norms.build_norm("bn"), dropout=0.5)
    assert isinstance(model.dropout, torch.nn.Dropout) and model.dropout.p == 0.5
    assert isinstance(ResNet(18, norm=norms.build_norm("bn")).dropout, torch.nn.Identity)


def test_build_model_from_config_and_errors():
    cfg = ModelConfig(depth=34, variant="v2", num_classes=3)
    model = build_model(cfg, norms.build_norm("gn", groups=16))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ValueError, match="depth"):
        ResNet(20, norm=norms.build_norm("bn"))
    with pytest.raises(ValueError, match="norm factory"):
        ResNet(18)


def test_load_strict_names_the_mismatch():
    model = ResNet(18, norm=norms.build_norm("bn"))
    state = model.state_dict()
    with pytest.raises(KeyError, match="missing key 'fc.bias'"):
        load_strict(model, {k: v for k, v in state.items() if k != "fc.bias"})
    with pytest.raises(KeyError, match="unexpected key 'extra.weight'"):
        load_strict(model, {**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="'fc.weight' has shape"):
        load_strict(model, {**state, "fc.weight": torch.zeros(10, 512)})
    resnet34 = ResNet(34, norm=norms.build_norm("bn"))
    with pytest.raises(KeyError, match="unexpected key 'layer1.2"):
        load_strict(model, resnet34.state_dict())
