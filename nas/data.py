"""Datasets for accuracy estimates.

``digits`` (scikit-learn's 1,797 handwritten 8x8 digits, which ship inside the
scikit-learn wheel) is the embedded default: nothing is downloaded.

``digits_distorted`` is a larger, harder embedded task generated from the same
digits (see :func:`distorted_digits`): every digit is drawn several times on a
32x32 canvas with a random affine transform, an elastic distortion, a random
contrast and pixel noise, all from one fixed seed, so every run and every
candidate sees the same images.  Plain ``digits`` saturates (every reasonable
network reaches 95-97% and its 359 validation images move the accuracy in
0.3-point steps), so architectures barely differ there; on the distorted set
small inputs lose real detail, accuracies spread over several points, and the
validation set is ten times larger.  Splits are by *original* digit: no
distortion of a validation digit is ever trained on.

Real data
is accepted by path: a torchvision dataset folder (``cifar10``, ``cifar100``,
``mnist``, ``fashionmnist``, ``svhn``) or an ImageFolder tree (``train/`` and
``val/`` sub-folders of class folders, ImageNet style).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TORCHVISION_DATASETS = {
    "cifar10": ("CIFAR10", 10, "train"),
    "cifar100": ("CIFAR100", 100, "train"),
    "mnist": ("MNIST", 10, "train"),
    "fashionmnist": ("FashionMNIST", 10, "train"),
    "svhn": ("SVHN", 10, "split"),
}
EMBEDDED_DATASETS = ("digits", "digits_distorted")
DATASET_NAMES = (*EMBEDDED_DATASETS, "imagefolder", *TORCHVISION_DATASETS)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DataSplits:
    train: Any  # torch Dataset
    val: Any
    num_classes: int


def load_dataset(name: str, resolution: int, root: str | Path | None = None,
                 augment: bool = True) -> DataSplits:
    """Train/validation splits at ``resolution`` x ``resolution`` RGB.

    The embedded datasets ignore ``root`` and ``augment`` (their images are
    fixed tensors).
    """
    if name == "digits":
        return _digits(int(resolution))
    if name == "digits_distorted":
        return _distorted_at(int(resolution))
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs a 'root' path (nothing is downloaded)")
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset path {str(root)!r} does not exist")
    import torchvision.transforms as T

    train_tf = [T.RandomResizedCrop(resolution, scale=(0.35, 1.0)), T.RandomHorizontalFlip()] \
        if augment else [T.Resize(resolution), T.CenterCrop(resolution)]
    common = [T.ToTensor(), T.Normalize(MEAN, STD)]
    to_rgb = T.Lambda(lambda img: img.convert("RGB"))
    train_t = T.Compose([to_rgb, *train_tf, *common])
    val_t = T.Compose([to_rgb, T.Resize(int(resolution * 1.14)), T.CenterCrop(resolution), *common])
    if name == "imagefolder":
        from torchvision.datasets import ImageFolder

        train_dir, val_dir = root / "train", root / "val"
        for d in (train_dir, val_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"imagefolder dataset {str(root)!r} needs a "
                                        f"{d.name}/ folder of class folders")
        train = ImageFolder(str(train_dir), transform=train_t)
        return DataSplits(train, ImageFolder(str(val_dir), transform=val_t), len(train.classes))
    import torchvision.datasets as D

    cls_name, num_classes, split_kw = TORCHVISION_DATASETS[name]
    cls = getattr(D, cls_name)
    try:
        if split_kw == "split":
            train = cls(str(root), split="train", transform=train_t, download=False)
            val = cls(str(root), split="test", transform=val_t, download=False)
        else:
            train = cls(str(root), train=True, transform=train_t, download=False)
            val = cls(str(root), train=False, transform=val_t, download=False)
    except RuntimeError as exc:
        raise FileNotFoundError(f"dataset {name!r} not found under {str(root)!r}: {exc}") from None
    return DataSplits(train, val, num_classes)


def _digits_split(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation, train) indices of the digits: one fixed split shared by both embedded sets."""
    order = np.random.default_rng(0).permutation(count)
    n_val = count // 5
    return order[:n_val], order[n_val:]


#: distortions drawn per original digit, and the seed they are drawn from
DISTORTED_TRAIN_COPIES, DISTORTED_VAL_COPIES, DISTORTED_SEED = 6, 10, 0
DISTORTED_CANVAS = 32


