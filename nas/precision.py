"""Mixed precision by Hessian sensitivity (HAWQ-style), for spaces with a precision axis.

Each precision unit of a trained float network (``SearchSpace.precision_units``)
gets a sensitivity

    omega_u = (tr H_u / n_u) * ||Q(W_u) - W_u||^2

the mean Hessian trace of the loss over the unit's weights (Hutchinson's
estimator: E[v^T H v] over Rademacher ``v``, Hessian-vector products by double
back-propagation) times the squared perturbation that int8 quantization
(symmetric, per output channel or per tensor, as the ONNX Runtime scheme
quantizes weights) causes (Dong et al., HAWQ-V2, NeurIPS 2020).  The exported
graph has each batch norm folded into the convolution before it, and that
folded kernel is what gets quantized, so the perturbation is taken on the
folded kernel and mapped back to the trained weights the Hessian is over: per
channel this changes nothing (rounding is scale-equivariant per channel), per
tensor it is the whole story (one channel with a large folded scale coarsens
every other channel's levels).  Units are then quantized least
sensitive first, and :func:`bisect_order` finds the longest prefix of that order
whose real int8 accuracy (post-training quantization, ONNX Runtime) stays
within the drop budget.  Any other order (a seeded random one, the baseline)
goes through the same bisection.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from hardware.protocol import Candidate
from hardware.quantize import check_weight_granularity
from nas.accuracy import calibration_inputs, candidate_accuracy, evaluate_accuracy
from search_spaces import make_space

#: int8 weights are symmetric in [-127, 127] per output channel
INT8_LEVELS = 127


@dataclass
class Sensitivity:
    unit: str
    #: mean Hessian trace per weight (Hutchinson estimate)
    trace_per_weight: float
    #: ||Q(W) - W||^2 of the unit's weights under int8 quantization
    perturbation: float
    weights: int

    @property
    def omega(self) -> float:
        return self.trace_per_weight * self.perturbation


def unit_weights(model, modules: Sequence[str]) -> dict[str, Any]:
    """The weight tensors (convolution and linear kernels: ``dim > 1``) of ``modules``, by
    the name of the module that holds them."""
    prefixes = tuple(m + "." for m in modules)
    return {name.removesuffix(".weight"): p for name, p in model.named_parameters()
            if name.startswith(prefixes) and name.endswith(".weight") and p.dim() > 1}


def folded_scales(model) -> dict[str, Any]:
    """Per-output-channel factors ``gamma / sqrt(var + eps)`` of the batch norm that directly
    follows each convolution (by module name): the exporter folds that batch norm into the
    convolution's kernel, so ``kernel * factor`` is what int8 quantization sees."""
    from torch import nn

    scales, previous = {}, None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            previous = (name, module)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and previous is not None:
            conv_name, conv = previous
            if module.affine and module.num_features == conv.weight.shape[0]:
                scales[conv_name] = (module.weight / (module.running_var + module.eps).sqrt()).detach()
            previous = None
    return scales


def int8_perturbation(weight, weights: str = "per_channel", fold=None) -> float:
    """``||Q(W) - W||^2`` of symmetric int8 quantization of ``weight`` with one scale per
    output channel or per tensor (``weights``), applied to the folded kernel ``weight *
    fold`` (``fold``: per-output-channel factors, :func:`folded_scales`) and measured back
    on ``weight``."""
    import torch

    with torch.no_grad():
        flat = weight.detach().reshape(weight.shape[0], -1)
        factor = torch.ones(flat.shape[0], 1) if fold is None else fold.reshape(-1, 1)
        # a zero factor folds the channel away entirely: it costs nothing either way
        factor = torch.where(factor.abs() < 1e-12, torch.ones_like(factor), factor)
        folded = flat * factor
        limit = folded.abs().amax(dim=1, keepdim=True) if weights == "per_channel" else folded.abs().max()
        scale = limit.clamp_min(1e-12) / INT8_LEVELS
        quantized = torch.round(folded / scale).clamp(-INT8_LEVELS, INT8_LEVELS) * scale
        return float((((quantized - folded) / factor) ** 2).sum())


def twice_differentiable(model):
    """A copy of ``model`` whose hard-sigmoid / hard-swish activations are written as
    ``relu6(x + 3) / 6`` (same values): torch has no second derivative for the fused
    kernels, and Hessian-vector products need one."""
    import torch
    from torch import nn

    class HardSigmoid(nn.Module):
        def forward(self, x):
            return torch.nn.functional.relu6(x + 3.0) / 6.0

    class HardSwish(nn.Module):
        def forward(self, x):
            return x * torch.nn.functional.relu6(x + 3.0) / 6.0

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Hardsigmoid):
                setattr(module, child_name, HardSigmoid())
            elif isinstance(child, nn.Hardswish):
                setattr(module, child_name, HardSwish())
    return model


