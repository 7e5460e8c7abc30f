"""Architecture encoders: arch -> named feature *views* for the latency models.

Each view is a fixed-length vector whose first entry is a constant 1, so a
device's latency can be modelled as a linear function of it.  Different views
encode different hypotheses about what a device's latency depends on; the
few-shot predictor weighs them per device by marginal likelihood.

* ``nb201`` (cell space, a graph encoder): op counts; per-edge one-hot plus
  the *live* graph (edges on an input->output path of non-``none`` edges,
  which compilers like TFLite keep while they drop the rest); pairwise edge-op
  interactions.
* ``fbnet`` (chain space): per-layer one-hot (a lookup table over block and
  position) and analytic per-layer costs (pointwise/depthwise MACs,
  activation traffic, parameters, kernel launches) summed over the chain.
* ``hybrid_slm`` (token models): the physical work of a prefill and of one
  decode step per operator kind (projection MACs, mixing MACs, KV-cache/state
  elements read, layer counts); the same columns for any options of the space,
  so a prior meta-trained on the shipped tables' space transfers.
* any other space: one-hot of its decisions (precisions included) plus log
  MACs/params/activations (and int8 MACs where the space searches precision).
"""
from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np

from nas.registry import Registry
from search_spaces.fbnet import CHOICES, block_config
from search_spaces.nb201 import EDGES, OPS


class Encoder(abc.ABC):
    #: names of the views ``encode`` returns, in order
    views: tuple[str, ...] = ()
    #: the view a learned (neural) basis takes as input, or None for no neural view
    neural_input: str | None = None

    def __init__(self, space):
        self.space = space

    @abc.abstractmethod
    def encode(self, archs: Sequence[Any]) -> dict[str, np.ndarray]:
        """View name -> (len(archs), dim) float array; archs are parsed arch objects."""


ENCODERS: Registry[type[Encoder]] = Registry("arch encoder")


def make_encoder(space) -> Encoder:
    cls = ENCODERS.get(space.name) if space.name in ENCODERS else DecisionEncoder
    return cls(space)


@ENCODERS.register("nb201")
class NB201Encoder(Encoder):
    views = ("counts", "graph", "pairs")
    neural_input = "graph"

    def encode(self, archs):
        n, n_edges, n_ops = len(archs), len(EDGES), len(OPS)
        index = {op: i for i, op in enumerate(OPS)}
        ops = np.array([[index[o] for o in a.ops] for a in archs], dtype=np.int64).reshape(n, n_edges)
        live = np.array([a.live_edges() for a in archs], dtype=bool).reshape(n, n_edges)
        rows = np.arange(n)[:, None]
        onehot = np.zeros((n, n_edges, n_ops))
        onehot[rows, np.arange(n_edges)[None, :], ops] = 1.0
        live_onehot = onehot * live[:, :, None]
        # a node is live when an incoming or outgoing live edge touches it
        nodes = np.zeros((n, 4))
        for e, (dst, src) in enumerate(EDGES):
            nodes[:, dst] = np.maximum(nodes[:, dst], live[:, e])
            nodes[:, src] = np.maximum(nodes[:, src], live[:, e])
        connected = live.any(axis=1, keepdims=True).astype(float)
        ones = np.ones((n, 1))
        counts = onehot.sum(axis=1)[:, 1:]  # "none" is implied by the other four
        graph = np.hstack([ones, onehot.reshape(n, -1), live_onehot.reshape(n, -1), connected, nodes])
        pairs = [onehot[:, i, :, None] * onehot[:, j, None, :]
                 for i in range(n_edges) for j in range(i + 1, n_edges)]
        pairs = np.concatenate([p.reshape(n, -1) for p in pairs], axis=1)
        return {"counts": np.hstack([ones, counts]), "graph": graph, "pairs": np.hstack([graph, pairs])}


