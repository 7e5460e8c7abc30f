"""The ``runner`` latency source: real measurements through a registered runner.

``latency: {runner: onnxruntime, threads: 1, batch_size: 1, rounds: 5}``

Keys other than the protocol's and ``device`` go to the runner's constructor.
Results are cached in the measurement store under the runner's fingerprint
plus the protocol, so a resumed or repeated search never re-measures.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from typing import Any, Mapping, Sequence

import numpy as np

from hardware.protocol import Candidate, Protocol, measure
from nas.sources import LATENCY_SOURCES, MINIMIZE, LatencySource, RunContext, make_progress

PROTOCOL_KEYS = tuple(f.name for f in fields(Protocol))


def space_key(space) -> str:
    """Store column for a space: its name plus the options that change built networks."""
    opts = space.network_options()
    return space.name if not opts else f"{space.name}{json.dumps(opts, sort_keys=True)}"


def source_key(payload: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunnerLatency(LatencySource):
    kind = "runner"
    metrics = {"latency_ms": MINIMIZE}

    def __init__(self, runner, protocol: Protocol, ctx: RunContext, device: str | None = None):
        self.runner = runner
        self.protocol = protocol
        self.ctx = ctx
        self.device = device
        self.key = source_key(self.fingerprint())
        ctx.store.register_source(self.key, self.fingerprint())
        if device:
            ctx.store.register_device(device, self.key, self.fingerprint())
        #: architectures this process measured (not served from the store)
        self.measured: list[str] = []

    @classmethod
    def from_recipe(cls, spec: Any, options: Mapping[str, Any], ctx: RunContext) -> "RunnerLatency":
        from hardware import make_runner

        if not isinstance(spec, str):
            raise ValueError(f"runner must be a runner name, got {spec!r}")
        options = dict(options)
        device = options.pop("device", None)
        protocol = Protocol(**{k: options.pop(k) for k in PROTOCOL_KEYS if k in options})
        return cls(make_runner(spec, **options), protocol, ctx, device)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.runner.fingerprint().to_dict(), "protocol": asdict(self.protocol)}

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        space, store = self.ctx.space, self.ctx.store
        skey = space_key(space)
        texts = [str(a) for a in archs]
        cached = store.get_many(self.key, skey, texts)
        missing = {t: a for t, a in zip(texts, archs) if t not in cached}
        if missing:
            batch = self.runner.batch_size
            candidates = [Candidate(t, lambda a=a: (space.build(a), space.example_input(a, batch)))
                          for t, a in missing.items()]
            # seeded by the batch content so a resumed run shuffles identically
            rng = np.random.default_rng(int(source_key({"archs": sorted(missing)}), 16) % 2**32)
            with make_progress(len(candidates), "measuring", self.ctx.progress) as bar:
                results = measure(self.runner, candidates, self.protocol, rng, progress=bar.update)
            new = {t: m.to_metrics() for t, m in results.items()}
            store.put_many(self.key, skey, new)
            self.measured.extend(new)
            cached.update(new)
        return [cached[t] for t in texts]


LATENCY_SOURCES.register("runner", RunnerLatency)