def hessian_sensitivities(model, units: dict[str, Sequence[str]], batches: Iterable[tuple[Any, Any]],
                          samples: int = 8, seed: int = 0, weights: str = "per_channel") -> list[Sensitivity]:
    """Sensitivity of each unit (``name -> module paths``) of ``model`` (float, trained), the
    traces averaged over ``batches`` of ``(images, labels)`` and ``samples`` Rademacher
    vectors per batch drawn from a generator seeded by ``seed``; ``weights``: the int8
    scheme's weight scales (:data:`hardware.quantize.WEIGHT_GRANULARITIES`)."""
    import torch

    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    check_weight_granularity(weights)
    model = twice_differentiable(model)
    folds = folded_scales(model)
    kernels = {u: unit_weights(model, modules) for u, modules in units.items()}
    empty = [u for u, ws in kernels.items() if not ws]
    if empty:
        raise ValueError(f"precision units without weights in the model: {empty}")
    params = [p for ws in kernels.values() for p in ws.values()]
    owner = [u for u, ws in kernels.items() for _ in ws]
    generator = torch.Generator().manual_seed(seed)
    traces = dict.fromkeys(units, 0.0)
    count = 0
    # eval mode: BN as the fixed affine it is folded into at export, no dropout
    model.eval()
    for images, labels in batches:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for _ in range(samples):
            vs = [torch.randint(0, 2, p.shape, generator=generator).to(p.dtype) * 2 - 1 for p in params]
            hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
            for unit, v, hv in zip(owner, vs, hvs):
                traces[unit] += float((v * hv).sum())
            count += 1
    if count == 0:
        raise ValueError("no batches to estimate Hessian traces on")
    sizes = {u: sum(p.numel() for p in ws.values()) for u, ws in kernels.items()}
    perturbation = {u: sum(int8_perturbation(p, weights, folds.get(name)) for name, p in ws.items())
                    for u, ws in kernels.items()}
    return [Sensitivity(u, traces[u] / count / sizes[u], perturbation[u], sizes[u]) for u in units]


def hessian_order(sensitivities: Sequence[Sensitivity]) -> list[str]:
    """Units least sensitive first (ties by name, so the order is deterministic)."""
    return [s.unit for s in sorted(sensitivities, key=lambda s: (s.omega, s.unit))]


@dataclass
class Bisection:
    order: list[str]
    #: how many units of ``order`` (a prefix) run in int8
    int8_units: int
    accuracy: float
    #: accuracy of every prefix length evaluated, in evaluation order
    evaluated: dict[int, float] = field(default_factory=dict)

    @property
    def assignment(self) -> dict[str, str]:
        return self.prefix(self.int8_units)

    def prefix(self, k: int) -> dict[str, str]:
        return prefix_assignment(self.order, k)

    def feasible(self, max_drop: float) -> list[int]:
        """Prefix lengths evaluated on the way whose drop from the float accuracy (length 0)
        is within ``max_drop``: the candidates the fastest assignment is chosen from."""
        return sorted(k for k, accuracy in self.evaluated.items() if self.evaluated[0] - accuracy <= max_drop)


def prefix_assignment(order: Sequence[str], k: int) -> dict[str, str]:
    """The assignment with the first ``k`` units of ``order`` in int8, the rest in fp32."""
    return {u: ("int8" if i < k else "fp32") for i, u in enumerate(order)}


def bisect_order(order: Sequence[str], accuracy_of: Callable[[dict[str, str]], float], float_accuracy: float,
                 max_drop: float) -> Bisection:
    """The longest prefix of ``order`` that can run in int8 with ``float_accuracy -
    accuracy <= max_drop``, by bisection over the prefix length (which assumes accuracy
    falls as more units are quantized; every length evaluated is recorded).
    ``accuracy_of(assignment)`` scores a unit -> precision assignment."""
    if max_drop < 0:
        raise ValueError(f"max_drop must be >= 0, got {max_drop}")
    order = list(order)
    evaluated: dict[int, float] = {0: float_accuracy}

    def score(k: int) -> float:
        if k not in evaluated:
            evaluated[k] = float(accuracy_of(prefix_assignment(order, k)))
        return evaluated[k]

    low, high = 0, len(order)
    if float_accuracy - score(high) <= max_drop:
        low = high
    while high - low > 1:
        mid = (low + high) // 2
        if float_accuracy - score(mid) <= max_drop:
            low = mid
        else:
            high = mid
    return Bisection(order, low, evaluated[low], evaluated)


