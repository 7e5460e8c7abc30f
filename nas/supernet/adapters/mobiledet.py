"""The ``mobiledet`` supernet: the three block types of a layer share their convolutions.

MobileDets' block types look different but compute similar things, so at
every layer position one set of convolution weights serves all of them
(elastic kernel, expansion and Tucker ratios are then slices, as in the mbv3
supernet):

* ``expand``, the largest fused IBN's ``k x k`` expansion (``in*E`` by ``in``).
  A fused IBN of kernel ``k`` and expansion ``e`` takes its centre ``k x k``
  and leading ``in*e`` filters; an inverted bottleneck's ``1 x 1`` expansion
  is its centre tap; a Tucker block's ``1 x 1`` compression is the centre tap
  of its leading ``a*in`` filters.
* ``project``, the ``1 x 1`` projection back to ``out`` channels, shared by
  both bottlenecks; a Tucker block's ``1 x 1`` expansion reads its leading
  ``b*out`` inputs.
* ``depthwise`` (inverted bottleneck only) and ``tucker`` (the Tucker block's
  ``k x k`` core, ``b*out`` by ``a*in``) have no counterpart in the other types.

Batch norms are not shared: each block type keeps its own (``norms.<type>``),
because the statistics after a fused ``k x k`` expansion and after a
``1 x 1`` one differ, and BN recalibration re-estimates them per sub-network
anyway.

Measured against the SPOS form this replaces (one independent block per type
and position, layout 1) with ``benchmarks/supernet_ranking.py --space
mobiledet --supernet-epochs 4`` on seed 0's 24 candidates: Kendall tau 0.312
shared vs 0.268 SPOS against stand-alone training, and a random sub-network's
training loss after 3 of 4 epochs of 1.68 vs 2.00.  Neither beats the MACs
proxy (0.732) after 4 epochs; shared, after 12 epochs, 0.557.  The SPOS form
across types (``supernet.share_block_types: false``, :class:`SeparateLayer`;
unlike layout 1 still elastic within a type) measured at 40 epochs, seeds 0 /
1: 0.835 / 0.555, below the shared form and below measured latency on both.
"""
from __future__ import annotations

from torch import nn

from nas.supernet.elastic import SUPERNETS, Supernet
from search_spaces.mobiledet import DetLayer, MobileDetArch

LAYER_KINDS = ("ir", "fu", "tu")

#: (block type, stand-alone tensor inside the block) -> shared convolution of the position
SHARED_CONVS = {
    ("ir", "conv_pw.weight"): "expand",
    ("fu", "conv_exp.weight"): "expand",
    ("tu", "compress.conv.weight"): "expand",
    ("ir", "conv_dw.weight"): "depthwise",
    ("ir", "conv_pwl.weight"): "project",
    ("fu", "conv_pwl.weight"): "project",
    ("tu", "expand.conv.weight"): "project",
    ("tu", "conv.conv.weight"): "tucker",
}


class SeparateLayer(nn.Module):
    """One layer position whose block types keep their own weights (SPOS across types).

    ``blocks.<type>`` is that type's block at the space's largest settings; kernel,
    expansion and Tucker ratios are still slices within the type.  A Tucker block's
    weights are then trained only when a Tucker block is drawn, as when it trains
    stand-alone, instead of also by the bottlenecks whose convolutions it would share.
    """

    def __init__(self, blocks: dict[str, nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleDict(blocks)

    def tensor_name(self, kind: str, name: str) -> str:
        """This module's name for tensor ``name`` of a ``kind`` block."""
        return f"blocks.{kind}.{name}"

    def norm_groups(self) -> list[nn.Module]:
        return list(self.blocks.values())


class SharedLayer(nn.Module):
    """One layer position: the shared convolutions and each block type's norms.

    Built from one block per type at the space's largest settings, so every
    tensor has the shape the space's own blocks would give it and timm's
    initialisation.  ``norms.<type>.<path>`` holds the block's norm at
    ``<path>`` with dots written as ``_`` (``compress.bn`` -> ``compress_bn``).
    """

    def __init__(self, blocks: dict[str, nn.Module]):
        super().__init__()
        ir, fu, tu = blocks["ir"], blocks["fu"], blocks["tu"]
        # the fused conv's expansion is the largest; the others are slices of it
        self.expand = fu.conv_exp.weight
        self.depthwise = ir.conv_dw.weight
        self.project = fu.conv_pwl.weight
        self.tucker = tu.conv.conv.weight
        self.norms = nn.ModuleDict()
        for kind, block in blocks.items():
            self.norms[kind] = nn.ModuleDict({
                path.replace(".", "_"): module for path, module in block.named_modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm)})
        self._check_slices(blocks)

    def _check_slices(self, blocks: dict[str, nn.Module]) -> None:
        # a space whose Tucker ratios outgrow the expansion could not slice; say so at build
        for (kind, name), shared in SHARED_CONVS.items():
            want = blocks[kind].get_parameter(name).shape
            have = getattr(self, shared).shape
            if any(w > h for w, h in zip(want, have)):
                raise ValueError(f"mobiledet supernet: {kind} tensor {name} {tuple(want)} does not fit "
                                 f"in the shared {shared} {tuple(have)}")

    def tensor_name(self, kind: str, name: str) -> str:
        """This module's name for tensor ``name`` of a ``kind`` block."""
        shared = SHARED_CONVS.get((kind, name))
        if shared is not None:
            return shared
        path, _, leaf = name.rpartition(".")
        return f"norms.{kind}.{path.replace('.', '_')}.{leaf}"

    def norm_groups(self) -> list[nn.Module]:
        """One module per block type holding its norms, in block order."""
        return list(self.norms.values())


class MobileDetSupernet(Supernet):
    """Every layer position is a :class:`SharedLayer` (``share_block_types``, the default)
    or a :class:`SeparateLayer`; ``skip`` has no weights.

    The stem, the stem's depthwise block, the head and the classifier do not
    vary and are held once.
    """

    space_name = "mobiledet"
    #: 1 was the SPOS form (independent blocks per type)
    layout = 2
    has_block_types = True

    def __init__(self, space, share_block_types: bool = True):
        super().__init__(space, share_block_types)
        # one stand-alone network per block type at its largest settings provides the
        # tensors, so they are built (and initialised) exactly as the space builds them
        nets = {kind: space.build(self._uniform(kind)) for kind in LAYER_KINDS}
        first = nets[LAYER_KINDS[0]]
        self.conv_stem = first.conv_stem
        self.first = first.blocks[0]
        self.conv_head = first.conv_head
        self.classifier = first.classifier
        layer_type = SharedLayer if share_block_types else SeparateLayer
        self.layers = nn.ModuleDict()
        for index, position in enumerate(self._positions(), start=1):
            self.layers[position] = layer_type({kind: nets[kind].blocks[index] for kind in LAYER_KINDS})

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
        # each type's norms, in block order: the last one closes the residual branch
        return [norms for position, layer in self.layers.items() if not position.endswith("_l0")
                for norms in layer.norm_groups()]

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
        return f"layers.{position}.{self.layers[position].tensor_name(kind, rest)}"


SUPERNETS.register(MobileDetSupernet.space_name, MobileDetSupernet)
