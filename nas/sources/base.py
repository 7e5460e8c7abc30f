"""The objective-source contract: where a candidate's numbers come from.

A recipe's ``latency:`` and ``accuracy:`` sections are each one mapping in
which exactly one key names a registered source kind; that key's value is the
*spec* (a runner name, a checkpoint path, a dataset) and the other keys are the
source's options, e.g.::

    latency:  {runner: onnxruntime, threads: 1, batch_size: 1}
    latency:  {predictor: ckpt/nb201.npz}
    accuracy: {train: digits, epochs: 2}
    accuracy: {table: ../shared/data/nb201/accuracy.csv, column: cifar10}

Lifecycle of a source::

    cls, options = parse_source(section, REGISTRY, where, base_dir)   # pure: types checked,
                                                                       # paths made absolute
    source = cls(options, ctx)            # may open files, bind a device name in the store
    source.metrics                        # {"latency_ms": "minimize", ...}
    source.fingerprint()                  # JSON-able identity, cached results key on it
    source.evaluate(archs) -> [ {metric: value}, ... ]   # one dict per arch, same order
    source.close()

Each source class declares ``Options``, a dataclass parsed by the recipe's own
section parser (:func:`nas.options.parse_section`), so a bad value is one
key-naming line before anything is written.  The spec is the field named
``spec_field`` (default: the kind itself).

Optional capabilities have do-nothing defaults here (as Optuna's
``BaseSampler`` hooks do), so callers never probe with ``getattr``:
``measured`` (archs this process measured), ``remeasure`` (measure
archs again on the device, in one batch), ``trained_model`` (weights for export)
and ``calibration_inputs`` (data for int8 quantization at export).

:class:`CachedSource` owns "look up the store, compute what is missing, store
it" for every source whose results are worth keeping.  Sources evaluate
*batches* so runners can interleave timing rounds across the batch, and so the
store is consulted once per batch.
"""
from __future__ import annotations

import abc
import functools
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

from tqdm.auto import tqdm

from hardware.protocol import Protocol
from hardware.quantize import INT8_SCHEME
from hardware.store import MeasurementStore, source_key, space_key
from nas.options import RecipeError, option_fields, parse_section, resolve_paths
from nas.registry import Registry
from search_spaces import SearchSpace

_log = logging.getLogger(__name__)

MINIMIZE, MAXIMIZE = "minimize", "maximize"


def int8_identity(space: SearchSpace, scheme: str = INT8_SCHEME) -> dict[str, str]:
    """What a source's fingerprint adds when ``space`` runs layers in int8: the quantization
    ``scheme``, so results of int8 networks never outlive the scheme that made them
    (float-only spaces add nothing and keep the keys their stored results have)."""
    return {"int8_scheme": scheme} if space.searches_precision else {}


@dataclass
class RunContext:
    """What a source may need besides its own options."""

    space: SearchSpace
    store: MeasurementStore
    run_dir: Path
    seed: int = 0
    #: relative paths given to ``from_recipe`` resolve against this
    base_dir: Path = Path(".")
    progress: bool = True


