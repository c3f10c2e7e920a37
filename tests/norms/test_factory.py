"""build_norm: every name, option validation, zero-init, and the GN divisibility error at build time."""
import pytest
import torch
import torch.nn.functional as F

import norms
from models import ResNet


@pytest.mark.parametrize("name,cls", [("bn", norms.BatchNorm2d), ("syncbn", norms.SyncBatchNorm2d),
                                      ("sn", norms.SwitchNorm2d), ("syncsn", norms.SyncSwitchNorm2d),
                                      ("gn", torch.nn.GroupNorm), ("in", torch.nn.GroupNorm),
                                      ("ln", torch.nn.GroupNorm)])
def test_every_name_builds(name, cls):
    layer = norms.build_norm(name)(64)
    assert isinstance(layer, cls)
    x = torch.randn(2, 64, 3, 3, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None
    zero = norms.build_norm(name)(64, zero_init=True)
    assert torch.equal(zero.weight, torch.zeros(64))


def test_defaults_and_options_reach_the_layer():
    assert norms.build_norm("bn")(4).momentum == 0.1
    assert norms.build_norm("sn")(4).momentum == 0.003
    sn = norms.build_norm("sn", momentum=0.01, using_bn=False, using_moving_average=False, stat_groups=2)(4)
    assert (sn.momentum, sn.using_bn, sn.using_moving_average, sn.stat_groups) == (0.01, False, False, 2)
    assert norms.build_norm("bn", stat_groups=4)(4).stat_groups == 4
    assert norms.build_norm("gn", groups=8)(64).num_groups == 8


def test_in_and_ln_match_torch():
    x = torch.randn(3, 6, 5, 4)
    torch.testing.assert_close(norms.build_norm("in")(6)(x), F.instance_norm(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norms.build_norm("ln")(6)(x), F.layer_norm(x, x.shape[1:]), rtol=1e-5, atol=1e-5)


def test_bad_options_are_errors():
    with pytest.raises(ValueError, match="unknown norm type 'bnn'"):
        norms.build_norm("bnn")
    with pytest.raises(ValueError, match="'groups=16' does not apply to norm type 'sn'"):
        norms.build_norm("sn", groups=16)
    with pytest.raises(ValueError, match="unknown norm option 'group'"):
        norms.build_norm("gn", group=16)


def test_gn_indivisible_channels_named_at_model_build():
    with pytest.raises(ValueError, match=r"cannot build norm layer 'bn1': .*groups=48.*got 64"):
        ResNet(18, norm=norms.build_norm("gn", groups=48))
    model = ResNet(18, norm=norms.build_norm("gn", groups=16))
    assert all(m.num_groups == 16 for m in model.modules() if isinstance(m, torch.nn.GroupNorm))


def test_registered_norm_is_buildable_by_name():
    @norms.register_norm("test_identity_norm")
    def _identity(c, zero_init, eps=1e-5, stat_groups=1):
        return torch.nn.Identity()

    assert "test_identity_norm" in norms.available_norms()
    model = ResNet(18, norm=norms.build_norm("test_identity_norm"), num_classes=3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("name", ["syncbn", "syncsn", "gn", "in", "ln"])
def test_stat_groups_is_an_option_of_bn_and_sn_only(name):
    with pytest.raises(ValueError, match=rf"^norm option 'stat_groups=2' does not apply to norm type '{name}'; "
                                         r"remove it \(it is an option of bn, sn[,)]"):
        norms.build_norm(name, stat_groups=2)
    assert "stat_groups" not in norms.factory.norm_options(name)
    norms.build_norm(name, stat_groups=1)  # the default, as a config that lists every option passes it


def test_every_option_reaches_the_layer():
    sn = norms.build_norm("syncsn", eps=1e-3, momentum=0.2, using_moving_average=False, using_bn=False)(4)
    assert (sn.eps, sn.momentum, sn.using_moving_average, sn.using_bn) == (1e-3, 0.2, False, False)
    assert norms.build_norm("syncbn", eps=1e-3, momentum=0.2)(4).eps == 1e-3
    for name in ("gn", "in", "ln"):
        layer = norms.build_norm(name, eps=1e-3, impl="reference", **({"groups": 2} if name == "gn" else {}))(4)
        assert (layer.eps, layer.impl) == (1e-3, "reference")


def test_sync_layers_have_no_stat_groups():
    for cls in (norms.SyncBatchNorm2d, norms.SyncSwitchNorm2d):
        with pytest.raises(TypeError, match="stat_groups"):
            cls(4, stat_groups=2)

