"""Training and evaluation transforms (torchvision v1, which draw from torch's global RNG)."""
import torch
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AlexNet's PCA of ImageNet RGB pixels in [0, 1] (as in fb.resnet.torch, which the SN authors' code copied).
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                           [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]])


class Lighting:
    """AlexNet-style PCA lighting noise on a [0, 1] CHW tensor: adds eigvec @ (alpha * eigval), alpha ~ N(0, std)."""

    def __init__(self, std):
        self.std = std

    def __call__(self, img):
        alpha = torch.randn(3) * self.std
        rgb = PCA_EIGVEC @ (alpha * PCA_EIGVAL)
        return img + rgb.to(img.dtype).view(3, 1, 1)

    def __repr__(self):
        return f"{type(self).__name__}(std={self.std})"


def train_transform(cfg):
    """RandomResizedCrop, flip, optional color jitter and PCA lighting, normalization (cfg: DataConfig)."""
    steps = [T.RandomResizedCrop(cfg.train_crop, scale=(cfg.min_crop_scale, 1.0)), T.RandomHorizontalFlip()]
    if cfg.color_jitter > 0:
        steps.append(T.ColorJitter(brightness=cfg.color_jitter, contrast=cfg.color_jitter,
                                   saturation=cfg.color_jitter))
    steps.append(T.ToTensor())
    if cfg.pca_lighting > 0:
        steps.append(Lighting(cfg.pca_lighting))
    steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return T.Compose(steps)


def eval_transform(cfg):
    """Resize the shorter side to val_resize, center-crop val_crop, normalize (cfg: DataConfig)."""
    return T.Compose([T.Resize(cfg.val_resize), T.CenterCrop(cfg.val_crop), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