class ObjectiveSource(abc.ABC):
    kind: ClassVar[str] = ""
    metrics: ClassVar[Mapping[str, str]] = {}
    #: the options dataclass; its field ``spec_field`` holds the section's spec
    Options: ClassVar[type]
    #: the Options field that receives the value of the section's kind key
    spec_field: ClassVar[str | None] = None
    #: whether an evaluation costs next to nothing (a lookup or a prediction, not a
    #: measurement or a training): ``search.screen`` evaluates a cheap latency source
    #: on many candidates and sends only the promising ones to the accuracy source
    cheap: ClassVar[bool] = False

    def __init__(self, options: Any, ctx: RunContext):
        self.options = options
        self.ctx = ctx

    # --- options ----------------------------------------------------------------------
    @classmethod
    def spec_name(cls) -> str:
        return cls.spec_field or cls.kind

    @classmethod
    def parse_options(cls, section: Mapping[str, Any], where: str, prefix: str, base_dir: Path) -> Any:
        """The section (kind key included) as ``cls.Options``, paths made absolute against
        ``base_dir``; errors name ``where: <prefix><key>``."""
        options = parse_section(cls.Options, section, where, prefix, keys={cls.spec_name(): cls.kind})
        return resolve_paths(options, base_dir)

    @classmethod
    def section(cls, options: Any) -> dict[str, Any]:
        """The resolved section (absolute paths, defaults filled in): parsing it again gives
        ``options`` back."""
        out = {cls.kind: getattr(options, cls.spec_name())}
        out.update({f.name: getattr(options, f.name) for f in option_fields(options) if f.name != cls.spec_name()})
        return out

    @classmethod
    def secret_keys(cls, options: Any) -> list[str]:
        """Keys of :meth:`section` that hold secrets, never written to disk."""
        return [f.name for f in option_fields(options) if f.metadata.get("secret")]

    @classmethod
    def from_recipe(cls, spec: Any, options: Mapping[str, Any], ctx: RunContext) -> "ObjectiveSource":
        """Parse ``{kind: spec, **options}`` (paths against ``ctx.base_dir``) and build."""
        parsed = cls.parse_options({cls.kind: spec, **options}, f"{cls.kind} source", "", ctx.base_dir)
        return cls(parsed, ctx)

    @classmethod
    def metrics_of(cls, options: Any) -> Mapping[str, str]:
        """The metrics a source built from ``options`` provides (metric -> direction), known
        before it is built, so a recipe's objectives are checked before anything is written.
        Sources whose metrics depend on what they load (a checkpoint, an onboarded device)
        override it and set the same mapping as ``self.metrics``."""
        return cls.metrics

    # --- what every source provides -----------------------------------------------------
    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-able identity of what this source computes."""

    @abc.abstractmethod
    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        """One metrics dict per arch, in order."""

    # --- optional capabilities (do-nothing defaults) --------------------------------
    @property
    def measured(self) -> list[str]:
        """Canonical strings this process computed (not served from the store)."""
        return []

    def remeasure(self, archs: Sequence[Any]) -> list[dict[str, float]] | None:
        """Measure ``archs`` again on the target device, all together in one fresh
        interleaved batch (never served from the store): the end-of-search check that the
        front is measured truth, whether its values were predicted or timed in batches at
        other moments.  ``None`` when this source reaches no device (a shipped predictor,
        a table)."""
        return None

    def constraint_warning(self, constraints: Mapping[str, float]) -> str | None:
        """A warning when the recipe's ``search.constraints`` do not mean what they say
        for this source's values (an absolute budget on an un-adapted predictor's ms);
        ``None`` when there is nothing to warn about.  The search logs it at start."""
        return None

    def int8_weights(self) -> str | None:
        """The weight scales (:data:`hardware.quantize.WEIGHT_GRANULARITIES`) of the int8
        layers this source times or scores, or ``None`` when it quantizes nothing (a
        predictor, a table); the search refuses a latency and an accuracy source that
        quantize differently."""
        return None

    def trained_model(self, arch: Any):
        """The candidate with the weights whose accuracy was estimated, or ``None``
        when this source has no weights (export then writes the initialisation)."""
        return None

    def calibration_inputs(self, arch: Any) -> list | None:
        """Input batches (numpy) that int8 quantization of ``arch`` calibrates on: the seeded
        training slice this source's own int8 estimates used, or ``None`` when it has no
        data (export then calibrates on synthetic inputs and says so)."""
        return None

    def close(self) -> None:
        """Release resources (sessions, servers)."""


class LatencySource(ObjectiveSource):
    metrics = {"latency_ms": MINIMIZE}


class AccuracySource(ObjectiveSource):
    metrics = {"accuracy": MAXIMIZE}


class CachedSource(ObjectiveSource):
    """A source whose results are kept in the measurement store, keyed by the source's
    fingerprint, the space and the canonical arch string: nothing is computed twice.

    Subclasses implement :meth:`compute`, which yields ``{arch: metrics}`` chunks;
    each chunk is stored in one transaction as soon as it is yielded, so a killed
    process loses at most the chunk it was computing."""

    def __init__(self, options: Any, ctx: RunContext):
        super().__init__(options, ctx)
        self._computed: list[str] = []

    @functools.cached_property
    def key(self) -> str:
        """The store's source key: a hash of the fingerprint."""
        key = source_key(self.fingerprint())
        self.ctx.store.register_source(key, self.fingerprint())
        return key

    def check(self, archs: Sequence[Any]) -> None:
        """Refuse archs this source cannot evaluate (before anything is looked up)."""

    @abc.abstractmethod
    def compute(self, todo: Mapping[str, Any]) -> Iterator["Chunk"]:
        """Compute the metrics of ``{canonical string: arch}``; yield them in chunks."""

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        """Stored results, and the missing ones computed once across every process that
        shares the store: this process computes what it can claim and waits for the rows
        of what others are computing (taking over a claim whose owner stopped renewing)."""
        self.check(archs)
        store, skey = self.ctx.store, space_key(self.ctx.space)
        texts = [str(a) for a in archs]
        by_text = dict(zip(texts, archs))
        results = store.get_many(self.key, skey, texts)
        waits = 0
        while missing := [t for t in by_text if t not in results]:
            mine = store.claim(self.key, skey, missing)
            # a row may have landed between the lookup and the claim: never compute it again
            landed = store.get_many(self.key, skey, mine)
            if landed:
                store.release(self.key, skey, list(landed))
                results.update(landed)
            todo = {t: by_text[t] for t in mine if t not in landed}
            if todo:
                self._compute_claimed(todo, results)
                if lost := [t for t in todo if t not in results]:
                    raise RuntimeError(f"the {self.kind} source computed no result for {len(lost)} "
                                       f"architecture(s), e.g. {lost[0]}")
                continue
            if any(t not in results for t in missing):
                # others hold the rest: poll for their rows; each claim ends with its row or its lease
                time.sleep(min(WAIT_POLL_S * 2 ** min(waits, 4), store.lease_s / 3))
                waits += 1
                results.update(store.get_many(self.key, skey, missing))
        return [results[t] for t in texts]

    def _compute_claimed(self, todo: dict[str, Any], results: dict[str, dict[str, float]]) -> None:
        store, skey = self.ctx.store, space_key(self.ctx.space)
        done: set[str] = set()
        try:
            with store.renewing_claims():
                for chunk in self.compute(todo):
                    store.put_many(self.key, skey, chunk.results, chunk.meta, chunk.reliable)
                    results.update(chunk.results)
                    done.update(chunk.results)
                    self._computed.extend(chunk.results)
        finally:
            # unfinished work goes back at once (an error, Ctrl-C), not after a lease
            if unfinished := [t for t in todo if t not in done]:
                store.release(self.key, skey, unfinished)

    @property
    def measured(self) -> list[str]:
        return list(self._computed)


