"""The search-space interface.

Lifecycle, as Optuna users would expect of a distribution-like object:

* a space is created from plain options (``SPACES.get(name)(**options)``);
* it *samples*, *mutates* and *crosses over* architectures with an explicit
  ``numpy.random.Generator`` (never global RNG state);
* every architecture is a frozen dataclass whose ``str()`` is its canonical
  form, and ``space.parse(str(arch)) == arch``; that string keys the
  measurement store, lookup tables and logs;
* ``build(arch)`` returns an ordinary ``torch.nn.Module``.

Spaces describe themselves as named categorical *decisions* (``decisions()``,
``encode``, ``decode``).  Optuna samplers suggest exactly those, and the
generic ``sample``/``mutate``/``crossover`` below work on them, so a new
space only has to say what its decisions are and how to build and print.

A space may make numeric precision part of its architectures (``precisions:
[fp32, int8]``): ``precision_units(arch)`` then names the parts of the network
that run in one precision, with the torch modules each covers, and the
precisions are ordinary decisions written into the canonical string.
``build`` always returns the float network; runners, accuracy sources and
export quantize the int8 units after the fact (post-training quantization,
:mod:`hardware.quantize`).
"""
from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

Decisions = dict[str, Any]

#: numeric precisions a space may assign; fp32 is the default and never written in strings
PRECISIONS = ("fp32", "int8")
#: precisions users may ask for that are not offered, and why
NOT_OFFERED = {"fp16": "fp16 layers would need the GPU runners (CUDA, TensorRT) to build fp16 engines, "
                       "which this version does not do; the CPU runners have no fast fp16 kernels"}
#: what precision decisions cover: each layer, each stage, one boundary ("suffix": int8
#: from a chosen stage on, fp32 before it: one fp32->int8 transition, where every other
#: pattern pays a quantize/dequantize pair and a layout change at each boundary), or a
#: prefix of a sensitivity order ("ordered": the k least sensitive layers of a given
#: ``precision_order`` in int8, as ``hwnas quantize`` ranks them; one decision, k, in
#: place of one per layer, so the search proposes n + 1 assignments instead of 2^n)
GRANULARITIES = ("layer", "stage", "suffix", "ordered")
#: the ``int8_from`` choice of a suffix space that keeps every unit in fp32
NO_INT8 = "none"


@dataclass(frozen=True)
class PrecisionUnit:
    """A part of a network that runs in one numeric precision."""

    #: torch module paths the unit covers (``blocks.3.1``); they are also the ONNX scopes
    modules: tuple[str, ...]
    precision: str = "fp32"


