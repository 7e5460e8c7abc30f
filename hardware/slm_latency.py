"""The ``slm`` latency source: prefill latency, per-token decode latency and
cache memory of ``hybrid_slm`` language models, measured with PyTorch.

``latency: {slm: cpu, threads: 1, batch_size: 1, prompt_len: 128, context_len: 1024}``

Metrics (all minimized):

* ``prefill_ms``: one forward over a ``prompt_len``-token prompt (time to first token);
* ``decode_ms``: one cached decode step with ``context_len`` tokens already in
  the cache, at ``batch_size`` sequences;
* ``memory_mb``: weights plus the decode cache/state at ``context_len`` and
  ``batch_size`` (KV cache for attention layers, fixed-size state for
  Mamba2/DeltaNet layers), in MiB, from the actual tensors.

Both timings go through :func:`hardware.protocol.measure`: warm-up, then
interleaved rounds in a seeded shuffled order, median of round medians.  A
decode timing sample starts from a freshly built cache of ``context_len``
tokens (random contents: cost depends on the cache's size, not its values),
so the context grows by at most ``max_iterations`` tokens while it is timed.
Results are cached in the run's measurement store, keyed on the fingerprint.
The spec is the device: ``cpu`` or ``cuda`` (timed with synchronisation);
``device_name`` optionally binds a name to these conditions in the store, and
the protocol's keys (``rounds``, ``repeats``, ``warmup``, ``target_ms``,
``max_iterations``) tune the timing.
"""
from __future__ import annotations

import time
from dataclasses import asdict, fields
from typing import Any, Mapping, Sequence

import numpy as np

from hardware.base import Fingerprint, Runner, cpu_model
from hardware.protocol import Candidate, Protocol, measure
from nas.sources import LATENCY_SOURCES, MINIMIZE, LatencySource, RunContext, make_progress, reject_unknown

PROTOCOL_KEYS = tuple(f.name for f in fields(Protocol))
#: a decode sample of at most this many steps keeps the context within a few % of context_len
DEFAULT_PROTOCOL = Protocol(rounds=5, repeats=3, target_ms=20.0, warmup=3, max_iterations=32)
DEVICES = ("cpu", "cuda")


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class SLMTimer(Runner):
    """Times one phase (``prefill`` or ``decode``) of a token model; driven by the protocol."""

    name = "slm"

    def __init__(self, phase: str, device: str = "cpu", threads: int = 1, batch_size: int = 1,
                 prompt_len: int = 128, context_len: int = 1024, room: int = 64, seed: int = 0):
        super().__init__(threads, batch_size)
        if phase not in ("prefill", "decode"):
            raise ValueError(f"phase must be 'prefill' or 'decode', got {phase!r}")
        self.phase, self.device = phase, device
        self.prompt_len, self.context_len = int(prompt_len), int(context_len)
        self.room, self.seed = int(room), int(seed)

    def fingerprint(self) -> Fingerprint:
        import torch

        device = torch.cuda.get_device_name() if self.device == "cuda" else cpu_model()
        return Fingerprint(f"slm-{self.phase}", device, f"torch {torch.__version__}", self.threads,
                           self.batch_size, self.dtype,
                           (("prompt_len", self.prompt_len), ("context_len", self.context_len)))

    def prepare(self, model, example):
        import torch

        model = model.eval().to(self.device)
        if self.phase == "prefill":
            generator = torch.Generator().manual_seed(self.seed)
            tokens = torch.randint(0, model.config.vocab, (self.batch_size, self.prompt_len),
                                   generator=generator)
            return model, tokens.to(self.device)
        token = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        return model, token

    def time(self, handle, iterations: int) -> float:
        import torch

        model, tokens = handle
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # process-global in torch: set per sample
        try:
            with torch.inference_mode():
                if self.phase == "prefill":
                    _synchronize(self.device)
                    start = time.perf_counter()
                    for _ in range(iterations):
                        model(tokens)
                else:
                    cache = model.synthetic_cache(self.batch_size, self.context_len,
                                                  torch.Generator().manual_seed(self.seed),
                                                  room=max(self.room, iterations))
                    _synchronize(self.device)
                    start = time.perf_counter()
                    for _ in range(iterations):
                        model.step(tokens, cache)
                _synchronize(self.device)
                elapsed = time.perf_counter() - start
        finally:
            torch.set_num_threads(previous)
        return elapsed * 1e3 / iterations


