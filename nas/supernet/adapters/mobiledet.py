"""The ``mobiledet`` supernet: one candidate block per type at every layer position."""
from __future__ import annotations

from torch import nn

from nas.supernet.elastic import SUPERNETS, Supernet
from search_spaces.mobiledet import DetLayer, MobileDetArch

LAYER_KINDS = ("ir", "fu", "tu")


class MobileDetSupernet(Supernet):
    """SPOS-style: each layer position holds one candidate block per type.

    Block types cannot share weights (a fused conv, a depthwise bottleneck and
    a Tucker conv have different tensors), so they are parallel candidates;
    *within* a type the kernel, expansion and Tucker ratios are elastic (slices
    of the largest block).  ``skip`` has no weights.
    """

    space_name = "mobiledet"

    def __init__(self, space):
        super().__init__(space)
        # one stand-alone network per block type at its largest settings provides the
        # candidates, so the blocks are built exactly as the space builds them
        nets = {kind: space.build(self._uniform(kind)) for kind in LAYER_KINDS}
        first = nets[LAYER_KINDS[0]]
        self.conv_stem = first.conv_stem
        self.first = first.blocks[0]
        self.conv_head = first.conv_head
        self.classifier = first.classifier
        self.layers = nn.ModuleDict()
        positions = self._positions()
        for index, position in enumerate(positions, start=1):
            self.layers[position] = nn.ModuleDict({kind: nets[kind].blocks[index] for kind in LAYER_KINDS})

    def _positions(self) -> list[str]:
        return [f"s{s}_l{i}" for s in range(len(self.space.stages))
                for i in range(self.space.layers_per_stage)]

    def _uniform(self, kind: str):
        s = self.space
        if kind == "tu":
            layer = DetLayer("tu", kernel=max(s.kernels), in_ratio=max(s.tucker_ratios),
                             out_ratio=max(s.tucker_ratios))
        else:
            layer = DetLayer(kind, kernel=max(s.kernels), expand=max(s.expansions))
        return MobileDetArch(max(s.resolutions), tuple((layer,) * s.layers_per_stage for _ in s.stages))

    def largest(self):
        # fused convs are the heaviest block type (a full kxk conv to in*e channels)
        return self._uniform("fu")

    def smallest(self):
        s = self.space
        tucker = DetLayer("tu", kernel=min(s.kernels), in_ratio=min(s.tucker_ratios),
                          out_ratio=min(s.tucker_ratios))
        stage = (tucker,) + (DetLayer("skip"),) * (s.layers_per_stage - 1)
        return MobileDetArch(min(s.resolutions), tuple(stage for _ in s.stages))

    def residual_blocks(self) -> list[nn.Module]:
        return [block for position, candidates in self.layers.items() if not position.endswith("_l0")
                for block in candidates.values()]

    def super_name(self, arch, name: str) -> str:
        if not name.startswith("blocks."):
            return name  # conv_stem, conv_head, classifier
        _, index, rest = name.split(".", 2)
        index = int(index)
        if index == 0:
            return f"first.{rest}"
        # stand-alone blocks 1.. are the non-skip layers in order
        present = [(pos, layer.kind) for pos, layer in
                   zip(self._positions(), (l for stage in arch.stages for l in stage))
                   if layer.kind != "skip"]
        position, kind = present[index - 1]
        return f"layers.{position}.{kind}.{rest}"


SUPERNETS.register(MobileDetSupernet.space_name, MobileDetSupernet)
