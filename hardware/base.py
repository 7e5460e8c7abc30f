"""The runner interface: how one architecture's latency is measured.

Every entry of ``RUNNERS`` is a :class:`Runner`::

    runner = RUNNERS.get(name)(**asdict(options))   # options: an instance of runner.Options
    fp = runner.fingerprint()                       # what the numbers mean
    results = runner.measure_batch(candidates, protocol, rng, progress)

Most runners time on this machine: they subclass :class:`TimedRunner` and
provide ``prepare``/``time``/``release``, and ``measure_batch`` runs
:func:`hardware.protocol.measure` over them::

    handle = runner.prepare(model, example)     # export / compile / load, once
    ms = runner.time(handle, iterations)        # mean ms per forward, many times
    runner.release(handle)

Timed runners only time; warm-up, interleaving and statistics live in one
place, the protocol, so every backend gets the same noise handling.  Runners
that time elsewhere (``remote``) override ``measure_batch`` and send the whole
batch to the device, which runs that same protocol.

Each runner class declares ``Options``: a frozen dataclass whose fields are
exactly its constructor's keyword arguments.  Recipes are parsed into it (so a
bad value is reported with its key before anything runs); a conformance test
holds every registered runner to that rule.
"""
from __future__ import annotations

import abc
import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from hardware.protocol import Candidate, Measurement, Protocol, measure
from hardware.quantize import int8_scheme
from hardware.timing import timing_lock


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Fingerprint:
    """Everything that changes what a latency number means."""

    runner: str
    device: str  # CPU model or accelerator name
    runtime: str  # e.g. "onnxruntime 1.32.0"
    threads: int
    batch_size: int
    dtype: str = "float32"
    extra: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra"] = dict(self.extra)
        return d

    @property
    def key(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return (f"{self.runner} on {self.device} ({self.runtime}, {self.threads} threads, "
                f"batch {self.batch_size}, {self.dtype})")


#: ``dataclasses.field`` metadata of options (read by the recipe parser, ``nas.options``):
#: an input path, made absolute against the recipe's folder
PATH = {"path": "always"}
#: a secret (a token): never written back to disk
SECRET = {"secret": True}


@dataclass(frozen=True)
class RunnerOptions:
    """Options every runner takes; runners with more subclass this."""

    threads: int = 1
    batch_size: int = 1
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("threads", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class Runner(abc.ABC):
    """Measures the latency of batches of candidate networks on one device."""

    name: str = ""
    Options: ClassVar[type] = RunnerOptions
    #: the weight scales and activation type of the int8 layers it times
    #: (:data:`hardware.quantize.WEIGHT_GRANULARITIES`, :data:`hardware.quantize.ACTIVATIONS`)
    int8_weights: str = "per_channel"
    int8_activations: str = "u8"
    #: wall-clock ``(start, end)`` of the last ``measure_batch``'s timing on this machine
    #: (inside the timing lock); ``None`` where the timing happens elsewhere
    timing_window: tuple[float, float] | None = None

    def __init__(self, threads: int = 1, batch_size: int = 1, dtype: str = "float32"):
        checked = RunnerOptions(int(threads), int(batch_size), dtype)
        self.threads, self.batch_size, self.dtype = checked.threads, checked.batch_size, checked.dtype

    def int8_scheme(self) -> str:
        """The name of the int8 scheme its int8 layers are quantized with."""
        return int8_scheme(self.int8_weights, self.int8_activations)

    @abc.abstractmethod
    def fingerprint(self) -> Fingerprint:
        """Identity of the measurement conditions (stable across runs on the same setup)."""

    @abc.abstractmethod
    def measure_batch(self, candidates: Sequence[Candidate], protocol: Protocol,
                      rng: np.random.Generator, progress: Callable[[int], None] | None = None
                      ) -> dict[str, Measurement]:
        """Measure every candidate under ``protocol``; ``progress(n)`` after each ``n`` done."""

    def close(self) -> None:
        """Release sessions and connections (default: nothing to release)."""


class TimedRunner(Runner):
    """A runner that times on this machine: the protocol drives ``prepare``/``time``."""

    #: models a runner can hold prepared at once (memory bound for interleaving)
    max_prepared: int = 16
    #: whether :meth:`prepare_int8` is implemented (the protocol refuses int8
    #: candidates up front otherwise)
    supports_int8: ClassVar[bool] = False

    def measure_batch(self, candidates: Sequence[Candidate], protocol: Protocol,
                      rng: np.random.Generator, progress: Callable[[int], None] | None = None
                      ) -> dict[str, Measurement]:
        # one timer per machine: another process timing now would distort both
        with timing_lock(what=f"{self.name} x{len(candidates)}"):
            start = time.time()
            try:
                return measure(self, candidates, protocol, rng, progress)
            finally:
                self.timing_window = (start, time.time())

    @abc.abstractmethod
    def prepare(self, model, example) -> Any:
        """Turn ``model`` into something ``time`` can run repeatedly on ``example``."""

    @abc.abstractmethod
    def time(self, handle: Any, iterations: int) -> float:
        """Run ``iterations`` forwards back to back; return mean milliseconds per forward."""

    def prepare_int8(self, model, example, int8_modules: tuple[str, ...]) -> Any:
        """Like :meth:`prepare`, with the modules ``int8_modules`` of the float ``model``
        quantized to int8 (runners with ``supports_int8``)."""
        raise ValueError(f"runner {self.name!r} has no int8 path")

    def release(self, handle: Any) -> None:
        """Free what ``prepare`` allocated (default: let the GC do it)."""
