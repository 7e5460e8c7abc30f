"""The ``slm`` latency source: prefill latency, per-token decode latency and
cache memory of ``hybrid_slm`` language models, measured with PyTorch.

``latency: {slm: cpu, threads: 1, batch_size: 1, prompt_len: 128, context_len: 1024}``

Metrics (all minimized): ``prefill_ms``, ``decode_ms``, ``memory_mb``; see
:mod:`hardware.slm_latency` for what each one times.  Results are cached in
the run's measurement store, keyed on the fingerprint.  The spec is the engine:

* ``cpu`` or ``cuda``: PyTorch eager on this machine (timed with synchronisation),
  the decode step on a live cache (:class:`hardware.slm_latency.SLMTimer`);
* any registered runner (``onnxruntime``, ``remote``, ``farm``, ``torch_cpu``, ...): the
  prefill graph and the decode-step graph (:mod:`search_spaces.slm.graphs`) are timed
  by that runner like networks, so a device reached through ``serve-device`` or the pull
  farm, which runs ONNX and never the search's Python, times token models too.  The
  section's other keys are the runner's options
  (``latency: {slm: farm, kind: pixel7, store: postgresql://..., context_len: 2048}``).

``memory_mb`` (weights plus the cache at ``context_len``) is counted from the
model's tensors on the search side for every engine.  ``device_name``
optionally binds a name to these conditions in the store, and the protocol's
keys (``rounds``, ``repeats``, ``warmup``, ``target_ms``, ``max_iterations``)
tune the timing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from hardware import RUNNERS
from hardware.base import Fingerprint, Runner
from hardware.protocol import Candidate, Protocol
from hardware.slm_latency import DEFAULT_PROTOCOL, DEVICES, SLMTimer, cache_memory_mb
from hardware.store import space_key
from nas.options import RecipeError, option_fields, parse_section, resolve_paths
from nas.sources.base import (LATENCY_SOURCES, MINIMIZE, CachedSource, Chunk, LatencySource, RunContext, batch_seed,
                              make_progress, pop_protocol)
from search_spaces.slm.graphs import DecodeStep, decode_token, prompt_tokens

#: runner options the slm section owns (and hands to the runner): one batch size, one thread count
SHARED_RUNNER_KEYS = ("threads", "batch_size")


@dataclass(frozen=True)
class SLMLatencyOptions:
    #: the engine: ``cpu`` or ``cuda`` (PyTorch eager here), or a registered runner's name
    slm: str = "cpu"
    #: None: 1 for the eager engines; a runner engine's own default (remote, farm: the device's)
    threads: int | None = None
    batch_size: int = 1
    prompt_len: int = 128
    context_len: int = 1024
    #: a device name bound to these measurement conditions in the store
    device_name: str | None = None
    #: parsed from the section's protocol keys (not a nested mapping)
    protocol: Protocol = field(default=DEFAULT_PROTOCOL, metadata={"internal": True})
    #: a runner engine's options (``RUNNERS[slm].Options``), parsed from the section's other keys
    runner_options: Any = field(default=None, metadata={"internal": True})

    def __post_init__(self):
        if self.slm not in DEVICES and self.slm not in RUNNERS:
            raise ValueError(f"slm engine must be one of {list(DEVICES)} or a runner "
                             f"({', '.join(RUNNERS.names())}), got {self.slm!r}")
        for label in ("threads", "batch_size", "prompt_len", "context_len"):
            if getattr(self, label) is not None and getattr(self, label) < 1:
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
        self.prompt_len = options.prompt_len
        #: the runner engine (``None``: PyTorch eager timers)
        self.engine: Runner | None = None
        if options.runner_options is not None:
            self.engine = RUNNERS.get(options.slm)(**asdict(options.runner_options))
            self.timers: dict[str, Runner] = {"prefill": self.engine, "decode": self.engine}
        else:
            threads = 1 if options.threads is None else options.threads
            common = dict(device=options.slm, threads=threads, batch_size=options.batch_size,
                          prompt_len=options.prompt_len, context_len=options.context_len,
                          room=self.protocol.max_iterations, seed=ctx.seed)
            self.timers = {"prefill": SLMTimer("prefill", **common), "decode": SLMTimer("decode", **common)}
        if options.device_name:
            ctx.store.register_device(options.device_name, self.key, self.fingerprint())

    @classmethod
    def parse_options(cls, section: Mapping[str, Any], where: str, prefix: str, base_dir: Path):
        data = dict(section)
        protocol = pop_protocol(data, where, prefix, DEFAULT_PROTOCOL)
        engine = data.get(cls.kind, "cpu")
        runner_options = None
        if isinstance(engine, str) and engine not in DEVICES and engine in RUNNERS:
            own = {f.name for f in option_fields(SLMLatencyOptions)}
            given = {k: data.pop(k) for k in list(data) if k not in own}
            wanted = {f.name for f in option_fields(RUNNERS.get(engine).Options)}
            # the engine runs the section's batch size, and its thread count where one is given
            given.update({k: data[k] for k in SHARED_RUNNER_KEYS if k in wanted and k in data})
            given.setdefault("batch_size", SLMLatencyOptions.batch_size)
            runner_options = resolve_paths(parse_section(RUNNERS.get(engine).Options, given, where, prefix),
                                           base_dir)
            if getattr(runner_options, "dtype", None) == "int8":
                raise RecipeError(f"{where}: {prefix}dtype: token models are timed in floating point; "
                                  f"runner {engine!r} quantizes int8 with image-like calibration data, "
                                  f"which token ids are not")
        options = super().parse_options(data, where, prefix, base_dir)
        return replace(options, protocol=protocol, runner_options=runner_options)

    @classmethod
    def section(cls, options: SLMLatencyOptions) -> dict[str, Any]:
        out = {**super().section(options), **asdict(options.protocol)}
        if options.runner_options is not None:
            # the shared keys are the section's own (above), so parsing this again gives options back
            out.update({f.name: getattr(options.runner_options, f.name)
                        for f in option_fields(options.runner_options) if f.name not in SHARED_RUNNER_KEYS})
        return out

    @classmethod
    def secret_keys(cls, options: SLMLatencyOptions) -> list[str]:
        mine = super().secret_keys(options)
        return mine + (super().secret_keys(options.runner_options) if options.runner_options is not None else [])

    def device_fingerprint(self) -> Fingerprint:
        """What ``hwnas device list`` shows: the engine runner's fingerprint, or the decode timer's."""
        return (self.engine or self.timers["decode"]).fingerprint()

    def fingerprint(self) -> dict[str, Any]:
        if self.engine is not None:
            # the graphs' shapes are the conditions the runner's fingerprint does not hold
            graphs = {"prefill": {"prompt_len": self.prompt_len},
                      "decode": {"context_len": self.context_len, "cache": "synthetic"}}
            timed = {"engine": self.engine.fingerprint().to_dict(), "graphs": graphs}
        else:
            timed = {phase: t.fingerprint().to_dict() for phase, t in self.timers.items()}
        return {"kind": self.kind, **timed, "protocol": asdict(self.protocol), "memory": "weights+cache_at_context"}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

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
                candidates = [Candidate(t, lambda t=t, phase=phase: self._graph(phase, models[t])) for t in archs]
                for text, m in timer.measure_batch(candidates, self.protocol, rng, bar.update).items():
                    results[text][f"{phase}_ms"] = m.latency_ms
                    results[text][f"{phase}_spread"] = m.spread
        for text, model in models.items():
            results[text]["memory_mb"] = cache_memory_mb(model.cpu(), self.batch_size, self.context_len)
        return results

    def _graph(self, phase: str, model) -> tuple[Any, Any]:
        """``(module, input)`` a timer measures for ``phase``: the model itself for the eager
        timers (which make their own inputs and cache), the graphs for a runner engine."""
        if self.engine is None:
            return model, None
        if phase == "prefill":
            return model, prompt_tokens(self.batch_size, self.prompt_len)
        return DecodeStep(model, self.batch_size, self.context_len, self.ctx.seed), decode_token(self.batch_size)


LATENCY_SOURCES.register("slm", SLMLatency)
