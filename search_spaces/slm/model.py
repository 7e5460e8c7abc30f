"""The hybrid causal decoder: embedding, pre-norm residual layers (one operator
each), final norm, tied LM head.

Three ways to run it:

* ``model(tokens)`` -> logits [B, T, vocab]: the parallel/chunked prefill
  graph (what training, the ONNX export and prefill timing use);
* ``model.prefill(tokens)`` -> logits and a :class:`Cache` (KV caches for
  attention layers, fixed-size states for Mamba2/DeltaNet layers);
* ``model.step(token, cache)`` -> next-token logits, cache advanced in place.

``generate`` does greedy decoding with or without the cache; the two agree
(tested), which is what makes the decode path trustworthy for latency.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search_spaces.slm.attention import Attention
from search_spaces.slm.layers import FFN, RMSNorm
from search_spaces.slm.spec import SLMConfig, SLMLayer
from search_spaces.slm.ssm import GatedDeltaNet, Mamba2


def make_operator(spec: SLMLayer, cfg: SLMConfig) -> nn.Module:
    if spec.kind == "attn":
        return Attention(cfg.width, cfg.heads, cfg.kv_heads, None, cfg.rope_base)
    if spec.kind == "swa":
        return Attention(cfg.width, cfg.heads, cfg.kv_heads, spec.size, cfg.rope_base)
    if spec.kind == "mamba":
        return Mamba2(cfg.width, cfg.heads, cfg.ssm_state, cfg.ssm_expand, cfg.conv_kernel,
                      cfg.chunk_size)
    if spec.kind == "delta":
        return GatedDeltaNet(cfg.width, cfg.heads, cfg.conv_kernel, cfg.chunk_size)
    return FFN(cfg.width, spec.size)


class Block(nn.Module):
    """Pre-norm residual wrapper around one operator."""

    def __init__(self, spec: SLMLayer, cfg: SLMConfig):
        super().__init__()
        self.spec = spec
        self.norm = RMSNorm(cfg.width)
        self.op = make_operator(spec, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.op(self.norm(x))

    def prefill(self, x: torch.Tensor, capacity: int):
        y, state = self.op.prefill(self.norm(x), capacity)
        return x + y, state

    def step(self, x: torch.Tensor, state) -> torch.Tensor:
        return x + self.op.step(self.norm(x), state)


@dataclass
class Cache:
    """Per-layer decode state (``None`` for FFN layers) and the position reached."""

    states: list[Any]
    pos: int
    batch: int = 1

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.states if s is not None)


class HybridLM(nn.Module):
    def __init__(self, config: SLMConfig, use_kernels: bool = False):
        super().__init__()
        self.config = config.check()
        self.embed = nn.Embedding(config.vocab, config.width)
        self.blocks = nn.ModuleList(Block(spec, config) for spec in config.layer_specs())
        self.norm = RMSNorm(config.width)
        for block in self.blocks:
            if hasattr(block.op, "use_kernels"):
                block.op.use_kernels = use_kernels
        self.reset_parameters(torch.Generator().manual_seed(config.init_seed))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Deterministic init from ``generator`` (never the global RNG): N(0, 0.02)
        weights, residual output projections scaled by 1/sqrt(2 * depth) (GPT-2)."""
        out_std = 0.02 / math.sqrt(2 * len(self.blocks))
        with torch.no_grad():
            self.embed.weight.normal_(0.0, 0.02, generator=generator)
            for name, module in self.named_modules():
                if isinstance(module, nn.Linear):
                    last = name.endswith(("out_proj", "w_out"))
                    module.weight.normal_(0.0, out_std if last else 0.02, generator=generator)
                elif isinstance(module, RMSNorm):
                    module.weight.fill_(1.0)
            for block in self.blocks:
                if hasattr(block.op, "reset_special"):
                    block.op.reset_special(generator)

    @property
    def layer_specs(self) -> tuple[SLMLayer, ...]:
        return tuple(b.spec for b in self.blocks)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h) @ self.embed.weight.t()  # tied LM head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self._logits(h)

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor, max_length: int = 0) -> tuple[torch.Tensor, Cache]:
        """Logits for ``tokens`` [B, T] and the cache after them; full-attention
        caches get room for ``max_length`` tokens in total."""
        h = self.embed(tokens)
        states = []
        for block in self.blocks:
            h, state = block.prefill(h, max(max_length, tokens.shape[1]))
            states.append(state)
        return self._logits(h), Cache(states, tokens.shape[1], tokens.shape[0])

    @torch.no_grad()
    def step(self, token: torch.Tensor, cache: Cache) -> torch.Tensor:
        """Next-token logits [B, vocab] after feeding ``token`` [B]; advances ``cache``."""
        h = self.embed(token)
        for block, state in zip(self.blocks, cache.states):
            h = block.step(h, state)
        cache.pos += 1
        return self._logits(h)

    def empty_cache(self, batch: int, capacity: int = 0) -> Cache:
        device, dtype = self.embed.weight.device, self.embed.weight.dtype
        return Cache([b.op.empty_state(batch, capacity, device, dtype) for b in self.blocks], 0, batch)

    def synthetic_cache(self, batch: int, context: int, generator: torch.Generator,
                        room: int = 64) -> Cache:
        """A cache of the size decoding at ``context`` tokens has, with random
        contents, for latency and memory measurement (see ``Attention.synthetic_state``);
        ``room`` more tokens fit without growing a full-attention buffer."""
        device, dtype = self.embed.weight.device, self.embed.weight.dtype
        states = []
        for block in self.blocks:
            if isinstance(block.op, Attention):
                states.append(block.op.synthetic_state(batch, context, generator, device, dtype, room))
            else:
                states.append(block.op.synthetic_state(batch, context, generator, device, dtype))
        return Cache(states, context, batch)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
        """Greedy continuation of ``prompt`` [B, T]; returns [B, T + max_new_tokens].
        ``use_cache=False`` recomputes the whole prefix every step (the reference)."""
        tokens = prompt
        if use_cache:
            logits, cache = self.prefill(prompt, prompt.shape[1] + max_new_tokens)
            nxt = logits[:, -1].argmax(-1)
            for i in range(max_new_tokens):
                tokens = torch.cat([tokens, nxt[:, None]], dim=1)
                if i + 1 < max_new_tokens:
                    nxt = self.step(nxt, cache).argmax(-1)
            return tokens
        for _ in range(max_new_tokens):
            nxt = self(tokens)[:, -1].argmax(-1)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        return tokens

    def weight_bytes(self) -> int:
        return sum(p.nbytes for p in self.parameters())
