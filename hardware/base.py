"""The runner interface: how one architecture's latency is measured.

Lifecycle of a ``Runner`` (driven by :func:`hardware.protocol.measure`)::

    runner = RUNNERS.get(name)(**options)
    fp = runner.fingerprint(input_shape)        # what the numbers mean
    handle = runner.prepare(model, example)     # export / compile / load, once
    ms = runner.time(handle, iterations)        # mean ms per forward, many times
    runner.release(handle)

Runners only time; warm-up, interleaving and statistics live in one place,
the protocol, so every backend gets the same noise handling.
"""
from __future__ import annotations

import abc
import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Any


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


class Runner(abc.ABC):
    """Measures latency of a ``torch.nn.Module`` on one backend."""

    name: str = ""
    #: models a runner can hold prepared at once (memory bound for interleaving)
    max_prepared: int = 16

    def __init__(self, threads: int = 1, batch_size: int = 1, dtype: str = "float32"):
        if int(threads) < 1:
            raise ValueError(f"runner {self.name!r}: threads must be >= 1, got {threads}")
        if int(batch_size) < 1:
            raise ValueError(f"runner {self.name!r}: batch_size must be >= 1, got {batch_size}")
        self.threads = int(threads)
        self.batch_size = int(batch_size)
        self.dtype = dtype

    @abc.abstractmethod
    def fingerprint(self) -> Fingerprint:
        """Identity of the measurement conditions (stable across runs on the same setup)."""

    @abc.abstractmethod
    def prepare(self, model, example) -> Any:
        """Turn ``model`` into something ``time`` can run repeatedly on ``example``."""

    @abc.abstractmethod
    def time(self, handle: Any, iterations: int) -> float:
        """Run ``iterations`` forwards back to back; return mean milliseconds per forward."""

    def release(self, handle: Any) -> None:
        """Free what ``prepare`` allocated (default: let the GC do it)."""
