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
"""
from __future__ import annotations

import abc
import functools
from typing import Any, Mapping, Sequence

import numpy as np

Decisions = dict[str, Any]


class SearchSpace(abc.ABC):
    #: registry name, set by subclasses
    name: str = ""
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

    def sample(self, rng: np.random.Generator, max_tries: int = 1000) -> Any:
        choices = self.decisions()
        for _ in range(max_tries):
            picked = {k: v[int(rng.integers(len(v)))] for k, v in choices.items()}
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
        """MACs, parameters and activation elements of one forward pass at batch 1."""
        return _features_cached(self, str(arch))

    def example_input(self, arch: Any, batch_size: int = 1, seed: int = 0):
        import torch

        generator = torch.Generator().manual_seed(seed)
        return torch.randn(self.input_shape(arch, batch_size), generator=generator)

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
    from search_spaces.features import count_features

    arch = space.parse(arch_text)
    return count_features(space.build(arch), space.example_input(arch))


def split_tokens(text: str, sep: str, what: str) -> list[str]:
    """Split and reject empty pieces with a message that shows where they are."""
    parts = text.split(sep)
    if any(p == "" for p in parts):
        raise ValueError(f"empty {what} in {text!r} (stray {sep!r}?)")
    return parts


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
