"""The normalization input shapes of a ResNet, read off a real forward pass rather than written down."""
from collections import Counter

import torch

import models
import norms


def norm_input_shapes(depth=50, image_size=224, variant="v1"):
    """[((C, H, W), count)] of every norm layer's input at batch 1, distinct shapes in order of first use."""
    created = []
    base = norms.build_norm("bn")

    def recording(num_channels, zero_init=False):
        layer = base(num_channels, zero_init)
        created.append(layer)
        return layer

    # On the meta device shapes propagate without memory or arithmetic, so ResNet-152 at 224 px costs nothing.
    with torch.device("meta"):
        model = models.ResNet(depth, variant, norm=recording).eval()
    seen = []
    handles = [layer.register_forward_hook(lambda m, inputs, out: seen.append(tuple(inputs[0].shape[1:])))
               for layer in created]
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size, device="meta"))
    for handle in handles:
        handle.remove()
    if len(seen) != len(created):
        raise RuntimeError(f"{len(created)} norm layers built but {len(seen)} ran in the forward pass")
    counts = Counter(seen)
    return [(shape, counts[shape]) for shape in dict.fromkeys(seen)]
