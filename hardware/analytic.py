"""A roofline device family: synthetic source devices for the few-shot predictor.

There is no public multi-device latency data for this project's own spaces
(``mbv3``, ``mobiledet``), yet a meta-learned predictor needs many source
devices whose rankings *disagree in realistic ways* (a GPU hates depthwise
convolutions and tiny kernels, a phone CPU is compute bound).  Each
:class:`AnalyticDevice` prices every leaf layer of a built network
(``search_spaces.features.layer_costs``) with a roofline plus a fixed
per-kernel launch cost::

    t_layer = launch + max(flops / (peak * efficiency[kind] * utilisation), bytes / bandwidth)

``utilisation = min(1, work / saturation)`` models an accelerator that needs
enough parallel work to fill its units.  Parameters are drawn (seeded,
log-uniform) from ranges typical of phone CPUs, edge GPUs and datacentre GPUs.
Real measurements always win: the onboarding code uses analytic devices only
to fill the source set out where real ones are missing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

#: layer kinds priced by the model, in the column order of :class:`LayerTable`
KINDS = ("conv", "dwconv", "linear", "norm", "act", "pool", "other")

#: (low, high) ranges per family; sampled log-uniformly (floats) or uniformly (flags)
FAMILIES: dict[str, dict[str, tuple[float, float]]] = {
    # 1-4 big ARM cores, XNNPACK/TFLite-like runtimes: compute bound, cheap dispatch
    "phone_cpu": {"peak_gflops": (4.0, 80.0), "mem_gbps": (4.0, 30.0), "launch_us": (0.5, 8.0),
                  "dw_efficiency": (0.15, 0.6), "saturation": (1e2, 4e3), "fuse_prob": (0.6, 1.0)},
    # Jetson-class and mobile GPUs: launch overhead and depthwise convs dominate small nets
    "edge_gpu": {"peak_gflops": (150.0, 6000.0), "mem_gbps": (20.0, 200.0), "launch_us": (8.0, 60.0),
                 "dw_efficiency": (0.04, 0.3), "saturation": (1e4, 3e5), "fuse_prob": (0.3, 1.0)},
    # server GPUs (fp16/fp32, eager to TensorRT): nearly everything is launch or memory bound
    "datacenter_gpu": {"peak_gflops": (8e3, 2e5), "mem_gbps": (600.0, 3300.0), "launch_us": (2.5, 12.0),
                       "dw_efficiency": (0.02, 0.15), "saturation": (1e5, 2e6), "fuse_prob": (0.3, 1.0)},
}


@dataclass(frozen=True)
class AnalyticDevice:
    name: str
    family: str
    peak_gflops: float
    mem_gbps: float
    launch_us: float
    dw_efficiency: float
    saturation: float
    #: elementwise layers (activations, norms) fused into their producer, as deployment
    #: compilers do; otherwise each is a memory-bound kernel of its own
    fuse_elementwise: bool = True
    bytes_per_element: int = 4

    def __post_init__(self):
        for key in ("peak_gflops", "mem_gbps", "saturation", "bytes_per_element"):
            if not getattr(self, key) > 0:
                raise ValueError(f"analytic device {self.name!r}: {key} must be > 0")
        if not 0 < self.dw_efficiency <= 1:
            raise ValueError(f"analytic device {self.name!r}: dw_efficiency must be in (0, 1]")
        if self.launch_us < 0:
            raise ValueError(f"analytic device {self.name!r}: launch_us must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def latency_ms(self, table: "LayerTable", batch_size: int = 1) -> np.ndarray:
        """Latency of every architecture in ``table`` at ``batch_size``."""
        b = float(batch_size)
        kind = table.kind
        flops = 2.0 * table.macs * b
        elements = (table.in_elements + table.out_elements) * b
        moved = (elements + table.params) * self.bytes_per_element
        efficiency = np.ones_like(flops)
        efficiency[kind == KINDS.index("dwconv")] = self.dw_efficiency
        # a kernel's parallel work is its output size; below saturation the units idle
        utilisation = np.clip(table.out_elements * b / self.saturation, 1.0 / self.saturation, 1.0)
        compute_s = flops / (self.peak_gflops * 1e9 * efficiency * utilisation)
        memory_s = moved / (self.mem_gbps * 1e9)
        per_layer = np.maximum(compute_s, memory_s) + self.launch_us * 1e-6
        elementwise = np.isin(kind, [KINDS.index("act"), KINDS.index("norm")])
        if self.fuse_elementwise:
            per_layer = np.where(elementwise, 0.0, per_layer)
        per_layer = np.where(table.live, per_layer, 0.0)
        return per_layer.sum(axis=1) * 1e3


@dataclass
class LayerTable:
    """Per-layer costs of many architectures as padded arrays (archs x layers)."""

    archs: list[str]
    kind: np.ndarray
    macs: np.ndarray
    in_elements: np.ndarray
    out_elements: np.ndarray
    params: np.ndarray
    live: np.ndarray  # False for padding

    @classmethod
    def from_costs(cls, archs: Sequence[str], costs: Sequence[Sequence[Any]]) -> "LayerTable":
        """``costs[i]`` is ``search_spaces.features.layer_costs`` of ``archs[i]``;
        layers that run no kernel (views) are dropped."""
        rows = [[c for c in layers if c.kind != "view"] for layers in costs]
        width = max((len(r) for r in rows), default=0)
        shape = (len(rows), width)
        kind = np.full(shape, KINDS.index("other"), dtype=np.int64)
        arrays = {k: np.zeros(shape) for k in ("macs", "in_elements", "out_elements", "params")}
        live = np.zeros(shape, dtype=bool)
        for i, layers in enumerate(rows):
            for j, c in enumerate(layers):
                kind[i, j] = KINDS.index(c.kind) if c.kind in KINDS else KINDS.index("other")
                for key in arrays:
                    arrays[key][i, j] = getattr(c, key)
                live[i, j] = True
        return cls(list(archs), kind, live=live, **arrays)


def layer_table(space, archs: Iterable[Any], phase: str = "prefill") -> LayerTable:
    """Per-layer costs of every arch (see :func:`search_spaces.features.arch_layer_costs`):
    ``phase`` is ``"prefill"`` (the forward pass) or, for LM spaces, ``"decode"``."""
    from search_spaces.features import arch_layer_costs

    archs = list(archs)
    return LayerTable.from_costs([str(a) for a in archs], [arch_layer_costs(space, a, phase) for a in archs])


def sample_devices(per_family: int, seed: int, families: Sequence[str] = tuple(FAMILIES)
                   ) -> list[AnalyticDevice]:
    """``per_family`` devices from each family, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    devices = []
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"unknown analytic device family {family!r}; valid: {sorted(FAMILIES)}")
        ranges = FAMILIES[family]
        for i in range(int(per_family)):
            draw = {k: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                    for k, (lo, hi) in ranges.items() if k != "fuse_prob"}
            fuse = bool(rng.random() < rng.uniform(*ranges["fuse_prob"]))
            devices.append(AnalyticDevice(f"analytic_{family}_{i:02d}", family,
                                          fuse_elementwise=fuse, **draw))
    return devices


#: the named analytic devices (``analytic_<family>_<NN>``) a recipe can price networks on
#: (``search.roofline``): this many per family, drawn from this seed, which are the ones
#: ``hwnas device add`` mixes into its source set by default
CATALOGUE_PER_FAMILY, CATALOGUE_SEED = 8, 0


def named_device(name: str) -> AnalyticDevice:
    """The catalogue device called ``name``; the error lists the valid names' pattern."""
    devices = {d.name: d for d in sample_devices(CATALOGUE_PER_FAMILY, CATALOGUE_SEED)}
    if name not in devices:
        raise ValueError(f"unknown analytic device {name!r}; valid: analytic_<family>_<NN> with family in "
                         f"{sorted(FAMILIES)} and NN in 00..{CATALOGUE_PER_FAMILY - 1:02d}, e.g. "
                         f"{next(iter(devices))}")
    return devices[name]


def latency_matrix(table: LayerTable, devices: Sequence[AnalyticDevice], batch_size: int = 1
                   ) -> np.ndarray:
    """Latencies (ms), archs x devices."""
    return np.stack([d.latency_ms(table, batch_size) for d in devices], axis=1)
