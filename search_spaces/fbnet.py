"""FBNet space as benchmarked by HW-NAS-Bench (Li et al., ICLR 2021).

22 searchable layers, each one of nine blocks::

    k3_e1  k3_e1_g2  k3_e3  k3_e6  k5_e1  k5_e1_g2  k5_e3  k5_e6  skip

``k`` depthwise kernel, ``e`` expansion of the inverted bottleneck, ``g2``
grouped (2 groups) pointwise convolutions with a channel shuffle.  Canonical
string: the 22 choices joined by ``-``.  The macro is FBNet-v1's with
HW-NAS-Bench's CIFAR-100 setting: stem 3x3 to 16 channels at stride 1, stages
of (1, 4, 4, 4, 4, 4, 1) layers with (16, 24, 32, 64, 112, 184, 352) channels
and strides (1, 1, 2, 2, 1, 2, 1), a 1x1 head to 1504 channels, pooling and a
linear classifier.  ``skip`` is the identity where shapes allow and a strided
1x1 convolution where they do not (as in HW-NAS-Bench).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

from search_spaces.base import SearchSpace, split_tokens

CHOICES = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
STAGE_LAYERS = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STAGE_STRIDES = (1, 1, 2, 2, 1, 2, 1)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1504
NUM_LAYERS = sum(STAGE_LAYERS)


def block_config(choice: str) -> tuple[int, int, int]:
    """(kernel, expansion, groups) of a non-skip choice."""
    parts = choice.split("_")
    groups = int(parts[2][1:]) if len(parts) == 3 else 1
    return int(parts[0][1:]), int(parts[1][1:]), groups


@dataclass(frozen=True)
class LayerSpec:
    """Geometry of one searchable layer."""

    c_in: int
    c_out: int
    stride: int
    resolution: int  # input height = width
    stage: int


@dataclass(frozen=True)
class FBNetArch:
    layers: tuple[str, ...]

    def __str__(self) -> str:
        return "-".join(self.layers)


class FBNetSpace(SearchSpace):
    name = "fbnet"

    def __init__(self, num_classes: int = 100, resolution: int = 32):
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        if self.num_classes < 1:
            raise ValueError("fbnet option 'num_classes' must be >= 1")
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"fbnet option 'resolution' must be a multiple of 8, got {self.resolution}")
        specs, res, c_in = [], self.resolution, STEM_CHANNELS
        for stage, (n, c, s) in enumerate(zip(STAGE_LAYERS, STAGE_CHANNELS, STAGE_STRIDES)):
            for i in range(n):
                stride = s if i == 0 else 1
                specs.append(LayerSpec(c_in, c, stride, res, stage))
                res //= stride
                c_in = c
        #: geometry of the 22 searchable layers
        self.layer_specs: tuple[LayerSpec, ...] = tuple(specs)

    def options(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "resolution": self.resolution}

    # decisions ---------------------------------------------------------------------
    def decisions(self) -> dict[str, tuple]:
        return {f"layer{i}": CHOICES for i in range(NUM_LAYERS)}

    def decode(self, decisions: Mapping[str, Any]) -> FBNetArch:
        return FBNetArch(tuple(self.decision(decisions, f"layer{i}", CHOICES) for i in range(NUM_LAYERS)))

    def encode(self, arch: FBNetArch) -> dict[str, Any]:
        if len(arch.layers) != NUM_LAYERS:
            raise ValueError(f"fbnet arch needs {NUM_LAYERS} layers, got {len(arch.layers)}")
        return {f"layer{i}": choice for i, choice in enumerate(arch.layers)}

    # strings -----------------------------------------------------------------------
    def parse(self, text: str) -> FBNetArch:
        if not isinstance(text, str):
            raise ValueError(f"fbnet arch must be a string, got {type(text).__name__}")
        tokens = split_tokens(text.strip(), "-", "layer")
        if len(tokens) != NUM_LAYERS:
            raise ValueError(f"fbnet arch {text!r}: expected {NUM_LAYERS} layers joined by '-', "
                             f"got {len(tokens)}")
        for i, token in enumerate(tokens):
            if token not in CHOICES:
                raise ValueError(f"bad token {token!r} at layer {i}: valid choices {list(CHOICES)}")
        return FBNetArch(tuple(tokens))

    # building ----------------------------------------------------------------------
    def build(self, arch: FBNetArch):
        from search_spaces._fbnet_net import FBNetNetwork

        if not self.contains(arch):
            raise ValueError(f"architecture {arch} is not in {self!r}")
        return FBNetNetwork(arch.layers, self.layer_specs, STEM_CHANNELS, HEAD_CHANNELS,
                            self.num_classes).eval()

    def input_shape(self, arch: FBNetArch, batch_size: int = 1) -> tuple[int, ...]:
        return (batch_size, 3, self.resolution, self.resolution)

    def layer_keys(self, arch: FBNetArch) -> list[str]:
        """HW-NAS-Bench-style lookup-table keys: block type plus its geometry."""
        return [f"{choice}_r{spec.resolution}_i{spec.c_in}_o{spec.c_out}_s{spec.stride}"
                for choice, spec in zip(arch.layers, self.layer_specs)]

    # analytic features -------------------------------------------------------------
    def features(self, arch: FBNetArch) -> dict[str, float]:
        """MACs/params/activations summed from per-layer counts (the layers are
        sequential leaves of the network, so this equals a full count)."""
        base, per_layer = self._cost_table
        totals = dict(base)
        for i, choice in enumerate(arch.layers):
            for key, value in per_layer[i][choice].items():
                totals[key] += value
        return totals

    def layer_costs(self, index: int, choice: str) -> dict[str, float]:
        """MACs/params/activations of one searchable layer."""
        return self._cost_table[1][index][choice]

    @functools.cached_property
    def _cost_table(self):
        import torch

        from search_spaces._fbnet_net import make_block
        from search_spaces.features import count_features

        per_layer = []
        for spec in self.layer_specs:
            x = torch.zeros(1, spec.c_in, spec.resolution, spec.resolution)
            per_layer.append({c: count_features(make_block(c, spec.c_in, spec.c_out, spec.stride), x)
                              for c in CHOICES})
        ref = FBNetArch(("skip",) * NUM_LAYERS)
        base = dict(count_features(self.build(ref), self.example_input(ref)))
        for i in range(NUM_LAYERS):
            for key in base:
                base[key] -= per_layer[i]["skip"][key]
        return base, per_layer