def random_order(units: Sequence[str], seed: int) -> list[str]:
    """A seeded random order of ``units`` (the baseline the Hessian order is compared with)."""
    return [units[i] for i in np.random.default_rng(seed).permutation(len(units))]


def with_precision_axis(space):
    """``space`` with fp32 or int8 chosen per layer (the same space when it already is):
    the bisection assigns units one by one, whatever granularity the search used."""
    if space.searches_precision and space.precision_granularity == "layer":
        return space
    try:
        options = {k: v for k, v in space.options().items() if k != "precision_order"}
        return make_space(space.name, **{**options, "precisions": ["fp32", "int8"],
                                         "precision_granularity": "layer"})
    except (TypeError, ValueError):
        raise ValueError(f"space {space.name!r} has no precision axis; mixed precision needs one "
                         f"(mbv3, mobiledet)") from None


@dataclass
class MixedPrecisionProblem:
    """One trained float network and the data that scores its precision assignments."""

    space: Any  # a space with a precision axis
    arch: Any  # the float arch
    model: Any
    splits: Any
    calibration: list
    float_accuracy: float
    batch_size: int = 256
    #: the int8 scheme's weight scales (:data:`hardware.quantize.WEIGHT_GRANULARITIES`)
    weights: str = "per_channel"
    _scores: dict[str, float] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, space, arch, model, splits, seed: int = 0, weights: str = "per_channel") -> "MixedPrecisionProblem":
        space = with_precision_axis(space)
        arch = space.float_arch(space.parse(str(arch)))
        model = model.eval()
        return cls(space, arch, model, splits, calibration_inputs(splits.train, seed=seed),
                   evaluate_accuracy(model, splits.val, 256), weights=check_weight_granularity(weights))

    @property
    def units(self) -> dict[str, tuple[str, ...]]:
        return {u: unit.modules for u, unit in self.space.precision_units(self.arch).items()}

    def arch_for(self, assignment: dict[str, str]):
        return self.space.with_precisions(self.arch, assignment)

    def accuracy_of(self, assignment: dict[str, str]) -> float:
        """Accuracy of the network with ``assignment`` quantized (remembered per assignment:
        orders and budgets revisit the same ones)."""
        arch = self.arch_for(assignment)
        if str(arch) not in self._scores:
            self._scores[str(arch)] = candidate_accuracy(self.space, arch, self.model, self.splits,
                                                         self.batch_size, self.calibration, self.weights)
        return self._scores[str(arch)]

    def latencies(self, archs: Iterable[Any], runner, protocol, seed: int = 0) -> dict[str, float]:
        """Milliseconds of each arch (by string), timed by ``runner`` in one interleaved batch
        with its int8 units quantized."""
        space = self.space
        unique = {str(a): a for a in archs}
        candidates = [Candidate(t, lambda a=a: (space.build(a), space.example_input(a)), space.int8_modules(a))
                      for t, a in unique.items()]
        timed = runner.measure_batch(candidates, protocol, np.random.default_rng(seed))
        return {t: timed[t].latency_ms for t in unique}

    def fastest_within(self, bisection: Bisection, max_drop: float, latency_ms: dict[str, float]) -> int:
        """The feasible prefix length of ``bisection`` whose arch ran fastest in ``latency_ms``
        (more int8 units is not always faster: every fp32/int8 boundary adds a
        quantize/dequantize pair)."""
        return min(bisection.feasible(max_drop),
                   key=lambda k: (latency_ms[str(self.arch_for(bisection.prefix(k)))], -k))

    def hessian_batches(self, count: int, batch_size: int = 32, seed: int = 0) -> list:
        import torch

        train = self.splits.train
        order = np.random.default_rng(seed).permutation(len(train))[:count * batch_size]
        items = [train[int(i)] for i in order]
        return [(torch.stack([x for x, _ in items[i:i + batch_size]]),
                 torch.as_tensor([int(y) for _, y in items[i:i + batch_size]]))
                for i in range(0, len(items), batch_size)]

    def sensitivities(self, batches: int = 4, samples: int = 8, seed: int = 0) -> list[Sensitivity]:
        return hessian_sensitivities(self.model, self.units, self.hessian_batches(batches, seed=seed),
                                     samples, seed, self.weights)

    def bisect(self, order: Sequence[str], max_drop: float) -> Bisection:
        return bisect_order(order, self.accuracy_of, self.float_accuracy, max_drop)