class SearchSpace(abc.ABC):
    #: registry name, set by subclasses
    name: str = ""
    #: numeric precisions the space's architectures choose from (more than fp32: a precision axis)
    precisions: tuple[str, ...] = ("fp32",)
    #: names of the exported ONNX graph's inputs and outputs (``hwnas export``)
    onnx_names: tuple[tuple[str, ...], tuple[str, ...]] = (("input",), ("output",))

    # --- what a space must provide -------------------------------------------------
    @abc.abstractmethod
    def decisions(self) -> dict[str, tuple]:
        """Ordered mapping of decision name -> tuple of allowed values."""

    @abc.abstractmethod
    def decode(self, decisions: Mapping[str, Any]) -> Any:
        """Decisions -> architecture.  May ignore decisions that are inactive."""

    @abc.abstractmethod
    def encode(self, arch: Any) -> Decisions:
        """Architecture -> a full decision dict (inactive decisions get a fixed filler)."""

    @abc.abstractmethod
    def parse(self, text: str) -> Any:
        """Canonical string -> architecture; raises ``ValueError`` naming a bad token."""

    @abc.abstractmethod
    def build(self, arch: Any):
        """Architecture -> ``torch.nn.Module`` (random init, eval-ready)."""

    @abc.abstractmethod
    def input_shape(self, arch: Any, batch_size: int = 1) -> tuple[int, ...]:
        """Shape of one input batch for ``build(arch)``."""

    def options(self) -> dict[str, Any]:
        """The constructor options; recorded with every run."""
        return {}

    def network_options(self) -> dict[str, Any]:
        """The options that change the network built for a given arch (e.g. the class
        count); measurements are cached under them.  Choice lists do not belong here."""
        return self.options()

    # --- generic behaviour built on decisions --------------------------------------
    def contains(self, arch: Any) -> bool:
        try:
            decisions = self.encode(arch)
        except (ValueError, TypeError, AttributeError, KeyError):
            return False
        choices = self.decisions()
        if set(decisions) != set(choices):
            return False
        if any(decisions[k] not in choices[k] for k in choices):
            return False
        try:
            return self.decode(decisions) == arch
        except ValueError:
            return False

    def decision(self, decisions: Mapping[str, Any], key: str, allowed: Sequence) -> Any:
        """``decisions[key]``, checked against ``allowed``; errors name the space and key."""
        if key not in decisions:
            raise ValueError(f"{self.name}: missing decision {key!r}")
        if decisions[key] not in allowed:
            raise ValueError(f"{self.name}: decision {key}={decisions[key]!r} not in {list(allowed)}")
        return decisions[key]

    def is_valid(self, decisions: Mapping[str, Any]) -> bool:
        """Whether a decision combination decodes to a legal architecture."""
        try:
            self.decode(decisions)
        except ValueError:
            return False
        return True

    def structure_encoding(self, arch: Any) -> np.ndarray:
        """Binary features of ``arch`` for surrogate models of accuracy-like quantities
        (:class:`nas.controllers.GPSurrogate`): one-hot of every decision by default.  A space
        whose decisions can compute the same network in several ways overrides it with an
        encoding under which those coincide (NAS-Bench-201: its input-to-output paths)."""
        return np.concatenate([np.asarray(choices) == value for (name, choices), value in
                               zip(self.decisions().items(), self.encode(arch).values())]).astype(float)

    def live_macs(self, arch: Any) -> float | None:
        """MACs of the operations whose output reaches the network's output, when the space
        counts them in microseconds (from a table, not by building the network); ``None``
        (the default) otherwise.  Surrogates of accuracy read it as a trend: accuracy rises
        with the compute a network spends (:class:`nas.controllers.GPSurrogate`), and
        operations cut off from the output spend none that counts."""
        return None

    def sample(self, rng: np.random.Generator, max_tries: int = 1000) -> Any:
        choices = self.decisions()
        for _ in range(max_tries):
            picked = {k: v[int(rng.integers(len(v)))] for k, v in choices.items()}
            if self.is_valid(picked):
                return self.decode(picked)
        raise RuntimeError(f"{self.name}: no valid architecture in {max_tries} samples")

    def size_order(self, name: str, options: tuple) -> tuple:
        """The choices of decision ``name`` from the one giving the cheapest network to the
        costliest, for :meth:`sample_size_level`: numbers ascending, anything else as listed.
        A space whose categorical choices differ in cost overrides it."""
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in options):
            return tuple(sorted(options))
        return tuple(options)

    def sample_size_level(self, rng: np.random.Generator, uniform: Sequence[str] = (),
                          max_tries: int = 1000) -> Any:
        """A random architecture of a size level drawn first.

        :meth:`sample` draws every decision on its own, so its networks average many
        independent choices and nearly all land in the middle of the cost range.  Here a
        level ``u ~ U(0, 1)`` comes first; each decision (in :meth:`size_order`) then draws
        its choice index from ``Binomial(n - 1, u)``, so levels near 0 give networks near the
        smallest, near 1 near the largest, and every size is drawn about equally often
        (AttentiveNAS likewise samples across the FLOPs range, not its middle).
        Decisions named in ``uniform`` (e.g. ``resolution``) are drawn uniformly instead,
        independent of the level.
        """
        choices = self.decisions()
        unknown = sorted(set(uniform) - set(choices))
        if unknown:
            raise ValueError(f"{self.name}: no decision named {', '.join(map(repr, unknown))}")
        for _ in range(max_tries):
            level = rng.uniform()
            picked = {}
            for name, options in choices.items():
                if name in uniform:
                    picked[name] = options[int(rng.integers(len(options)))]
                else:
                    ordered = self.size_order(name, options)
                    picked[name] = ordered[int(rng.binomial(len(ordered) - 1, level))]
            if self.is_valid(picked):
                return self.decode(picked)
        raise RuntimeError(f"{self.name}: no valid architecture in {max_tries} samples")

    def mutate(self, arch: Any, rng: np.random.Generator, rate: float | None = None,
               max_tries: int = 1000) -> Any:
        """Resample each decision with probability ``rate`` (default 1/#decisions);
        the child always differs from the parent."""
        choices = self.decisions()
        rate = 1.0 / len(choices) if rate is None else rate
        parent = self.encode(arch)
        mutable = [k for k, v in choices.items() if len(v) > 1]
        for _ in range(max_tries):
            child = dict(parent)
            for k in mutable:
                if rng.random() < rate:
                    child[k] = choices[k][int(rng.integers(len(choices[k])))]
            # force at least one change of an *active* decision
            forced = mutable[int(rng.integers(len(mutable)))]
            alternatives = [v for v in choices[forced] if v != parent[forced]]
            child[forced] = alternatives[int(rng.integers(len(alternatives)))]
            if not self.is_valid(child):
                continue
            candidate = self.decode(child)
            if candidate != arch:
                return candidate
        raise RuntimeError(f"{self.name}: could not mutate {arch} in {max_tries} tries")

    def crossover(self, a: Any, b: Any, rng: np.random.Generator, max_tries: int = 100) -> Any:
        """Uniform crossover over decisions; falls back to parent ``a``."""
        da, db = self.encode(a), self.encode(b)
        for _ in range(max_tries):
            child = {k: (da[k] if rng.random() < 0.5 else db[k]) for k in da}
            if self.is_valid(child):
                return self.decode(child)
        return a

    def size(self) -> int:
        """Number of decision combinations (an upper bound on distinct archs)."""
        return int(np.prod([len(v) for v in self.decisions().values()], dtype=object))

    # --- analytic features ---------------------------------------------------------
    def features(self, arch: Any) -> dict[str, float]:
        """MACs, parameters and activation elements of one forward pass at batch 1; with a
        precision axis also ``int8_macs``, the MACs of the units that run in int8."""
        return _features_cached(self, str(arch))

    def example_input(self, arch: Any, batch_size: int = 1, seed: int = 0):
        import torch

        generator = torch.Generator().manual_seed(seed)
        return torch.randn(self.input_shape(arch, batch_size), generator=generator)

    # --- numeric precision (optional: spaces without a precision axis keep these) ----
    #: what precision decisions cover: ``layer``, ``stage``, ``suffix`` or ``ordered`` (:data:`GRANULARITIES`)
    precision_granularity: str = "layer"

    #: ``ordered`` granularity: unit names, least sensitive first (every layer slot and the head)
    precision_order: tuple[str, ...] = ()

    def _init_precision(self, precisions: Sequence[str], granularity: str,
                        order: Sequence[str] | None = None, slots: Sequence[int] = ()) -> None:
        """Validate and keep a space's ``precisions`` / ``precision_granularity`` /
        ``precision_order`` options; ``slots`` is the number of layer slots of each stage
        (the units an order may name are ``s<stage>.l<slot>`` and ``head``)."""
        self.precisions = check_precisions(precisions, self.name)
        if granularity not in GRANULARITIES:
            raise ValueError(f"{self.name} option 'precision_granularity' must be one of {list(GRANULARITIES)}, "
                             f"got {granularity!r}")
        self.precision_granularity = granularity
        if granularity != "ordered":
            if order is not None:
                raise ValueError(f"{self.name} option 'precision_order' needs precision_granularity: ordered "
                                 f"(got {granularity!r})")
            return
        if order is None:
            raise ValueError(f"{self.name} option 'precision_granularity: ordered' needs 'precision_order' (unit "
                             f"names, least sensitive first, as `hwnas quantize` prints them)")
        self.precision_order = complete_order(order, [f"s{s}.l{i}" for s, n in enumerate(slots) for i in range(n)]
                                              + ["head"], self.name)
        self._order_rank = {u: r for r, u in enumerate(self.precision_order)}

    @property
    def searches_precision(self) -> bool:
        return len(self.precisions) > 1

    def precision_options(self) -> dict[str, Any]:
        """The precision options for ``options()``: none for a float-only space, so it keeps
        the identity (and the caches keyed on it) it had before precision existed."""
        if not self.searches_precision:
            return {}
        options = {"precisions": list(self.precisions), "precision_granularity": self.precision_granularity}
        if self.precision_granularity == "ordered":
            options["precision_order"] = list(self.precision_order)
        return options

    def precision_decisions(self, stages: int, layers: int) -> dict[str, tuple]:
        """The precision decisions of ``stages`` stages of up to ``layers`` layers plus a head
        (none without a precision axis)."""
        if not self.searches_precision:
            return {}
        if self.precision_granularity == "suffix":
            return {"int8_from": (NO_INT8, *(f"s{s}" for s in range(stages)), "head")}
        if self.precision_granularity == "ordered":
            return {"int8_units": tuple(range(len(self.precision_order) + 1))}
        if self.precision_granularity == "stage":
            d = {f"s{s}_precision": self.precisions for s in range(stages)}
        else:
            d = {f"s{s}_l{i}_precision": self.precisions for s in range(stages) for i in range(layers)}
        return {**d, "head_precision": self.precisions}

    def decoded_precision(self, decisions: Mapping[str, Any], stage: int, layer: int) -> str:
        """The precision of ``layer`` of ``stage`` under ``decisions``."""
        if not self.searches_precision:
            return "fp32"
        if self.precision_granularity == "suffix":
            start = decisions["int8_from"]
            return "int8" if start not in (NO_INT8, "head") and stage >= int(start[1:]) else "fp32"
        if self.precision_granularity == "ordered":
            return self._ordered_precision(decisions, f"s{stage}.l{layer}")
        key = f"s{stage}_precision" if self.precision_granularity == "stage" else f"s{stage}_l{layer}_precision"
        return decisions[key]

    def decoded_head_precision(self, decisions: Mapping[str, Any]) -> str:
        if not self.searches_precision:
            return "fp32"
        if self.precision_granularity == "suffix":
            return "fp32" if decisions["int8_from"] == NO_INT8 else "int8"
        if self.precision_granularity == "ordered":
            return self._ordered_precision(decisions, "head")
        return decisions["head_precision"]

    def _ordered_precision(self, decisions: Mapping[str, Any], unit: str) -> str:
        return "int8" if self._order_rank[unit] < decisions["int8_units"] else "fp32"

    def encoded_precisions(self, layers: Sequence[Sequence[str | None]], head: str) -> dict[str, Any]:
        """The precision decisions of an arch whose stage ``s`` slot ``i`` has precision
        ``layers[s][i]`` (every slot; ``None`` where no layer runs: an inactive slot or a
        skip) and whose head has ``head``; a stage's precision is its first slot's (a
        stage's first layer always runs)."""
        if not self.searches_precision:
            return {}
        if self.precision_granularity == "ordered":
            ranks = [self._order_rank[f"s{s}.l{i}"] for s, stage in enumerate(layers)
                     for i, p in enumerate(stage) if p == "int8"]
            ranks += [self._order_rank["head"]] if head == "int8" else []
            # the smallest k that decodes to this arch (inactive units between give the same one)
            return {"int8_units": max(ranks) + 1 if ranks else 0}
        # a slot without a layer takes its stage's precision, so one arch has one encoding
        layers = [[p if p is not None else stage[0] for p in stage] for stage in layers]
        if self.precision_granularity == "suffix":
            first = next((s for s, stage in enumerate(layers) if stage[0] == "int8"), None)
            start = f"s{first}" if first is not None else ("head" if head == "int8" else NO_INT8)
            return {"int8_from": start}
        if self.precision_granularity == "stage":
            d = {f"s{s}_precision": stage[0] for s, stage in enumerate(layers)}
        else:
            d = {f"s{s}_l{i}_precision": p for s, stage in enumerate(layers) for i, p in enumerate(stage)}
        return {**d, "head_precision": head}

    def check_precision_pattern(self, layers: Sequence[Sequence[str | None]], head: str, text: str) -> None:
        """Refuse a parsed arch whose precisions this space cannot choose: ``layers[s][i]``
        is the precision of stage ``s``'s layer ``i`` (``None`` for a skip)."""
        if self.precision_granularity == "layer":
            return
        if self.precision_granularity == "ordered":
            found = {f"s{s}.l{i}": p for s, stage in enumerate(layers) for i, p in enumerate(stage) if p is not None}
            found["head"] = head
            ranked = sorted(found, key=self._order_rank.__getitem__)
            last_int8 = max((r for r, u in enumerate(ranked) if found[u] == "int8"), default=0)
            fp32 = [u for u in ranked[:last_int8] if found[u] == "fp32"]
            if fp32:
                raise ValueError(f"{self.name} arch {text!r}: unit {fp32[0]} is fp32 but {ranked[last_int8]}, later "
                                 f"in this space's precision_order, is int8 (precision_granularity: ordered "
                                 f"runs a prefix of the order in int8)")
            return
        stages = [{p for p in stage if p is not None} for stage in layers]
        for s, found in enumerate(stages):
            if len(found) > 1:
                raise ValueError(f"{self.name} arch {text!r}: stage {s} mixes precisions, but this space "
                                 f"chooses one per stage (precision_granularity: {self.precision_granularity})")
        if self.precision_granularity == "suffix":
            sequence = [next(iter(found)) for found in stages if found] + [head]
            if any(a == "int8" and b == "fp32" for a, b in zip(sequence, sequence[1:])):
                raise ValueError(f"{self.name} arch {text!r}: an fp32 stage or head after an int8 one, but "
                                 f"this space runs int8 from one stage on (precision_granularity: suffix)")

    def unit_name(self, stage: int, layer: int) -> str:
        """The precision unit ``layer`` of ``stage`` belongs to."""
        return f"s{stage}.l{layer}" if self.per_layer_units else f"s{stage}"

    @property
    def per_layer_units(self) -> bool:
        """Whether each layer is a precision unit (else each stage is)."""
        return self.precision_granularity in ("layer", "ordered")

    def check_assignment(self, arch: Any, precisions: Mapping[str, str]) -> None:
        """Refuse units ``arch`` does not have and precisions the space does not offer (a
        suffix space also checks the result, :meth:`staged_with_precisions`)."""
        units = self.precision_units(arch)
        unknown = sorted(set(precisions) - set(units))
        if unknown:
            raise ValueError(f"{self.name}: unknown precision units {unknown}; this arch has {list(units)}")
        bad = {u: p for u, p in precisions.items() if p not in self.precisions}
        if bad:
            raise ValueError(f"{self.name}: precisions {bad} not in this space's {list(self.precisions)}")

    def staged_with_precisions(self, arch: Any, precisions: Mapping[str, str],
                               takes_precision: Callable[[Any], bool] = lambda layer: True) -> Any:
        """:meth:`with_precisions` for archs holding ``stages`` of layers with a ``precision``
        field and a ``head_precision`` (mbv3, mobiledet); layers ``takes_precision`` rejects (a
        skip) stay as they are.  The variant is refused when the space cannot choose its
        precisions (a suffix space and an int8 unit before an fp32 one)."""
        self.check_assignment(arch, precisions)
        stages = tuple(tuple(replace(layer, precision=precisions.get(self.unit_name(s, i), layer.precision))
                             if takes_precision(layer) else layer for i, layer in enumerate(stage))
                       for s, stage in enumerate(arch.stages))
        variant = replace(arch, stages=stages, head_precision=precisions.get("head", arch.head_precision))
        if self.searches_precision:
            self.check_precision_pattern([[layer.precision if takes_precision(layer) else None for layer in stage]
                                          for stage in variant.stages], variant.head_precision, str(variant))
        return variant

    def precision_units(self, arch: Any) -> dict[str, PrecisionUnit]:
        """The units whose precision ``arch`` chooses, in network order (default: none,
        the network runs in the runner's dtype)."""
        return {}

    def with_precisions(self, arch: Any, precisions: Mapping[str, str]) -> Any:
        """``arch`` with the named units set to the given precisions (``hwnas quantize``
        assigns them); units not named keep theirs."""
        if precisions:
            raise ValueError(f"space {self.name!r} has no precision axis (units asked: {sorted(precisions)})")
        return arch

    def int8_modules(self, arch: Any) -> tuple[str, ...]:
        """Module paths of the units ``arch`` runs in int8 (empty: a float network)."""
        return tuple(m for unit in self.precision_units(arch).values() if unit.precision == "int8"
                     for m in unit.modules)

    def float_arch(self, arch: Any) -> Any:
        """``arch`` with every unit in fp32: the network whose weights its precision
        variants share (trained once, quantized per variant)."""
        return self.with_precisions(arch, {u: "fp32" for u in self.precision_units(arch)})

    def export_extras(self, model, arch: Any, folder) -> list:
        """Space-specific files ``hwnas export`` writes beside ``model.pt`` and
        ``model.onnx`` (for example a config that rebuilds the model without
        hwnas); returns their paths.  Default: none."""
        return []

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    # spaces are compared by name + options so caches keyed on them are safe
    def _key(self) -> tuple:
        return (self.name, repr(sorted(self.options().items())))

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self._key() == other._key()


