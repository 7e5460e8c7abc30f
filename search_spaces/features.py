"""Analytic cost features counted with forward hooks on a real forward pass.

Counting on the built module (rather than re-deriving formulas per block type)
keeps the numbers honest for every space, including user-registered ones.
``layer_costs`` is the one hook pass; ``count_features`` sums it, and the
analytic device model (``hardware.analytic``) prices it layer by layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)
_VIEWS = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.Unflatten)
#: modules whose classes are elementwise activations (torch's and timm's)
_ACT_MODULES = ("torch.nn.modules.activation", "timm.layers.activations")
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool1d)


@dataclass(frozen=True)
class LayerCost:
    """One leaf-module call of a forward pass."""

    name: str
    #: conv | dwconv | linear | norm | act | pool | other | view
    kind: str
    macs: int
    in_elements: int
    out_elements: int
    params: int
    #: spatial kernel size of convolutions (0 for everything else)
    kernel: int = 0


def _kind(module: nn.Module, inputs, out: torch.Tensor) -> str:
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return "dwconv" if depthwise else "conv"
    if isinstance(module, nn.Conv1d):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, _POOLS):
        return "pool"
    if isinstance(module, _VIEWS) or type(module).__name__ == "DropPath":
        return "view"
    # activations first: timm runs them in place, so they alias their input
    if type(module).__module__.startswith(_ACT_MODULES):
        return "act"
    first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
    if first is not None and out.data_ptr() == first.data_ptr() and not module.training:
        return "view" if first.shape != out.shape else "act"
    if not any(True for _ in module.parameters(recurse=False)) and first is not None \
            and first.shape == out.shape:
        return "act"
    return "other"


def layer_costs(model: nn.Module, example: torch.Tensor) -> list[LayerCost]:
    """Per-leaf-module MACs, element counts and parameters, in execution order."""
    records: list[LayerCost] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, torch.Tensor):
            return
        macs = kernel = 0
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0]
            kh, kw = module.kernel_size
            macs = out.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs = out.numel() * module.in_features
        elif isinstance(module, nn.Conv1d):
            kernel = module.kernel_size[0]
            macs = out.numel() * (module.in_channels // module.groups) * module.kernel_size[0]
        in_elements = sum(t.numel() for t in inputs if isinstance(t, torch.Tensor))
        params = sum(p.numel() for p in module.parameters(recurse=False))
        records.append(LayerCost(names.get(module, type(module).__name__), _kind(module, inputs, out),
                                 int(macs), int(in_elements), int(out.numel()), int(params), int(kernel)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return records


def arch_layer_costs(space, arch, phase: str = "prefill") -> list[LayerCost]:
    """Per-layer costs of one architecture of ``space`` for the analytic device model.

    Forward hooks only see module calls, so a space whose cost hides in other
    products (attention scores, selective scans) and that has more than one
    phase (an LM's prefill and per-token decode) provides
    ``operator_costs(arch, phase)``; every other space has a single forward
    pass, measured here with hooks on the built network."""
    if hasattr(space, "operator_costs"):
        return space.operator_costs(arch, phase)
    if phase != "prefill":
        raise ValueError(f"space {space.name!r} has one forward pass (phase 'prefill'); "
                         f"phase {phase!r} needs a space with operator_costs()")
    model = space.build(arch)
    return layer_costs(model, space.example_input(arch))


def count_features(model: nn.Module, example: torch.Tensor,
                   layers: Sequence[LayerCost] | None = None) -> dict[str, float]:
    """Return ``macs``, ``params`` and ``activations`` (output elements written by
    every leaf module) for one forward pass of ``example``; ``layers``: its
    :func:`layer_costs` when the caller has them already."""
    layers = layer_costs(model, example) if layers is None else layers
    params = sum(p.numel() for p in model.parameters())
    return {"macs": float(sum(c.macs for c in layers)), "params": float(params),
            "activations": float(sum(c.out_elements for c in layers))}
