"""Training and evaluation transforms: shapes, normalization, determinism, PCA lighting."""
import torch
from PIL import Image
from torchvision import transforms as T

from configs.schema import DataConfig
from data import eval_transform, train_transform
from data.transforms import IMAGENET_MEAN, IMAGENET_STD

CFG = DataConfig(train_crop=24, val_resize=36, val_crop=32, min_crop_scale=0.3)


def noise_image(w=50, h=40):
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), dtype=torch.uint8).numpy())


def test_train_output_and_crop_scale():
    out = train_transform(CFG)(noise_image())
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    crop = train_transform(CFG).transforms[0]
    assert isinstance(crop, T.RandomResizedCrop) and crop.scale == (0.3, 1.0)
    jitter = DataConfig(color_jitter=0.4)
    assert any(isinstance(t, T.ColorJitter) for t in train_transform(jitter).transforms)
    assert not any(isinstance(t, T.ColorJitter) for t in train_transform(CFG).transforms)


def test_eval_is_deterministic_and_normalizes_with_imagenet_statistics():
    image = noise_image()
    a, b = eval_transform(CFG)(image), eval_transform(CFG)(image)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    gray = eval_transform(CFG)(Image.new("RGB", (60, 45), (51, 102, 204)))
    expected = [(v / 255 - m) / s for v, m, s in zip((51, 102, 204), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(gray, torch.tensor(expected).view(3, 1, 1).expand(3, 32, 32), atol=1e-5)


def test_eval_resizes_the_shorter_side_before_cropping():
    # A left half black, right half white: after resizing 80x40 to 72x36 and a 32 crop the centre column splits.
    image = Image.new("RGB", (80, 40))
    image.paste((255, 255, 255), (40, 0, 80, 40))
    out = eval_transform(CFG)(image)[0]
    assert (out[:, :14] < 0).all() and (out[:, 18:] > 0).all()


def test_pca_lighting_shifts_each_channel_uniformly():
    image = noise_image()
    outs = {}
    for std in (0.0, 0.1):
        torch.manual_seed(0)
        outs[std] = train_transform(DataConfig(train_crop=24, pca_lighting=std))(image)
    shift = (outs[0.1] - outs[0.0]) * torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert shift.abs().max() > 1e-4
    per_channel = shift.flatten(1)
    assert torch.allclose(per_channel, per_channel[:, :1].expand_as(per_channel), atol=1e-5)
