"""Short stand-alone training of a candidate (the ``train`` accuracy source's engine).

Each candidate is trained from a seed derived from the run seed and its
canonical string (:func:`arch_seed`), so the same arch gets the same weights
in any order, on resume, and again at export time.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hardware.quantize import check_weight_granularity
from nas.options import PATH


@dataclass(frozen=True)
class TrainSettings:
    dataset: str = "digits"
    root: str | None = field(default=None, metadata=PATH)
    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.005
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    augment: bool = False
    workers: int = 0
    #: torch intra-op threads while training (None leaves torch's default)
    threads: int | None = None
    #: weight scales of int8 layers when scoring a space's int8 variants (the target's scheme)
    int8_weights: str = "per_channel"

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.workers < 0:
            raise ValueError("epochs and batch_size must be >= 1, lr > 0, workers >= 0")
        check_weight_granularity(self.int8_weights, "int8_weights")


def arch_seed(seed: int, arch_text: str) -> int:
    return int(hashlib.sha1(f"{seed}:{arch_text}".encode()).hexdigest()[:8], 16)


def seeded_build(space, arch, seed: int):
    """``space.build(arch)`` with initial weights that depend only on ``seed``.

    Module initialisers draw from torch's global generator; forking it keeps
    the caller's RNG state untouched.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return space.build(arch)


def train_candidate(model, splits, settings: TrainSettings, seed: int,
                    on_epoch: Callable[[int], None] | None = None):
    """Train ``model`` in place on ``splits.train``; return top-1 accuracy (%) on ``splits.val``.
    ``on_epoch(n)`` is called after each epoch (progress for long fine-tuning).

    Shuffling draws from a generator seeded by ``seed`` only; build the model
    with :func:`seeded_build` so its initialisation does too.
    """
    import torch
    from torch.utils.data import DataLoader

    previous_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(splits.train, batch_size=settings.batch_size, shuffle=True,
                            generator=generator, num_workers=settings.workers, drop_last=True)
        steps = max(1, settings.epochs * len(loader))
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=steps,
                                                       pct_start=0.15)
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        model.train()
        for epoch in range(settings.epochs):
            for images, labels in loader:
                optimizer.zero_grad(set_to_none=True)
                criterion(model(images), labels).backward()
                optimizer.step()
                schedule.step()
            if on_epoch is not None:
                on_epoch(epoch + 1)
        return evaluate_accuracy(model, splits.val, settings.batch_size * 4, settings.workers)
    finally:
        torch.set_num_threads(previous_threads)


def calibration_inputs(dataset, count: int = 8, batch_size: int = 32, seed: int = 0) -> list:
    """``count`` batches of input images (numpy) from a seeded slice of ``dataset``: the data
    int8 post-training quantization calibrates its activation ranges on."""
    import torch

    order = np.random.default_rng(seed).permutation(len(dataset))[:count * batch_size]
    images = [dataset[int(i)][0] for i in order]
    return [torch.stack(images[i:i + batch_size]).numpy() for i in range(0, len(images), batch_size)]


def quantized_session(model, example, int8_modules, calibration, weights: str = "per_channel"):
    """An ONNX Runtime session of ``model`` with ``int8_modules`` quantized (dynamic batch,
    ``weights`` scales); ``int8_modules=None`` quantizes the whole network."""
    from hardware.onnx_io import ort_session
    from hardware.quantize import export_quantized

    return ort_session(export_quantized(model, example, calibration, int8_modules, weights, dynamic_batch=True))


def evaluate_session(session, dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of an ONNX Runtime session over ``dataset``."""
    from torch.utils.data import DataLoader

    name = session.get_inputs()[0].name
    correct = total = 0
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        logits = session.run(None, {name: images.numpy()})[0]
        correct += int((logits.argmax(1) == labels.numpy()).sum())
        total += labels.numel()
    return 100.0 * correct / max(total, 1)


def candidate_accuracy(space, arch, model, splits, batch_size: int, calibration: list,
                       weights: str = "per_channel") -> float:
    """Top-1 accuracy (%) on ``splits.val`` of ``arch`` whose float weights are ``model``: the
    float network's own, or, when ``arch`` runs layers in int8, that of the network quantized
    after training (calibrated on ``calibration``, ``weights`` scales) and run by ONNX
    Runtime, exactly as ``hwnas export`` ships it."""
    modules = space.int8_modules(arch)
    if not modules:
        return evaluate_accuracy(model, splits.val, batch_size)
    example = space.example_input(space.float_arch(arch))
    return evaluate_session(quantized_session(model, example, modules, calibration, weights), splits.val,
                            batch_size)


def evaluate_accuracy(model, dataset, batch_size: int = 256, workers: int = 0, device=None) -> float:
    """Top-1 accuracy (%); ``device`` (e.g. ``"cuda"``) is where the model already lives."""
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for images, labels in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
            if device is not None:
                images, labels = images.to(device), labels.to(device)
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.numel()
    return 100.0 * correct / max(total, 1)
