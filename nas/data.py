"""Datasets for accuracy estimates.

``digits`` (scikit-learn's 1,797 handwritten 8x8 digits, which ship inside the
scikit-learn wheel) is the embedded default: nothing is downloaded.  Real data
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
DATASET_NAMES = ("digits", "imagefolder", *TORCHVISION_DATASETS)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DataSplits:
    train: Any  # torch Dataset
    val: Any
    num_classes: int


def load_dataset(name: str, resolution: int, root: str | Path | None = None,
                 augment: bool = True) -> DataSplits:
    """Train/validation splits at ``resolution`` x ``resolution`` RGB."""
    if name == "digits":
        return _digits(int(resolution))
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


@functools.lru_cache(maxsize=8)
def _digits(resolution: int) -> DataSplits:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(bunch.target, dtype=torch.long)
    # fixed split so every run and every candidate sees the same validation set
    order = np.random.default_rng(0).permutation(len(labels))
    n_val = len(labels) // 5
    val_idx, train_idx = torch.from_numpy(order[:n_val]), torch.from_numpy(order[n_val:])
    return DataSplits(TensorDataset(images[train_idx], labels[train_idx]),
                      TensorDataset(images[val_idx], labels[val_idx]), 10)