@functools.lru_cache(maxsize=4096)
def _features_cached(space: SearchSpace, arch_text: str) -> dict[str, float]:
    # features counts with torch hooks; imported here so parsing and sampling never load torch
    from search_spaces.features import count_features, layer_costs

    arch = space.parse(arch_text)
    model, example = space.build(arch), space.example_input(arch)
    layers = layer_costs(model, example)
    features = count_features(model, example, layers)
    if space.precision_units(arch):
        # how much of the work runs on int8 kernels: predictors must never see an int8 and
        # an fp32 variant of one network as the same input
        modules = space.int8_modules(arch)
        inside = tuple(m + "." for m in modules)
        features["int8_macs"] = float(sum(c.macs for c in layers if c.name in modules or c.name.startswith(inside)))
    return features


def split_tokens(text: str, sep: str, what: str) -> list[str]:
    """Split and reject empty pieces with a message that shows where they are."""
    parts = text.split(sep)
    if any(p == "" for p in parts):
        raise ValueError(f"empty {what} in {text!r} (stray {sep!r}?)")
    return parts


def check_precisions(values: Sequence[str], space: str) -> tuple[str, ...]:
    """A space's ``precisions`` option, validated: known names, fp32 among them."""
    values = tuple(str(v) for v in values)
    for value in values:
        if value in NOT_OFFERED:
            raise ValueError(f"{space} option 'precisions': {NOT_OFFERED[value]}")
    unknown = [v for v in values if v not in PRECISIONS]
    if unknown or "fp32" not in values or len(set(values)) != len(values):
        raise ValueError(f"{space} option 'precisions' must list distinct values of {list(PRECISIONS)} "
                         f"including 'fp32', got {list(values)}")
    return values


