"""The ``mbv3`` supernet: elastic depth, kernel, expansion, width and resolution."""
from __future__ import annotations

from torch import nn

from nas.supernet.elastic import SUPERNETS, Supernet
from search_spaces.mbv3 import IRLayer, MBV3Arch


class MBV3Supernet(Supernet):
    """The timm MobileNetV3 of the largest architecture; sub-networks keep its names.

    Elastic depth, kernel, expansion, width multiplier and resolution.  Every
    width of the space is supported: a narrower network takes the leading
    channels of each layer (stem, blocks, squeeze-excite, head).  Caveat:
    MobileNetV3's efficient head has no norm after ``conv_head``, so BN
    recalibration cannot re-centre a narrower width's head input; after short
    training, widths other than the trained extremes are estimated poorly.
    Once-for-all trains one supernet per width for this reason; a space with
    a single width does the same here.
    """

    space_name = "mbv3"

    def __init__(self, space, share_block_types: bool = True):
        super().__init__(space, share_block_types)
        self.net = space.build(self.largest())

    def largest(self):
        s = self.space
        layer = IRLayer(max(s.kernels), max(s.expansions))
        return MBV3Arch(max(s.resolutions), max(s.widths),
                        tuple((layer,) * max(s.depths) for _ in s.stages))

    def smallest(self):
        s = self.space
        layer = IRLayer(min(s.kernels), min(s.expansions))
        return MBV3Arch(min(s.resolutions), min(s.widths),
                        tuple((layer,) * min(s.depths) for _ in s.stages))

    def residual_blocks(self) -> list[nn.Module]:
        # layers after the first of a stage keep stride 1 and the stage's width
        return [block for stage in list(self.net.blocks)[1:len(self.space.stages) + 1]
                for block in list(stage)[1:]]

    def super_name(self, arch, name: str) -> str:
        # layer j of stage s is blocks.<s+1>.<j> in both: elastic depth keeps the first layers
        return f"net.{name}"


SUPERNETS.register(MBV3Supernet.space_name, MBV3Supernet)