@dataclass
class Chunk:
    """Results a :class:`CachedSource` computed together, stored in one transaction."""

    results: dict[str, dict[str, float]]
    #: how they were obtained (machine load, anchor drift, times), kept beside each row
    meta: dict[str, Any] = field(default_factory=dict)
    #: False: kept for inspection, never served from the store as a fact
    reliable: bool = True


def batch_seed(texts) -> int:
    """A seed drawn from a batch's content, so a resumed run shuffles identically."""
    return int(source_key({"archs": sorted(texts)}), 16) % 2**32


#: first pause while other workers compute what this one needs (doubling up to 16x)
WAIT_POLL_S = 0.2

PROTOCOL_KEYS = tuple(f.name for f in fields(Protocol))


def pop_protocol(data: dict[str, Any], where: str, prefix: str, defaults: Protocol = Protocol()) -> Protocol:
    """Remove the timing protocol's keys (``rounds``, ``repeats``, ...) from a measuring
    source's section and parse them, over ``defaults``."""
    given = {k: data.pop(k) for k in PROTOCOL_KEYS if k in data}
    return parse_section(Protocol, {**asdict(defaults), **given}, where, prefix)


class StatusLines:
    """:func:`make_progress`'s stand-in off a terminal: one plain log line per update
    (a batch, in the sources) instead of a bar, so redirected output and ``run.log``
    get readable ``measuring: 8/16`` lines rather than carriage returns and escape codes."""

    def __init__(self, total: int, description: str):
        self.total, self.description, self.n = total, description, 0
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        if n:
            _log.info("%s: %d/%d%s", self.description, self.n, self.total, self.postfix)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = " (" + ", ".join(f"{k}={v}" for k, v in items.items()) + ")" if items else ""

    def close(self) -> None:
        pass

    def __enter__(self) -> "StatusLines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_progress(total: int, description: str, enabled: bool = True):
    """The progress display of every long-running source: a tqdm bar when ``enabled``
    and stderr is a terminal, else :class:`StatusLines` (``--no-progress`` drops the bar,
    not the status: a long run must not stay silent until the end)."""
    if enabled and sys.stderr.isatty():
        return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)
    return StatusLines(total, description)


LATENCY_SOURCES: Registry[type[LatencySource]] = Registry("latency source")
ACCURACY_SOURCES: Registry[type[AccuracySource]] = Registry("accuracy source")


def parse_source(section: Mapping[str, Any], registry: Registry, where: str, name: str,
                 base_dir: Path = Path(".")) -> tuple[type[ObjectiveSource], Any]:
    """``(source class, parsed options)`` of the recipe section ``name`` (``latency`` or
    ``accuracy``) of file ``where``; raises :class:`RecipeError` naming the file and the
    key.  Pure: nothing is opened or written."""
    if not isinstance(section, Mapping):
        raise RecipeError(f"{where}: {name}: expected a mapping, got {type(section).__name__}")
    kinds = [k for k in section if k in registry]
    if len(kinds) != 1:
        raise RecipeError(f"{where}: {name}: must have exactly one of the keys {registry.names()}, "
                          f"got {sorted(section)}")
    cls = registry.get(kinds[0])
    return cls, cls.parse_options(section, where, f"{name}.", base_dir)


def make_source(section: Mapping[str, Any], registry: Registry, ctx: RunContext, name: str,
                where: str = "<recipe>") -> ObjectiveSource:
    """Parse and build the source of one recipe section."""
    cls, options = parse_source(section, registry, where, name, ctx.base_dir)
    return cls(options, ctx)
