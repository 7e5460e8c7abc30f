"""Pluggable objective sources: where a candidate's numbers come from.

A recipe's ``latency:`` and ``accuracy:`` sections are each one mapping in
which exactly one key names a registered source kind; that key's value is the
*spec* (a runner name, a checkpoint path, a dataset) and the other keys are the
source's options, e.g.::

    latency:  {runner: onnxruntime, threads: 1, batch_size: 1}
    latency:  {predictor: ckpt/nb201.pt}
    accuracy: {train: digits, epochs: 2}
    accuracy: {table: ../shared/data/nb201/accuracy.csv, column: cifar10}

Lifecycle of a source::

    source = LATENCY_SOURCES.get(kind).from_recipe(spec, options, ctx)
    source.metrics                       # {"latency_ms": "minimize", ...}
    source.fingerprint()                 # JSON-able identity, cached results key on it
    source.evaluate(archs) -> [ {metric: value}, ... ]   # one dict per arch, same order

Sources evaluate *batches* so runners can interleave timing rounds across the
batch, and so caches can be consulted once per batch.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas.registry import Registry

MINIMIZE, MAXIMIZE = "minimize", "maximize"


@dataclass
class RunContext:
    """What a source may need besides its own options."""

    space: Any  # search_spaces.SearchSpace
    store: Any  # hardware.store.MeasurementStore
    run_dir: Path
    seed: int = 0
    base_dir: Path = Path(".")  # relative paths in a recipe resolve against this
    progress: bool = True

    def resolve_path(self, value: str | Path) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)


class ObjectiveSource(abc.ABC):
    kind: str = ""
    metrics: Mapping[str, str] = {}

    @classmethod
    @abc.abstractmethod
    def from_recipe(cls, spec: Any, options: Mapping[str, Any], ctx: RunContext) -> "ObjectiveSource":
        """Build from a recipe section; raise ``ValueError`` naming a bad option."""

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-able identity of what this source computes."""

    @abc.abstractmethod
    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        """One metrics dict per arch, in order."""

    def close(self) -> None:
        """Release resources (sessions, servers)."""


class LatencySource(ObjectiveSource):
    metrics = {"latency_ms": MINIMIZE}


class AccuracySource(ObjectiveSource):
    metrics = {"accuracy": MAXIMIZE}


LATENCY_SOURCES: Registry[type[LatencySource]] = Registry("latency source")
ACCURACY_SOURCES: Registry[type[AccuracySource]] = Registry("accuracy source")


def reject_unknown(options: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def split_section(section: Mapping[str, Any], registry: Registry, where: str) -> tuple[str, Any, dict]:
    """Find the one key of ``section`` that names a source kind."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(section).__name__}")
    kinds = [k for k in section if k in registry]
    if len(kinds) != 1:
        raise ValueError(f"{where} must have exactly one of the keys {registry.names()}, "
                         f"got {sorted(section)}")
    kind = kinds[0]
    options = {k: v for k, v in section.items() if k != kind}
    return kind, section[kind], options


def make_source(section: Mapping[str, Any], registry: Registry, ctx: RunContext, where: str):
    load_builtin_sources()
    kind, spec, options = split_section(section, registry, where)
    try:
        return registry.get(kind).from_recipe(spec, options, ctx)
    except ValueError as exc:
        raise ValueError(f"{where}.{kind}: {exc}") from None


def make_progress(total: int, description: str, enabled: bool = True):
    """A tqdm bar (disabled when not wanted) used by every long-running source."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False, dynamic_ncols=True)


def load_builtin_sources() -> None:
    """Import the modules that register built-in sources (lazily: they pull in torch)."""
    import importlib

    for module in BUILTIN_SOURCE_MODULES:
        importlib.import_module(module)


#: modules whose import registers sources; features append theirs here
BUILTIN_SOURCE_MODULES = [
    "nas.latency",
    "nas.accuracy",
    "hardware.slm_latency",
    "nas.lm_accuracy",
    "hardware.device_source",
    "nas.supernet.source",
    "predictors.source",
    "nas.table_accuracy",
]
