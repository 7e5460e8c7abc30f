"""Timing token models: prefill latency, per-token decode latency and cache
memory of ``hybrid_slm`` language models, measured with PyTorch (the engine
of the ``slm`` latency source, ``nas.sources.slm``).

Metrics:

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
"""
from __future__ import annotations

import time

from hardware.base import Fingerprint, TimedRunner, cpu_model
from hardware.protocol import Protocol
#: a decode sample of at most this many steps keeps the context within a few % of context_len
DEFAULT_PROTOCOL = Protocol(rounds=5, repeats=3, target_ms=20.0, warmup=3, max_iterations=32)
DEVICES = ("cpu", "cuda")


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class SLMTimer(TimedRunner):
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
