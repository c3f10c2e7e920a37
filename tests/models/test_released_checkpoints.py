"""The SN authors' released ImageNet checkpoints load into this repository's ResNet and reproduce it.

A faithful, independent re-implementation of the released model code lives in `released_sn.py`.
Each test builds such a released-style model, fills every parameter and buffer with non-trivial
random values, saves it exactly as the authors did (`torch.save({'state_dict': ...})` of a
DataParallel model, so every key starts with `module.`), reads it back with
`models.read_released_sn` and checks that the repository's model gives the same numbers.
"""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

import models
import norms
from tests.models.released_sn import SwitchNorm, released_resnet

NUM_CLASSES = 1000
ARCHS = [("v1", 18), ("v1", 50), ("v2", 18), ("v2", 50)]
ARCH_IDS = [f"{v}-{d}" for v, d in ARCHS]


# --------------------------------------------------------------------------- helpers

def randomize_(model, seed):
    """Give every parameter and buffer of a released-style model non-trivial random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SwitchNorm):
                module.weight.normal_(1.0, 0.3, generator=gen)           # gammas around 1, some < 0.5
                module.bias.normal_(0.0, 0.2, generator=gen)
                module.mean_weight.normal_(0.0, 1.5, generator=gen)     # clearly non-uniform softmax
                module.var_weight.normal_(0.0, 1.5, generator=gen)
                if module.using_bn:
                    module.running_mean.normal_(0.0, 0.5, generator=gen)
                    module.running_var.uniform_(0.3, 3.0, generator=gen)
            elif isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.05, generator=gen)
                module.bias.normal_(0.0, 0.1, generator=gen)
    return model


def save_released(model, path, state=None):
    """Save like the authors: {'state_dict': DataParallel state_dict} (keys prefixed `module.`)."""
    state = model.state_dict() if state is None else state
    torch.save({"state_dict": OrderedDict(("module." + k, v) for k, v in state.items())}, path)
    return path


def make_released(variant, depth, using_bn=True, seed=0):
    return randomize_(released_resnet(variant, depth, NUM_CLASSES, using_bn=using_bn), seed)


def repo_model(variant, depth, options):
    norm = norms.build_norm("sn", momentum=0.003, **options)
    return models.ResNet(depth, variant=variant, num_classes=NUM_CLASSES, norm=norm, dropout=0.5)


def load_repo(variant, depth, path):
    state = models.read_released_sn(path)
    model = repo_model(variant, depth, models.released_sn_options(state))
    return models.load_strict(model, state, source=str(path))


def no_dropout_train(model, dropout_name):
    """Training mode (batch statistics, EMA updates) with the only stochastic layer switched off."""
    model.train()
    getattr(model, dropout_name).eval()
    return model


def inputs(batch, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 64, 64, generator=gen, dtype=torch.float64)


def assert_same_logits(actual, expected):
    assert actual.shape == expected.shape
    assert torch.isfinite(expected).all()
    assert expected.std() > 1e-3, "degenerate logits would make the comparison meaningless"
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9 * scale)


@pytest.fixture(scope="module", params=ARCHS, ids=ARCH_IDS)
def run(request, tmp_path_factory):
    """Save one released-style checkpoint, read it into the repository's model and run both models.

    Records eval logits (batch of 2), train logits (batch of 4, dropout off) and the running
    buffers before and after that one training forward. The tests below check the records, so
    each architecture's two models are built and run only once.
    """
    variant, depth = request.param
    released = make_released(variant, depth, seed=depth + (0 if variant == "v1" else 1000))
    path = save_released(released, tmp_path_factory.mktemp("released") / f"resnet{depth}{variant}sn.pth")
    raw = torch.load(path, weights_only=True)["state_dict"]

    ref = released.double()
    ours = load_repo(variant, depth, path).double()
    buffers_loaded = {k: v.clone() for k, v in ours.state_dict().items() if "running_" in k}

    x_train = inputs(4, seed=depth)
    x_eval = x_train[:2]
    with torch.no_grad():
        eval_ref, eval_ours = ref.eval()(x_eval), ours.eval()(x_eval)
        train_ref = no_dropout_train(ref, "drouput")(x_train)
        train_ours = no_dropout_train(ours, "dropout")(x_train)
    return dict(raw=raw, eval_ref=eval_ref, eval_ours=eval_ours, train_ref=train_ref, train_ours=train_ours,
                buffers_loaded=buffers_loaded, buffers_ours=ours.state_dict(),
                buffers_ref=models.convert_released_sn({"module." + k: v for k, v in ref.state_dict().items()}))


# --------------------------------------------------------------------------- 1. logits

@pytest.mark.slow
def test_checkpoint_is_in_the_released_format(run):
    raw = run["raw"]
    assert raw and all(k.startswith("module.") for k in raw)
    assert any(".sn1." in k for k in raw) and not any(".bn1." in k for k in raw)
    assert models.released_sn_options(raw) == {"using_bn": True}


@pytest.mark.slow
def test_eval_logits_match_released_model(run):
    """Eval mode: IN/LN from the sample, BN branch from the loaded running statistics."""
    assert_same_logits(run["eval_ours"], run["eval_ref"])


@pytest.mark.slow
def test_train_logits_match_released_model(run):
    """Training mode: BN branch from the batch of 4 (dropout, the only random layer, switched off)."""
    assert_same_logits(run["train_ours"], run["train_ref"])
    # the batch statistics genuinely differ from the loaded running statistics
    assert not torch.allclose(run["train_ref"][:2], run["eval_ref"], rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- 4. running statistics

@pytest.mark.slow
def test_running_stat_update_matches_released_convention(run):
    """One training forward: released momentum 0.997 (their convention) == repository momentum 0.003."""
    loaded, after, expected = run["buffers_loaded"], run["buffers_ours"], run["buffers_ref"]
    assert loaded, "checkpoint has no running statistics"
    assert sorted(loaded) == sorted(k for k in expected if "running_" in k)
    for key, before in loaded.items():
        assert not torch.equal(after[key], before), f"{key} was not updated by a training forward"
        torch.testing.assert_close(after[key], expected[key], rtol=1e-10, atol=1e-12,
                                   msg=lambda m, key=key: f"{key}: {m}")


# --------------------------------------------------------------------------- 2. the (8,1) model

@pytest.mark.slow
@pytest.mark.parametrize("variant, depth", [("v1", 50), ("v2", 18)], ids=["v1-50", "v2-18"])
def test_released_checkpoint_without_bn_branch(variant, depth, tmp_path):
    """The (8,1) release (using_bn=False): 2 logits per norm, no running stats; loads and matches."""
    model = make_released(variant, depth, using_bn=False, seed=7)
    path = save_released(model, tmp_path / "resnet_sn_8x1.pth")
    ref = model.double()

    state = models.read_released_sn(path)
    assert models.released_sn_options(state) == {"using_bn": False}
    assert not [k for k in state if "running" in k]

    ours = models.load_strict(repo_model(variant, depth, models.released_sn_options(state)), state)
    ours = ours.double()
    assert not [name for name, _ in ours.named_buffers() if "running" in name]
    for name, p in ours.named_parameters():
        if name.endswith(("mean_weight", "var_weight")):
            assert p.shape == (2,), name

    x = inputs(2, seed=4)
    with torch.no_grad():
        expected = ref.eval()(x)
        assert_same_logits(ours.eval()(x), expected)
        # IN + LN only: training mode gives the same logits (nothing depends on running stats)
        assert_same_logits(no_dropout_train(ours, "dropout")(x), expected)

    # The options matter: the same file does not load into a model with the BN branch.
    with pytest.raises(KeyError, match="running_mean"):
        models.load_strict(repo_model(variant, depth, {"using_bn": True}), state)


# --------------------------------------------------------------------------- 3. corrupted checkpoints

@pytest.fixture(scope="module")
def small_state():
    """A float32 released-style v1-18 state_dict (no `module.` prefix)."""
    return make_released("v1", 18, seed=11).state_dict()


def _read_into_repo(state, path, variant="v1", depth=18):
    save_released(None, path, state)
    return load_repo(variant, depth, path)


def test_intact_small_checkpoint_loads(small_state, tmp_path):
    """Control for the corruption tests: the uncorrupted file loads."""
    _read_into_repo(small_state, tmp_path / "ok.pth")


@pytest.mark.parametrize("removed, named", [
    ("layer3.1.sn2.running_var", "layer3.1.bn2.running_var"),
    ("layer2.0.downsample.1.weight", "layer2.0.downsample.1.weight"),
    ("layer4.1.conv2.weight", "layer4.1.conv2.weight"),
    ("sn1.mean_weight", "bn1.mean_weight"),
    ("fc.bias", "fc.bias"),
])
def test_missing_key_is_named(small_state, tmp_path, removed, named):
    state = OrderedDict((k, v) for k, v in small_state.items() if k != removed)
    assert len(state) == len(small_state) - 1
    with pytest.raises(KeyError) as info:
        _read_into_repo(state, tmp_path / "missing.pth")
    message = str(info.value)
    assert f"'{named}'" in message and "missing" in message, message
    assert "unexpected" not in message, message


@pytest.mark.parametrize("extra, named", [
    ("layer1.0.sn4.weight", "layer1.0.bn4.weight"),
    ("fc2.bias", "fc2.bias"),
    ("layer2.0.downsample.2.weight", "layer2.0.downsample.2.weight"),
])
def test_unexpected_key_is_named(small_state, tmp_path, extra, named):
    state = OrderedDict(small_state)
    state[extra] = torch.ones(1, 64, 1, 1)
    with pytest.raises(KeyError) as info:
        _read_into_repo(state, tmp_path / "extra.pth")
    message = str(info.value)
    assert f"'{named}'" in message and "unexpected" in message, message
    assert "missing" not in message, message


@pytest.mark.parametrize("key, shape, named", [
    ("layer2.0.conv1.weight", (128, 64, 3, 1), "layer2.0.conv1.weight"),
    ("layer1.1.sn1.weight", (1, 65, 1, 1), "layer1.1.bn1.weight"),
    ("layer3.0.downsample.1.running_mean", (1, 255, 1), "layer3.0.downsample.1.running_mean"),
    ("layer4.0.sn2.mean_weight", (2,), "layer4.0.bn2.mean_weight"),
    ("fc.weight", (10, 512), "fc.weight"),
])
def test_wrong_shape_is_named(small_state, tmp_path, key, shape, named):
    state = OrderedDict(small_state)
    assert state[key].shape != shape
    state[key] = torch.zeros(shape)
    with pytest.raises(ValueError) as info:
        _read_into_repo(state, tmp_path / "shape.pth")
    assert f"'{named}'" in str(info.value), str(info.value)


def test_wrong_architecture_is_rejected(small_state, tmp_path):
    """A ResNet-18 v1 file read as ResNet-50 or as v2 fails with a KeyError, not a silent partial load."""
    path = save_released(None, tmp_path / "r18.pth", small_state)
    state = models.read_released_sn(path)
    for variant, depth in (("v1", 50), ("v2", 18)):
        with pytest.raises(KeyError, match="does not match the model"):
            models.load_strict(repo_model(variant, depth, {"using_bn": True}), state)


@pytest.mark.parametrize("payload", [
    [1, 2, 3],
    torch.zeros(3),
    {"state_dict": [torch.zeros(3)]},
    {"state_dict": torch.zeros(3)},
    {"epoch": 90, "best_prec1": 77.5},
    {"model": {"conv1.weight": torch.zeros(64, 3, 7, 7)}},
], ids=["list", "tensor", "state_dict-list", "state_dict-tensor", "dict-without-state_dict", "model-entry"])
def test_not_a_released_file_is_a_clear_value_error(payload, tmp_path):
    """Anything but {'state_dict': {...}} (or a bare state_dict) fails with a ValueError naming the format."""
    path = tmp_path / "bad.pth"
    torch.save(payload, path)
    with pytest.raises(ValueError) as info:
        models.read_released_sn(path)
    assert "state_dict" in str(info.value), f"unclear error: {info.value!r}"


def test_unreadable_or_missing_file_is_a_clear_error(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        models.read_released_sn(garbage)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        models.read_released_sn(tmp_path / "absent.pth")