def cache_memory_mb(model, batch_size: int, context_len: int) -> float:
    """Weights plus the decode cache/state at ``context_len`` tokens, in MiB."""
    import torch

    cache = model.synthetic_cache(batch_size, context_len, torch.Generator().manual_seed(0), room=0)
    return (model.weight_bytes() + cache.nbytes) / 2**20


class SLMLatency(LatencySource):
    kind = "slm"
    metrics = {"prefill_ms": MINIMIZE, "decode_ms": MINIMIZE, "memory_mb": MINIMIZE}
    OPTIONS = ("threads", "batch_size", "prompt_len", "context_len", "device_name", *PROTOCOL_KEYS)

    def __init__(self, ctx: RunContext, device: str = "cpu", threads: int = 1, batch_size: int = 1,
                 prompt_len: int = 128, context_len: int = 1024, protocol: Protocol = DEFAULT_PROTOCOL,
                 device_name: str | None = None):
        from nas.latency import source_key

        if device not in DEVICES:
            raise ValueError(f"slm device must be one of {list(DEVICES)}, got {device!r}")
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("slm device 'cuda' requested but torch sees no CUDA device")
        for label, value in (("threads", threads), ("batch_size", batch_size),
                             ("prompt_len", prompt_len), ("context_len", context_len)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
        self.ctx, self.device, self.protocol = ctx, device, protocol
        self.threads, self.batch_size = threads, batch_size
        self.prompt_len, self.context_len = prompt_len, context_len
        common = dict(device=device, threads=threads, batch_size=batch_size, prompt_len=prompt_len,
                      context_len=context_len, room=protocol.max_iterations, seed=ctx.seed)
        self.timers = {"prefill": SLMTimer("prefill", **common), "decode": SLMTimer("decode", **common)}
        self.key = source_key(self.fingerprint())
        if ctx.store is not None:
            ctx.store.register_source(self.key, self.fingerprint())
            if device_name:
                ctx.store.register_device(device_name, self.key, self.fingerprint())
        #: architectures this process measured (not served from the store)
        self.measured: list[str] = []

    @classmethod
    def from_recipe(cls, spec: Any, options: Mapping[str, Any], ctx: RunContext) -> "SLMLatency":
        reject_unknown(options, cls.OPTIONS, "options")
        options = dict(options)
        protocol_opts = {k: options.pop(k) for k in PROTOCOL_KEYS if k in options}
        protocol = Protocol(**{**asdict(DEFAULT_PROTOCOL), **protocol_opts})
        return cls(ctx, str(spec), protocol=protocol, **options)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind,
                **{phase: t.fingerprint().to_dict() for phase, t in self.timers.items()},
                "protocol": asdict(self.protocol), "memory": "weights+cache_at_context"}

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        from nas.latency import source_key, space_key

        space, store = self.ctx.space, self.ctx.store
        skey = space_key(space)
        texts = [str(a) for a in archs]
        cached = store.get_many(self.key, skey, texts) if store is not None else {}
        missing = {t: a for t, a in zip(texts, archs) if t not in cached}
        if missing:
            new = self.measure(missing)
            if store is not None:
                store.put_many(self.key, skey, new)
            self.measured.extend(new)
            cached.update(new)
        return [cached[t] for t in texts]

    def measure(self, archs: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        """Measure ``{canonical string: arch}``, bypassing the store."""
        models = {t: self.ctx.space.build(a) for t, a in archs.items()}
        for text, model in models.items():
            if not hasattr(model, "synthetic_cache"):
                raise ValueError(f"latency.slm: {self.ctx.space.name} builds "
                                 f"{type(model).__name__} for {text}, which has no decode cache; "
                                 f"the slm source needs a token model such as hybrid_slm's")
        from nas.latency import source_key

        seed = int(source_key({"archs": sorted(archs)}), 16) % 2**32
        results: dict[str, dict[str, float]] = {t: {} for t in archs}
        with make_progress(2 * len(archs), "measuring", self.ctx.progress) as bar:
            for phase, timer in self.timers.items():
                # seeded by the batch content so a resumed run shuffles identically
                rng = np.random.default_rng(seed)
                candidates = [Candidate(t, lambda t=t: (models[t], None)) for t in archs]
                for text, m in measure(timer, candidates, self.protocol, rng, bar.update).items():
                    results[text][f"{phase}_ms"] = m.latency_ms
                    results[text][f"{phase}_spread"] = m.spread
        for text, model in models.items():
            results[text]["memory_mb"] = cache_memory_mb(model.cpu(), self.batch_size, self.context_len)
        return results


LATENCY_SOURCES.register("slm", SLMLatency)