def complete_order(order: Sequence[str], units: Sequence[str], space: str) -> tuple[str, ...]:
    """A ``precision_order`` option, validated against the space's ``units`` (every layer
    slot and the head, in network order).  Units it leaves out follow the named ones in
    network order: an order measured on one network (``hwnas quantize``) names only the
    layers that network has, and slots it lacks are treated as the most sensitive."""
    if isinstance(order, str) or not isinstance(order, Sequence):
        raise ValueError(f"{space} option 'precision_order' must be a list of unit names, got {order!r}")
    order = [str(u) for u in order]
    unknown = [u for u in order if u not in units]
    if unknown:
        raise ValueError(f"{space} option 'precision_order': unknown unit {unknown[0]!r}; units are "
                         f"s<stage>.l<layer> ({units[0]} .. {units[-2]}) and head")
    repeated = sorted({u for u in order if order.count(u) > 1})
    if repeated:
        raise ValueError(f"{space} option 'precision_order' names {repeated[0]!r} more than once")
    return (*order, *(u for u in units if u not in order))


def split_precision(token: str, allowed: Sequence[str], where: str = "") -> tuple[str, str]:
    """``("ir_k3_e4", "int8")`` for ``ir_k3_e4_int8``; a token without a precision suffix
    is fp32.  fp32 is never written (one canonical string per arch)."""
    head, sep, tail = token.rpartition("_")
    if sep and tail in NOT_OFFERED:
        raise ValueError(f"bad token {token!r}{where}: {NOT_OFFERED[tail]}")
    if not sep or tail not in PRECISIONS:
        return token, "fp32"
    if tail == "fp32":
        raise ValueError(f"bad token {token!r}{where}: fp32 is the default and is written without a suffix")
    if tail not in allowed:
        raise ValueError(f"bad token {token!r}{where}: precision {tail!r} not in this space's precisions "
                         f"{list(allowed)}")
    return head, tail


def precision_suffix(precision: str) -> str:
    return "" if precision == "fp32" else f"_{precision}"


def parse_choice(token: str, prefix: str, allowed: Sequence, cast=int, where: str = "") -> Any:
    """Parse ``prefix<value>`` and check ``value`` is allowed; errors name the token."""
    if not token.startswith(prefix):
        raise ValueError(f"bad token {token!r}{where}: expected {prefix}<value>")
    raw = token[len(prefix):]
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"bad token {token!r}{where}: {raw!r} is not a {cast.__name__}") from None
    if value not in allowed:
        raise ValueError(
            f"bad token {token!r}{where}: {value} not in allowed values {list(allowed)}"
        )
    return value
