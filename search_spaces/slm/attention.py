"""Grouped-query causal attention, full or sliding-window, with its KV cache.

Queries are laid out [B, kv_heads, group, T, head_dim] so each key/value head
serves its ``group`` query heads by broadcasting: the cache is never copied per
query head, which is what makes grouped-query attention cheap at decode time.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from search_spaces.slm.layers import apply_rope, rope_tables


class KVCache:
    """Keys/values of one attention layer, RoPE already applied.

    Full attention keeps a buffer that grows by doubling (amortised O(1) per
    token).  Sliding-window attention keeps a ring of ``window`` slots: position
    ``p`` lives in slot ``p % window``.  Because positions are baked into the
    keys by RoPE and softmax does not care about key order, the ring never needs
    reordering, and its memory stays fixed however long the context grows.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, pos: int, window: int | None):
        self.keys, self.values = keys, values  # [B, kv_heads, capacity, head_dim]
        self.pos = pos  # tokens seen so far (absolute position of the next token)
        self.window = window

    @property
    def length(self) -> int:
        """Number of valid slots."""
        return self.pos if self.window is None else min(self.pos, self.window)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one token's ``k``, ``v`` [B, kv_heads, 1, head_dim]; return the valid keys/values."""
        slot = self.pos if self.window is None else self.pos % self.window
        if slot >= self.keys.shape[2]:
            self._grow(max(2 * self.keys.shape[2], slot + 1))
        self.keys[:, :, slot:slot + 1] = k
        self.values[:, :, slot:slot + 1] = v
        self.pos += 1
        n = self.length
        return self.keys[:, :, :n], self.values[:, :, :n]

    def _grow(self, capacity: int) -> None:
        def grown(buf):
            new = buf.new_zeros(*buf.shape[:2], capacity, buf.shape[-1])
            new[:, :, :buf.shape[2]] = buf
            return new
        self.keys, self.values = grown(self.keys), grown(self.values)

    @property
    def nbytes(self) -> int:
        """Bytes the cached tokens occupy (buffer capacity beyond them is allocation slack)."""
        return 2 * self.keys[:, :, :self.length].numel() * self.keys.element_size()


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int, window: int | None = None,
                 rope_base: float = 10000.0):
        super().__init__()
        self.heads, self.kv_heads, self.window = heads, kv_heads, window
        self.group = heads // kv_heads
        self.head_dim = width // heads
        self.rope_base = rope_base
        self.q_proj = nn.Linear(width, heads * self.head_dim, bias=False)
        self.kv_proj = nn.Linear(width, 2 * kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(heads * self.head_dim, width, bias=False)

    def _project(self, x: torch.Tensor, start: int):
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.kv_heads, self.group, self.head_dim)
        q = q.permute(0, 2, 3, 1, 4)  # [B, kv, G, T, hd]
        kv = self.kv_proj(x).view(batch, length, 2, self.kv_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, kv, T, hd] each
        positions = torch.arange(start, start + length, device=x.device)
        cos, sin = rope_tables(positions, self.head_dim, self.rope_base, x.dtype)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _attend(self, q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
        scores = (q @ k.unsqueeze(2).transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = scores.softmax(-1) @ v.unsqueeze(2)  # [B, kv, G, Tq, hd]
        batch, _, _, length, _ = out.shape
        return self.out_proj(out.permute(0, 3, 1, 2, 4).reshape(batch, length, -1))

    def _mask(self, length: int, device) -> torch.Tensor:
        i = torch.arange(length, device=device)
        mask = i[None, :] <= i[:, None]
        if self.window is not None:
            mask = mask & (i[None, :] > i[:, None] - self.window)
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._project(x, 0)
        return self._attend(q, k, v, self._mask(x.shape[1], x.device))

    def _capacity(self, capacity: int) -> int:
        return self.window if self.window is not None else max(int(capacity), 1)

    def empty_state(self, batch: int, capacity: int = 0, device=None, dtype=torch.float32) -> KVCache:
        shape = (batch, self.kv_heads, self._capacity(capacity), self.head_dim)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype),
                       torch.zeros(shape, device=device, dtype=dtype), 0, self.window)

    def prefill(self, x: torch.Tensor, capacity: int = 0) -> tuple[torch.Tensor, KVCache]:
        q, k, v = self._project(x, 0)
        length = x.shape[1]
        y = self._attend(q, k, v, self._mask(length, x.device))
        cache = self.empty_state(x.shape[0], max(capacity, length), x.device, x.dtype)
        kept = torch.arange(max(0, length - cache.keys.shape[2]) if self.window else 0, length,
                            device=x.device)
        slots = kept % self.window if self.window is not None else kept
        cache.keys[:, :, slots] = k[:, :, kept]
        cache.values[:, :, slots] = v[:, :, kept]
        cache.pos = length
        return y, cache

    def synthetic_state(self, batch: int, context: int, generator: torch.Generator,
                        device=None, dtype=torch.float32, room: int = 64) -> KVCache:
        """A cache as if ``context`` tokens had been seen, filled with random keys/values:
        decode cost depends on the cache's size, not its contents, so latency can be
        measured at long contexts without paying for the prefill.  ``room`` more
        tokens fit before the buffer has to grow."""
        cache = self.empty_state(batch, context + room, device, dtype)
        for buf in (cache.keys, cache.values):
            buf.copy_(torch.randn(buf.shape, generator=generator))
        cache.pos = context
        return cache

    def step(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        q, k, v = self._project(x.unsqueeze(1), cache.pos)
        keys, values = cache.append(k, v)
        return self._attend(q, keys, values, None)[:, 0]
