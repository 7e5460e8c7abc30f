"""The ``slm`` latency source: prefill latency, per-token decode latency and
cache memory of ``hybrid_slm`` language models, measured with PyTorch.

``latency: {slm: cpu, threads: 1, batch_size: 1, prompt_len: 128, context_len: 1024}``

Metrics (all minimized): ``prefill_ms``, ``decode_ms``, ``memory_mb``; see
:mod:`hardware.slm_latency` for what each one times.  Results are cached in
the run's measurement store, keyed on the fingerprint.  The spec is the
device: ``cpu`` or ``cuda`` (timed with synchronisation); ``device_name``
optionally binds a name to these conditions in the store, and the protocol's
keys (``rounds``, ``repeats``, ``warmup``, ``target_ms``, ``max_iterations``)
tune the timing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from hardware.protocol import Candidate, Protocol
from hardware.slm_latency import DEFAULT_PROTOCOL, DEVICES, SLMTimer, cache_memory_mb
from hardware.store import space_key
from nas.sources.base import (LATENCY_SOURCES, MINIMIZE, CachedSource, Chunk, LatencySource, RunContext, batch_seed,
                              make_progress, pop_protocol)


@dataclass(frozen=True)
class SLMLatencyOptions:
    #: the device: ``cpu`` or ``cuda``
    slm: str = "cpu"
    threads: int = 1
    batch_size: int = 1
    prompt_len: int = 128
    context_len: int = 1024
    #: a device name bound to these measurement conditions in the store
    device_name: str | None = None
    #: parsed from the section's protocol keys (not a nested mapping)
    protocol: Protocol = field(default=DEFAULT_PROTOCOL, metadata={"internal": True})

    def __post_init__(self):
        if self.slm not in DEVICES:
            raise ValueError(f"slm device must be one of {list(DEVICES)}, got {self.slm!r}")
        for label in ("threads", "batch_size", "prompt_len", "context_len"):
            if getattr(self, label) < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {getattr(self, label)!r}")


class SLMLatency(CachedSource, LatencySource):
    kind = "slm"
    metrics = {"prefill_ms": MINIMIZE, "decode_ms": MINIMIZE, "memory_mb": MINIMIZE}
    Options = SLMLatencyOptions

    def __init__(self, options: SLMLatencyOptions, ctx: RunContext):
        super().__init__(options, ctx)
        if options.slm == "cuda":
            import torch  # only this device choice needs torch before the first measurement

            if not torch.cuda.is_available():
                raise ValueError("slm device 'cuda' requested but torch sees no CUDA device")
        self.device, self.protocol = options.slm, options.protocol
        self.batch_size, self.context_len = options.batch_size, options.context_len
        common = dict(device=options.slm, threads=options.threads, batch_size=options.batch_size,
                      prompt_len=options.prompt_len, context_len=options.context_len,
                      room=self.protocol.max_iterations, seed=ctx.seed)
        self.timers = {"prefill": SLMTimer("prefill", **common), "decode": SLMTimer("decode", **common)}
        if options.device_name:
            ctx.store.register_device(options.device_name, self.key, self.fingerprint())

    @classmethod
    def parse_options(cls, section: Mapping[str, Any], where: str, prefix: str, base_dir: Path):
        data = dict(section)
        protocol = pop_protocol(data, where, prefix, DEFAULT_PROTOCOL)
        return replace(super().parse_options(data, where, prefix, base_dir), protocol=protocol)

    @classmethod
    def section(cls, options: SLMLatencyOptions) -> dict[str, Any]:
        return {**super().section(options), **asdict(options.protocol)}

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind,
                **{phase: t.fingerprint().to_dict() for phase, t in self.timers.items()},
                "protocol": asdict(self.protocol), "memory": "weights+cache_at_context"}

    def compute(self, todo: Mapping[str, Any]) -> Iterator[Chunk]:
        yield Chunk(self.measure(todo))

    def remeasure(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        """Measure ``archs`` again, together (never served from the store).  Rows the store
        lacks are filled (an onboarded device's predicted archs); stored rows stay the
        cached fact, and this measurement is a check reported beside the front."""
        todo = {str(a): a for a in archs}
        results = self.measure(todo)
        skey = space_key(self.ctx.space)
        stored = self.ctx.store.get_many(self.key, skey, list(todo), reliable_only=False)
        if missing := {t: m for t, m in results.items() if t not in stored}:
            self.ctx.store.put_many(self.key, skey, missing, {}, True)
        return [results[t] for t in todo]

    def measure(self, archs: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        """Measure ``{canonical string: arch}``, bypassing the store."""
        models = {t: self.ctx.space.build(a) for t, a in archs.items()}
        for text, model in models.items():
            if not hasattr(model, "synthetic_cache"):
                raise ValueError(f"latency.slm: {self.ctx.space.name} builds {type(model).__name__} for "
                                 f"{text}, which has no decode cache; the slm source needs a token model "
                                 f"such as hybrid_slm's")
        seed = batch_seed(archs)
        results: dict[str, dict[str, float]] = {t: {} for t in archs}
        with make_progress(2 * len(archs), "measuring", self.ctx.progress) as bar:
            for phase, timer in self.timers.items():
                # seeded by the batch content so a resumed run shuffles identically
                rng = np.random.default_rng(seed)
                candidates = [Candidate(t, lambda t=t: (models[t], None)) for t in archs]
                for text, m in timer.measure_batch(candidates, self.protocol, rng, bar.update).items():
                    results[text][f"{phase}_ms"] = m.latency_ms
                    results[text][f"{phase}_spread"] = m.spread
        for text, model in models.items():
            results[text]["memory_mb"] = cache_memory_mb(model.cpu(), self.batch_size, self.context_len)
        return results


LATENCY_SOURCES.register("slm", SLMLatency)
