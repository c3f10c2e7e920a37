"""ResNet-50's norm input shapes read from torchvision's own resnet50: the reference the harness is checked against."""
from collections import Counter

import torch
import torchvision


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
