"""MobileDets-style space: regular convolutions beside inverted bottlenecks.

Per layer one of (Xiong et al., "MobileDets", CVPR 2021):

* ``ir_k<k>_e<e>``  inverted bottleneck (1x1 expand, kxk depthwise, 1x1 project)
* ``fu_k<k>_e<e>``  fused IBN: a regular kxk conv does the expansion
* ``tu_k<k>_i<a>_o<b>``  Tucker / compression conv: 1x1 compress to ``a*in``
  channels, kxk regular conv to ``b*out`` channels, 1x1 to ``out``
* ``skip``  identity, only where shapes allow (not the first layer of a stage)

Canonical string: ``r224:<stage>:<stage>...`` with layers ``-``-separated.
With ``precisions: [fp32, int8]`` a layer token (and the header, for the 1x1
head and classifier) may end in ``_int8``, as in :mod:`search_spaces.mbv3`;
``precision_granularity: stage`` chooses one precision per stage, ``suffix``
one stage from which on every layer and the head run in int8, ``ordered`` how
many units of a ``precision_order`` (least sensitive first) run in int8.
Blocks are timm's ``InvertedResidual`` / ``EdgeResidual``; the Tucker block is
composed from timm's ``ConvNormAct``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from search_spaces.base import (PrecisionUnit, SearchSpace, parse_choice, precision_suffix,
                                split_precision, split_tokens)

LAYER_TYPES = ("ir", "fu", "tu", "skip")
#: layer types from the cheapest to the costliest at equal kernel and expansion
LAYER_TYPES_BY_COST = ("skip", "tu", "ir", "fu")
HEAD_MODULES = ("conv_head", "classifier")


@dataclass(frozen=True)
class DetLayer:
    kind: str  # one of LAYER_TYPES
    kernel: int = 0
    expand: int = 0
    in_ratio: float = 0.0
    out_ratio: float = 0.0
    #: "fp32" for skip (an identity has nothing to quantize)
    precision: str = "fp32"

    def __str__(self) -> str:
        if self.kind == "skip":
            return "skip"
        if self.kind == "tu":
            core = f"tu_k{self.kernel}_i{self.in_ratio:g}_o{self.out_ratio:g}"
        else:
            core = f"{self.kind}_k{self.kernel}_e{self.expand}"
        return core + precision_suffix(self.precision)


@dataclass(frozen=True)
class MobileDetArch:
    resolution: int
    stages: tuple[tuple[DetLayer, ...], ...]
    head_precision: str = "fp32"

    def __str__(self) -> str:
        header = f"r{self.resolution}{precision_suffix(self.head_precision)}"
        return ":".join([header] + ["-".join(map(str, s)) for s in self.stages])


# (channels, stride) of the searchable stages, MobileDet-CPU/DSP-like backbone
MOBILEDET_STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2))


class MobileDetSpace(SearchSpace):
    name = "mobiledet"

    def __init__(self, resolutions=(224,), kernels=(3, 5), expansions=(4, 8),
                 tucker_ratios=(0.25, 0.75), layers_per_stage: int = 4, num_classes: int = 1000,
                 precisions=("fp32",), precision_granularity: str = "layer",
                 precision_order: Sequence[str] | None = None):
        self.resolutions = tuple(int(r) for r in resolutions)
        self.kernels = tuple(int(k) for k in kernels)
        self.expansions = tuple(int(e) for e in expansions)
        self.tucker_ratios = tuple(float(r) for r in tucker_ratios)
        self.layers_per_stage = int(layers_per_stage)
        self.num_classes = int(num_classes)
        if self.layers_per_stage < 1:
            raise ValueError("mobiledet option 'layers_per_stage' must be >= 1")
        self.stages = MOBILEDET_STAGES
        self._init_precision(precisions, precision_granularity, precision_order,
                             [self.layers_per_stage] * len(self.stages))

    def options(self) -> dict[str, Any]:
        options = {"resolutions": list(self.resolutions), "kernels": list(self.kernels),
                   "expansions": list(self.expansions), "tucker_ratios": list(self.tucker_ratios),
                   "layers_per_stage": self.layers_per_stage, "num_classes": self.num_classes}
        return {**options, **self.precision_options()}

    def network_options(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    # decisions ---------------------------------------------------------------------
    def decisions(self) -> dict[str, tuple]:
        d: dict[str, tuple] = {"resolution": self.resolutions}
        for s in range(len(self.stages)):
            for i in range(self.layers_per_stage):
                p = f"s{s}_l{i}"
                # the first layer of a stage changes shape, so it cannot be skipped
                d[f"{p}_type"] = LAYER_TYPES[:-1] if i == 0 else LAYER_TYPES
                d[f"{p}_kernel"] = self.kernels
                d[f"{p}_expand"] = self.expansions
                d[f"{p}_in_ratio"] = self.tucker_ratios
                d[f"{p}_out_ratio"] = self.tucker_ratios
        return {**d, **self.precision_decisions(len(self.stages), self.layers_per_stage)}

    def size_order(self, name: str, options: tuple) -> tuple:
        if name.endswith("_type"):
            return tuple(kind for kind in LAYER_TYPES_BY_COST if kind in options)
        return super().size_order(name, options)

    def decode(self, decisions: Mapping[str, Any]) -> MobileDetArch:
        stages = []
        for s in range(len(self.stages)):
            layers = []
            for i in range(self.layers_per_stage):
                p = f"s{s}_l{i}"
                kind = decisions[f"{p}_type"]
                if kind == "skip" and i == 0:
                    raise ValueError(f"stage {s}: the first layer cannot be 'skip'")
                layers.append(self._layer(kind, decisions[f"{p}_kernel"], decisions[f"{p}_expand"],
                                          decisions[f"{p}_in_ratio"], decisions[f"{p}_out_ratio"],
                                          self.decoded_precision(decisions, s, i)))
            stages.append(tuple(layers))
        return MobileDetArch(decisions["resolution"], tuple(stages), self.decoded_head_precision(decisions))

    @staticmethod
    def _layer(kind, kernel, expand, in_ratio, out_ratio, precision: str = "fp32") -> DetLayer:
        # canonical form: fields a layer type does not use are zero
        if kind == "skip":
            return DetLayer("skip")
        if kind == "tu":
            return DetLayer("tu", kernel=kernel, in_ratio=float(in_ratio), out_ratio=float(out_ratio),
                            precision=precision)
        return DetLayer(kind, kernel=kernel, expand=expand, precision=precision)

    def encode(self, arch: MobileDetArch) -> dict[str, Any]:
        if len(arch.stages) != len(self.stages):
            raise ValueError(f"expected {len(self.stages)} stages, got {len(arch.stages)}")
        d: dict[str, Any] = {"resolution": arch.resolution}
        for s, stage in enumerate(arch.stages):
            if len(stage) != self.layers_per_stage:
                raise ValueError(f"stage {s}: expected {self.layers_per_stage} layers")
            for i, layer in enumerate(stage):
                p = f"s{s}_l{i}"
                d[f"{p}_type"] = layer.kind
                d[f"{p}_kernel"] = layer.kernel or self.kernels[0]
                d[f"{p}_expand"] = layer.expand or self.expansions[0]
                d[f"{p}_in_ratio"] = layer.in_ratio or self.tucker_ratios[0]
                d[f"{p}_out_ratio"] = layer.out_ratio or self.tucker_ratios[0]
        # a skip has no precision of its own
        slots = [[None if layer.kind == "skip" else layer.precision for layer in stage] for stage in arch.stages]
        return {**d, **self.encoded_precisions(slots, arch.head_precision)}

    # strings -------------------------------------------------------------------------
    def parse(self, text: str) -> MobileDetArch:
        if not isinstance(text, str):
            raise ValueError(f"mobiledet arch must be a string, got {type(text).__name__}")
        groups = split_tokens(text.strip(), ":", "stage")
        if len(groups) != len(self.stages) + 1:
            raise ValueError(f"mobiledet arch {text!r}: expected r<resolution> and "
                             f"{len(self.stages)} stages separated by ':', got {len(groups)} groups")
        header, head_precision = split_precision(groups[0], self.precisions, " in header")
        resolution = parse_choice(header, "r", self.resolutions, int, " in header")
        stages = []
        for s, group in enumerate(groups[1:]):
            tokens = split_tokens(group, "-", f"layer in stage {s}")
            if len(tokens) != self.layers_per_stage:
                raise ValueError(f"stage {s} {group!r}: expected {self.layers_per_stage} layers, "
                                 f"got {len(tokens)}")
            layers = tuple(self._parse_layer(tok, f" in layer {tok!r} of stage {s}") for tok in tokens)
            if layers[0].kind == "skip":
                raise ValueError(f"bad token 'skip' in stage {s}: the first layer changes shape")
            stages.append(layers)
        self.check_precision_pattern([[None if layer.kind == "skip" else layer.precision for layer in stage]
                                      for stage in stages], head_precision, text)
        return MobileDetArch(resolution, tuple(stages), head_precision)

    def _parse_layer(self, token: str, where: str) -> DetLayer:
        if token == "skip":
            return DetLayer("skip")
        core, precision = split_precision(token, self.precisions, where)
        parts = core.split("_")
        kind = parts[0]
        if kind in ("ir", "fu") and len(parts) == 3:
            return DetLayer(kind, kernel=parse_choice(parts[1], "k", self.kernels, int, where),
                            expand=parse_choice(parts[2], "e", self.expansions, int, where), precision=precision)
        if kind == "tu" and len(parts) == 4:
            return DetLayer("tu", kernel=parse_choice(parts[1], "k", self.kernels, int, where),
                            in_ratio=parse_choice(parts[2], "i", self.tucker_ratios, float, where),
                            out_ratio=parse_choice(parts[3], "o", self.tucker_ratios, float, where),
                            precision=precision)
        raise ValueError(f"bad layer token {token!r}{where}: expected ir_k<k>_e<e>, fu_k<k>_e<e>, "
                         f"tu_k<k>_i<ratio>_o<ratio> (each optionally _<precision>) or skip")

    # precision -----------------------------------------------------------------------
    def precision_units(self, arch: MobileDetArch) -> dict[str, PrecisionUnit]:
        """Per non-skip layer ``s<stage>.l<layer>`` (per stage ``s<stage>`` unless the
        granularity is ``layer``) and ``head``.
        ``ChainNet`` numbers its blocks over the layers that exist (``blocks.0`` is the
        stem's depthwise block), so a layer's module follows the skips before it."""
        if not self.searches_precision:
            return {}
        units: dict[str, PrecisionUnit] = {}
        index = 1
        for s, stage in enumerate(arch.stages):
            stage_modules = []
            for i, layer in enumerate(stage):
                if layer.kind == "skip":
                    continue
                stage_modules.append(f"blocks.{index}")
                if self.per_layer_units:
                    units[self.unit_name(s, i)] = PrecisionUnit((f"blocks.{index}",), layer.precision)
                index += 1
            if not self.per_layer_units:
                units[f"s{s}"] = PrecisionUnit(tuple(stage_modules), stage[0].precision)
        units["head"] = PrecisionUnit(HEAD_MODULES, arch.head_precision)
        return units

    def with_precisions(self, arch: MobileDetArch, precisions: Mapping[str, str]) -> MobileDetArch:
        # a skip is an identity: nothing of it runs in any precision
        return self.staged_with_precisions(arch, precisions, lambda layer: layer.kind != "skip")

    # building ------------------------------------------------------------------------
    def build(self, arch: MobileDetArch):
        if not self.contains(arch):
            raise ValueError(f"architecture {arch} is not in {self!r}")
        from search_spaces.blocks import ChainNet, make_block

        blocks = [make_block("ds", 32, 16, kernel=3, stride=1, expand=1)]
        in_ch = 16
        for (channels, stride), stage in zip(self.stages, arch.stages):
            for i, layer in enumerate(stage):
                if layer.kind == "skip":
                    continue
                blocks.append(make_block(layer.kind, in_ch, channels, kernel=layer.kernel,
                                         stride=stride if i == 0 else 1, expand=layer.expand,
                                         in_ratio=layer.in_ratio, out_ratio=layer.out_ratio))
                in_ch = channels
        return ChainNet(blocks, stem_channels=32, out_channels=in_ch, head_channels=1280,
                        num_classes=self.num_classes).eval()

    def input_shape(self, arch: MobileDetArch, batch_size: int = 1) -> tuple[int, ...]:
        return (batch_size, 3, arch.resolution, arch.resolution)

    def layer_keys(self, arch: MobileDetArch) -> list[str]:
        keys = []
        size = -(-arch.resolution // 2)
        in_ch = 16
        for (channels, stride), stage in zip(self.stages, arch.stages):
            for i, layer in enumerate(stage):
                if layer.kind == "skip":
                    continue
                s = stride if i == 0 else 1
                keys.append(f"{layer}_s{s}_i{in_ch}_o{channels}_r{size}")
                size = -(-size // s)
                in_ch = channels
        return keys
