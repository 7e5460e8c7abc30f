"""MobileNetV3 / ProxylessNAS / once-for-all style inverted-bottleneck space.

Canonical string, timm block-string style::

    r160_w1:ir_k3_e4-ir_k5_e6:ir_k7_e3-ir_k3_e3-ir_k3_e6:...

``r`` input resolution, ``w`` width multiplier, then one ``:``-separated group
per searchable stage holding its layers (``-``-separated).  A layer is
``ir_k<kernel>_e<expansion>``; the stage's channels, stride, squeeze-excite
and activation are fixed by the space, as in MobileNetV3-Large / OFA.

With ``precisions: [fp32, int8]`` precision is searched too: per layer (or per
stage, ``precision_granularity: stage``; or as a prefix of a sensitivity order,
``ordered`` with ``precision_order``, see :data:`search_spaces.base.GRANULARITIES`)
and for the head (the last 1x1 convs and the classifier), written as a suffix
of the layer token or of the header::

    r160_w1_int8:ir_k3_e4-ir_k3_e4_int8:...

fp32 is never written, so strings of a float-only space are unchanged.  The
stem stays fp32: it is the most quantization-sensitive layer (HAWQ keeps it
at higher precision too) and, with 3 input channels, no faster in int8.
The network is built with timm's ``MobileNetV3`` class and block builder, so
it is an ordinary timm model.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping, Sequence

from search_spaces.base import (PrecisionUnit, SearchSpace, parse_choice, precision_suffix,
                                split_precision, split_tokens)

#: the modules after the last searchable stage (timm MobileNetV3 names)
HEAD_MODULES = ("blocks.6", "conv_head", "classifier")


@dataclass(frozen=True)
class IRLayer:
    kernel: int
    expand: int
    precision: str = "fp32"

    def __str__(self) -> str:
        return f"ir_k{self.kernel}_e{self.expand}{precision_suffix(self.precision)}"


@dataclass(frozen=True)
class MBV3Arch:
    resolution: int
    width: float
    stages: tuple[tuple[IRLayer, ...], ...]
    head_precision: str = "fp32"

    def __str__(self) -> str:
        head = f"r{self.resolution}_w{self.width:g}{precision_suffix(self.head_precision)}"
        return ":".join([head] + ["-".join(str(layer) for layer in stage) for stage in self.stages])

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)


@dataclass(frozen=True)
class StageSpec:
    channels: int
    stride: int
    se: bool
    relu: bool  # ReLU for early stages, hard-swish later (MobileNetV3)


# MobileNetV3-Large / OFA-MobileNetV3 searchable stages
MBV3_STAGES = (
    StageSpec(24, 2, False, True),
    StageSpec(40, 2, True, True),
    StageSpec(80, 2, False, False),
    StageSpec(112, 1, True, False),
    StageSpec(160, 2, True, False),
)


class MBV3Space(SearchSpace):
    name = "mbv3"

    def __init__(self, resolutions=(128, 160, 192, 224), widths=(1.0,), kernels=(3, 5, 7),
                 expansions=(3, 4, 6), depths=(2, 3, 4), num_classes: int = 1000,
                 precisions=("fp32",), precision_granularity: str = "layer",
                 precision_order: Sequence[str] | None = None):
        self.resolutions = tuple(int(r) for r in resolutions)
        self.widths = tuple(float(w) for w in widths)
        self.kernels = tuple(int(k) for k in kernels)
        self.expansions = tuple(int(e) for e in expansions)
        self.depths = tuple(int(d) for d in depths)
        self.num_classes = int(num_classes)
        for label, values in (("resolutions", self.resolutions), ("widths", self.widths),
                              ("kernels", self.kernels), ("expansions", self.expansions),
                              ("depths", self.depths)):
            if not values:
                raise ValueError(f"mbv3 option {label!r} must not be empty")
        if min(self.depths) < 1:
            raise ValueError("mbv3 option 'depths' must be >= 1")
        self.stages = MBV3_STAGES
        self._init_precision(precisions, precision_granularity, precision_order,
                             [max(self.depths)] * len(self.stages))

    def options(self) -> dict[str, Any]:
        options = {"resolutions": list(self.resolutions), "widths": list(self.widths),
                   "kernels": list(self.kernels), "expansions": list(self.expansions),
                   "depths": list(self.depths), "num_classes": self.num_classes}
        return {**options, **self.precision_options()}

    def network_options(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    # decisions -------------------------------------------------------------------
    def decisions(self) -> dict[str, tuple]:
        d: dict[str, tuple] = {"resolution": self.resolutions, "width": self.widths}
        for s in range(len(self.stages)):
            d[f"s{s}_depth"] = self.depths
            for i in range(max(self.depths)):
                d[f"s{s}_l{i}_kernel"] = self.kernels
                d[f"s{s}_l{i}_expand"] = self.expansions
        return {**d, **self.precision_decisions(len(self.stages), max(self.depths))}

    def decode(self, decisions: Mapping[str, Any]) -> MBV3Arch:
        stages = []
        for s in range(len(self.stages)):
            depth = decisions[f"s{s}_depth"]
            stages.append(tuple(
                IRLayer(decisions[f"s{s}_l{i}_kernel"], decisions[f"s{s}_l{i}_expand"],
                        self.decoded_precision(decisions, s, i))
                for i in range(depth)))
        return MBV3Arch(decisions["resolution"], float(decisions["width"]), tuple(stages),
                        self.decoded_head_precision(decisions))

    def encode(self, arch: MBV3Arch) -> dict[str, Any]:
        d: dict[str, Any] = {"resolution": arch.resolution, "width": arch.width}
        if len(arch.stages) != len(self.stages):
            raise ValueError(f"expected {len(self.stages)} stages, got {len(arch.stages)}")
        for s, stage in enumerate(arch.stages):
            d[f"s{s}_depth"] = len(stage)
            for i in range(max(self.depths)):
                # inactive slots take the first choice, so one arch has one encoding
                layer = stage[i] if i < len(stage) else IRLayer(self.kernels[0], self.expansions[0])
                d[f"s{s}_l{i}_kernel"] = layer.kernel
                d[f"s{s}_l{i}_expand"] = layer.expand
        slots = [[stage[i].precision if i < len(stage) else None for i in range(max(self.depths))]
                 for stage in arch.stages]
        return {**d, **self.encoded_precisions(slots, arch.head_precision)}

    # strings ---------------------------------------------------------------------
    def parse(self, text: str) -> MBV3Arch:
        if not isinstance(text, str):
            raise ValueError(f"mbv3 arch must be a string, got {type(text).__name__}")
        groups = split_tokens(text.strip(), ":", "stage")
        if len(groups) != len(self.stages) + 1:
            raise ValueError(f"mbv3 arch {text!r}: expected a header and {len(self.stages)} "
                             f"stages separated by ':', got {len(groups)} groups")
        header, head_precision = split_precision(groups[0], self.precisions, " in header")
        head = header.split("_")
        if len(head) != 2:
            raise ValueError(f"mbv3 arch header {groups[0]!r}: expected r<resolution>_w<width>"
                             f"[_<precision>]")
        resolution = parse_choice(head[0], "r", self.resolutions, int, " in header")
        width = parse_choice(head[1], "w", self.widths, float, " in header")
        stages = []
        for s, group in enumerate(groups[1:]):
            layers = split_tokens(group, "-", f"layer in stage {s}")
            if len(layers) not in self.depths:
                raise ValueError(f"stage {s} {group!r}: depth {len(layers)} not in {list(self.depths)}")
            stages.append(tuple(self._parse_layer(tok, s) for tok in layers))
        self.check_precision_pattern([[layer.precision for layer in stage] for stage in stages], head_precision,
                                     text)
        return MBV3Arch(resolution, width, tuple(stages), head_precision)

    def _parse_layer(self, token: str, stage: int) -> IRLayer:
        where = f" in layer {token!r} of stage {stage}"
        core, precision = split_precision(token, self.precisions, where)
        parts = core.split("_")
        if len(parts) != 3 or parts[0] != "ir":
            raise ValueError(f"bad layer token {token!r}{where}: expected ir_k<kernel>_e<expansion>"
                             f"[_<precision>]")
        return IRLayer(parse_choice(parts[1], "k", self.kernels, int, where),
                       parse_choice(parts[2], "e", self.expansions, int, where), precision)

    # precision -----------------------------------------------------------------------
    def precision_units(self, arch: MBV3Arch) -> dict[str, PrecisionUnit]:
        """Per layer ``s<stage>.l<layer>`` (per stage ``s<stage>`` unless the granularity is
        ``layer``) and ``head``; timm puts searchable stage ``s`` at ``blocks.<s+1>``
        (``blocks.0`` is the stem's)."""
        if not self.searches_precision:
            return {}
        units: dict[str, PrecisionUnit] = {}
        for s, stage in enumerate(arch.stages):
            if not self.per_layer_units:
                units[f"s{s}"] = PrecisionUnit(tuple(f"blocks.{s + 1}.{i}" for i in range(len(stage))),
                                               stage[0].precision)
            else:
                for i, layer in enumerate(stage):
                    units[self.unit_name(s, i)] = PrecisionUnit((f"blocks.{s + 1}.{i}",), layer.precision)
        units["head"] = PrecisionUnit(HEAD_MODULES, arch.head_precision)
        return units

    def with_precisions(self, arch: MBV3Arch, precisions: Mapping[str, str]) -> MBV3Arch:
        return self.staged_with_precisions(arch, precisions)

    # building ----------------------------------------------------------------------
    def arch_def(self, arch: MBV3Arch) -> list[list[str]]:
        """timm ``decode_arch_def`` input for this architecture."""
        arch_def = [["ds_r1_k3_s1_e1_c16_nre"]]
        for spec, stage in zip(self.stages, arch.stages):
            blocks = []
            for i, layer in enumerate(stage):
                s = spec.stride if i == 0 else 1
                block = f"ir_r1_k{layer.kernel}_s{s}_e{layer.expand}_c{spec.channels}"
                block += "_se0.25" if spec.se else ""
                block += "_nre" if spec.relu else ""
                blocks.append(block)
            arch_def.append(blocks)
        arch_def.append(["cn_r1_k1_s1_c960"])
        return arch_def

    def build(self, arch: MBV3Arch):
        import torch.nn as nn
        from timm.layers import get_act_layer
        from timm.models._efficientnet_blocks import SqueezeExcite
        from timm.models._efficientnet_builder import decode_arch_def, round_channels
        from timm.models.mobilenetv3 import MobileNetV3

        if not self.contains(arch):
            raise ValueError(f"architecture {arch} is not in {self!r}")
        se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU,
                           rd_round_fn=round_channels)
        model = MobileNetV3(
            block_args=decode_arch_def(self.arch_def(arch)),
            num_classes=self.num_classes,
            stem_size=16,
            fix_stem=arch.width < 0.75,
            num_features=1280,
            round_chs_fn=partial(round_channels, multiplier=arch.width),
            act_layer=get_act_layer("hard_swish"),
            se_layer=se_layer,
        )
        return model.eval()

    def input_shape(self, arch: MBV3Arch, batch_size: int = 1) -> tuple[int, ...]:
        return (batch_size, 3, arch.resolution, arch.resolution)

    def layer_keys(self, arch: MBV3Arch) -> list[str]:
        """One key per searchable layer with its input geometry, for lookup tables."""
        keys = []
        size = -(-arch.resolution // 2)  # stem stride 2
        in_ch = 16
        for spec, stage in zip(self.stages, arch.stages):
            for i, layer in enumerate(stage):
                s = spec.stride if i == 0 else 1
                keys.append(f"{layer}_s{s}_i{in_ch}_o{spec.channels}_r{size}_w{arch.width:g}"
                            f"{'_se' if spec.se else ''}")
                size = -(-size // s)
                in_ch = spec.channels
        return keys