def distorted_digits(train_copies: int = DISTORTED_TRAIN_COPIES, val_copies: int = DISTORTED_VAL_COPIES,
                     seed: int = DISTORTED_SEED, canvas: int = DISTORTED_CANVAS):
    """Distorted copies of the digits on a ``canvas`` x ``canvas`` grid, values in [0, 1].

    Returns ``(train_images, train_labels, val_images, val_labels)`` with images
    of shape ``(N, 1, canvas, canvas)``.  Each 8x8 digit is upscaled to 5/8 of
    the canvas (MNIST's 20-in-28 proportion), then warped by one sampling grid
    that composes a random affine map (rotation +-12 degrees, scale 0.85-1.15,
    shear +-0.15, shift +-8% of the canvas) with a smooth elastic field
    (random 4x4 displacements of up to 4% of the canvas, bicubically
    interpolated); a random contrast (0.7-1) and Gaussian pixel noise
    (sigma 0.08) follow.  Every draw comes
    from one ``torch.Generator`` seeded with ``seed``, so the result depends on
    the arguments only.
    """
    import math

    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    if train_copies < 1 or val_copies < 1 or canvas < 8:
        raise ValueError(f"copies must be >= 1 and canvas >= 8, got {train_copies}, {val_copies}, {canvas}")
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    size = round(canvas * 5 / 8)
    pad = canvas - size
    images = F.pad(F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False),
                   (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    generator = torch.Generator().manual_seed(int(seed))
    val_idx, train_idx = _digits_split(len(labels))
    out = []
    for idx, copies in ((train_idx, train_copies), (val_idx, val_copies)):
        idx = torch.from_numpy(idx)
        src, target = images[idx].repeat(copies, 1, 1, 1), labels[idx].repeat(copies)
        n = len(target)

        def uniform(low: float, high: float, shape=(n,)) -> torch.Tensor:
            return low + (high - low) * torch.rand(shape, generator=generator)

        angle = uniform(-math.pi / 15, math.pi / 15)
        scale = uniform(0.85, 1.15)
        shear = uniform(-0.15, 0.15)
        shift = uniform(-0.08, 0.08, (n, 2)) * 2  # grid coordinates span [-1, 1]
        cos, sin = torch.cos(angle), torch.sin(angle)
        # output -> input map: inverse scale, rotation and shear, then shift
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos / scale, (-sin + shear * cos) / scale
        theta[:, 1, 0], theta[:, 1, 1] = sin / scale, (cos + shear * sin) / scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, [n, 1, canvas, canvas], align_corners=False)
        field = F.interpolate(uniform(-0.08, 0.08, (n, 2, 4, 4)), size=(canvas, canvas), mode="bicubic",
                              align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1)
        warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        warped = warped * uniform(0.7, 1.0).view(n, 1, 1, 1)
        warped = warped + 0.08 * torch.randn(warped.shape, generator=generator)
        out += [warped.clamp_(0.0, 1.0), target]
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _distorted_canvas():
    return distorted_digits()


def _normalized_rgb(images):
    """Grey images in [0, 1] -> [-1, 1], broadcast to 3 channels (a view)."""
    return ((images - 0.5) / 0.5).expand(-1, 3, -1, -1)


@functools.lru_cache(maxsize=8)
def _distorted_at(resolution: int) -> DataSplits:
    import torch.nn.functional as F
    from torch.utils.data import TensorDataset

    train_x, train_y, val_x, val_y = _distorted_canvas()

    def at(images):
        if resolution != images.shape[-1]:
            # antialiased: a small input loses detail as a downscaled photo would, not by aliasing
            images = F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                                   align_corners=False, antialias=True)
        # one stored channel, broadcast to RGB as a view (a third of the memory)
        return _normalized_rgb(images)

    return DataSplits(TensorDataset(at(train_x), train_y), TensorDataset(at(val_x), val_y), 10)


@functools.lru_cache(maxsize=8)
def _digits(resolution: int) -> DataSplits:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    images = _normalized_rgb(images).contiguous()
    labels = torch.tensor(bunch.target, dtype=torch.long)
    # fixed split so every run and every candidate sees the same validation set
    val_idx, train_idx = (torch.from_numpy(i) for i in _digits_split(len(labels)))
    return DataSplits(TensorDataset(images[train_idx], labels[train_idx]),
                      TensorDataset(images[val_idx], labels[val_idx]), 10)
