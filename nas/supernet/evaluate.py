"""Accuracy of sub-networks: extraction, BN recalibration, validation.

Batch-norm running statistics in a supernet are a blend over every
sub-network that was trained, so they fit none of them.  Before measuring a
sub-network (OFA, BigNAS), its statistics are recomputed on a few training
batches: reset, then a cumulative average (``momentum=None``) over the same
fixed calibration images for every candidate, so candidates are compared on
equal terms.  Calibration images use the validation transforms (no random
augmentation), which keeps the estimate deterministic.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from nas.accuracy import evaluate_accuracy
from nas.data import load_dataset


def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Recompute every batch-norm layer's running statistics on ``batches``; returns ``model`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    seen = 0
    with torch.no_grad():
        for images in batches:
            model(images)
            seen += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    if norms and not seen:
        raise ValueError("BN recalibration got no batches (is the training split empty?)")
    return model.eval()


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


class SubnetEvaluator:
    """Extract -> recalibrate -> validate sub-networks of one supernet.

    Data come from :func:`nas.data.load_dataset` at each architecture's own
    resolution, exactly as a stand-alone network (or an exported one) is
    evaluated.  The calibration subset is drawn once from ``seed``.
    """

    def __init__(self, supernet, dataset: str = "digits", root: str | None = None, *,
                 calib_batches: int = 8, batch_size: int = 64, seed: int = 0, workers: int = 0,
                 device: str | torch.device = "cpu"):
        if calib_batches < 1 or batch_size < 1:
            raise ValueError(f"calib_batches and batch_size must be >= 1, got {calib_batches}, {batch_size}")
        self.supernet = supernet
        self.dataset, self.root = dataset, root
        self.calib_batches, self.batch_size = int(calib_batches), int(batch_size)
        self.seed, self.workers = int(seed), int(workers)
        self.device = torch.device(device)
        self._splits: dict[int, Any] = {}

    def splits(self, resolution: int):
        if resolution not in self._splits:
            splits = load_dataset(self.dataset, resolution, self.root, augment=False)
            num_classes = self.supernet.space.network_options().get("num_classes")
            if num_classes is not None and splits.num_classes != num_classes:
                raise ValueError(f"dataset {self.dataset!r} has {splits.num_classes} classes but the "
                                 f"supernet's space has num_classes={num_classes}")
            self._splits[resolution] = splits
        return self._splits[resolution]

    def calibration_batches(self, resolution: int):
        train = self.splits(resolution).train
        count = min(len(train), self.calib_batches * self.batch_size)
        indices = np.random.default_rng(self.seed).permutation(len(train))[:count].tolist()
        loader = DataLoader(Subset(train, indices), batch_size=self.batch_size, shuffle=False,
                            num_workers=self.workers)
        for images, _ in loader:
            yield images.to(self.device)

    def resolution(self, arch) -> int:
        return int(self.supernet.space.input_shape(arch)[-1])

    def model(self, arch) -> nn.Module:
        """The stand-alone sub-network with inherited, recalibrated weights (eval mode)."""
        arch = self.supernet.parse(arch)
        model = self.supernet.extract(arch)
        return recalibrate_bn(model, self.calibration_batches(self.resolution(arch)))

    def accuracy(self, arch, model: nn.Module | None = None) -> float:
        """Top-1 validation accuracy (%) of ``arch`` after BN recalibration."""
        arch = self.supernet.parse(arch)
        model = self.model(arch) if model is None else model
        val = self.splits(self.resolution(arch)).val
        return evaluate_accuracy(model, val, self.batch_size * 4, self.workers, device=self.device)
