"""ResNet-50's norm input shapes, as the harness derives them, against torchvision's resnet50."""
from collections import Counter

import pytest
import torch
import torchvision

from benchmarks.shapes import norm_input_shapes


def torchvision_shapes(image_size):
    """[((C, H, W), count)] of the inputs of torchvision resnet50's BatchNorm2d layers, in order of first use."""
    with torch.device("meta"):
        model = torchvision.models.resnet50(weights=None).eval()
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(lambda mod, inputs, out: seen.append(tuple(inputs[0].shape[1:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size, device="meta"))
    counts = Counter(seen)
    return [(s, counts[s]) for s in dict.fromkeys(seen)]


@pytest.mark.parametrize("image_size", [224, 64])
def test_shapes_match_torchvision_resnet50(image_size):
    ours = norm_input_shapes(50, image_size)
    assert ours == torchvision_shapes(image_size)
    assert sum(count for _, count in ours) == 53


def test_known_resnet50_entries():
    shapes = dict(norm_input_shapes(50, 224))
    # Stem, layer1's 64-channel norms, and layer4's expansion: arithmetic from the architecture.
    assert shapes[(64, 112, 112)] == 1 and shapes[(64, 56, 56)] == 6 and shapes[(2048, 7, 7)] == 4
    assert len(shapes) == 12
