"""ResNet-50's norm input shapes, as the harness derives them, against torchvision's resnet50."""
import pytest

from benchmarks.shapes import norm_input_shapes
from tests.benchmarks.torchvision_shapes import torchvision_shapes


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