@ENCODERS.register("fbnet")
class FBNetEncoder(Encoder):
    views = ("layers", "analytic")

    def __init__(self, space):
        super().__init__(space)
        self.choices = CHOICES
        table = np.array([[self._layer_costs(spec, c) for c in CHOICES] for spec in space.layer_specs])
        # scale each cost so the most expensive arch has ~1: keeps the prior isotropic-ish
        self.table = table / table.max(axis=1).sum(axis=0).clip(min=1e-12)

    @staticmethod
    def _layer_costs(spec, choice: str) -> list[float]:
        h_in, h_out = spec.resolution, spec.resolution // spec.stride
        if choice == "skip":
            if spec.c_in == spec.c_out and spec.stride == 1:
                return [0.0] * 8
            macs = h_out * h_out * spec.c_in * spec.c_out
            return [macs, 0.0, h_in * h_in * spec.c_in, 0.0, h_out * h_out * spec.c_out,
                    spec.c_in * spec.c_out, 1.0, 0.0]
        kernel, expansion, groups = block_config(choice)
        mid = spec.c_in * expansion
        pointwise = (h_in * h_in * spec.c_in * mid + h_out * h_out * mid * spec.c_out) / groups
        depthwise = h_out * h_out * mid * kernel * kernel
        params = (spec.c_in * mid + mid * spec.c_out) / groups + mid * kernel * kernel
        return [pointwise, depthwise, h_in * h_in * spec.c_in, h_in * h_in * mid + h_out * h_out * mid,
                h_out * h_out * spec.c_out, params, 3.0, float(groups > 1)]

    def encode(self, archs):
        index = {c: i for i, c in enumerate(self.choices)}
        n, layers = len(archs), len(self.space.layer_specs)
        picks = np.array([[index[c] for c in a.layers] for a in archs], dtype=np.int64).reshape(n, layers)
        onehot = np.zeros((n, layers, len(self.choices)))
        onehot[np.arange(n)[:, None], np.arange(layers)[None, :], picks] = 1.0
        analytic = self.table[np.arange(layers)[None, :], picks].sum(axis=1)
        ones = np.ones((n, 1))
        return {"layers": np.hstack([ones, onehot.reshape(n, -1)]), "analytic": np.hstack([ones, analytic])}


class DecisionEncoder(Encoder):
    """Fallback for any space: one-hot decisions plus analytic costs."""

    views = ("decisions", "analytic")

    def encode(self, archs):
        choices = self.space.decisions()
        encoded = [self.space.encode(a) for a in archs]
        blocks = []
        for key, values in choices.items():
            lookup = {v: i for i, v in enumerate(values)}
            block = np.zeros((len(archs), len(values)))
            for row, decisions in enumerate(encoded):
                block[row, lookup[decisions[key]]] = 1.0
            blocks.append(block)
        ones = np.ones((len(archs), 1))
        # a space with a precision axis adds its int8 MACs (int8 kernels cost less per MAC)
        keys = ("macs", "params", "activations") + (("int8_macs",) if self.space.searches_precision else ())
        feats = np.array([[np.log1p(f[k]) for k in keys]
                          for f in (self.space.features(a) for a in archs)]).reshape(len(archs), len(keys))
        return {"decisions": np.hstack([ones] + blocks), "analytic": np.hstack([ones, feats / 20.0])}


@ENCODERS.register("hybrid_slm")
class SLMEncoder(Encoder):
    """Token models: the physical work of a prefill and of one decode step, per operator kind.

    For each kind (attention, sliding-window attention, Mamba2, DeltaNet, FFN and the LM
    head): the projections' MACs and the mixing core's MACs and cache/state elements read,
    in a ``seq_len``-token prefill and in one decode step at ``context_len`` (decode is
    memory-bound: its projection MACs are the weights it streams, its mixing elements the
    KV cache or fixed-size state it reads), plus the layer count (launch overhead) and the
    layer count times the query and key/value head counts (per-head matmuls and softmaxes,
    whose cost on a CPU is dispatch, not MACs: with these, cross-validated fits of the
    shipped decode tables ranked 0.925 instead of 0.909 on one thread).
    Latency of any phase on any device is close to a non-negative combination of these,
    which is what the few-shot prior's linear models need; and unlike one-hot decisions
    they mean the same thing in spaces with other options, so a prior meta-trained on the
    shipped tables' space transfers to the user's."""

    views = ("costs",)
    neural_input = "costs"
    GROUPS = ("attn", "swa", "mamba", "delta", "ffn", "head")
    #: fixed units keep every column near 1 for any width or context this space allows
    UNITS = {"prefill": (1e7, 1e7, 1e5), "decode": (1e5, 1e5, 1e5)}

    def _row(self, arch) -> list[float]:
        index = {g: i for i, g in enumerate(self.GROUPS)}
        row = np.zeros((2, len(self.GROUPS), 3))  # phase x group x (proj MACs, mix MACs, mix elements)
        for p, phase in enumerate(("prefill", "decode")):
            for record in self.space.operator_costs(arch, phase):
                parts = record.name.split(".")
                group = arch.layers[int(parts[1])].kind if parts[0] == "blocks" else "head"
                if parts[-1] == "mix":
                    row[p, index[group], 1:] += (record.macs, record.in_elements)
                else:
                    row[p, index[group], 0] += record.macs
            row[p] /= np.asarray(self.UNITS[phase])
        counts = [sum(layer.kind == g for layer in arch.layers) for g in self.GROUPS[:-1]]
        # per-head work that does not scale with MACs (one small matmul and softmax per head)
        heads = [c * h for c in counts for h in (arch.heads, arch.kv_heads)]
        return [1.0, *row.reshape(-1), *counts, *heads]

    def encode(self, archs):
        return {"costs": np.array([self._row(a) for a in archs], dtype=float)}
