"""Small building blocks shared by the SLM operators.

Written with plain tensor ops (no ``nn.RMSNorm``/``F.normalize``) so the prefill
graph exports to ONNX with stock opsets.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


class ShortConv(nn.Module):
    """Depthwise causal convolution over time, as Mamba2 and Gated DeltaNet put
    in front of their recurrences.  Its decode state is the last ``kernel - 1``
    inputs, a fixed size whatever the context length."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.channels, self.kernel = channels, kernel
        self.weight = nn.Parameter(torch.empty(channels, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))

    def reset_parameters(self, generator: torch.Generator) -> None:
        bound = 1.0 / math.sqrt(self.kernel)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, T, C] -> (output [B, T, C], state [B, C, kernel-1])."""
        xt = F.pad(x.transpose(1, 2), (self.kernel - 1, 0))
        y = F.conv1d(xt, self.weight.unsqueeze(1), self.bias, groups=self.channels)
        state = xt[:, :, xt.shape[-1] - (self.kernel - 1):]
        return y.transpose(1, 2), state

    def empty_state(self, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(batch, self.channels, self.kernel - 1, device=device, dtype=dtype)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One token ``x`` [B, C]; ``state`` [B, C, kernel-1] is updated in place."""
        window = torch.cat([state, x.unsqueeze(-1)], dim=-1)
        state.copy_(window[:, :, 1:])
        return (window * self.weight).sum(-1) + self.bias


def rope_tables(positions: torch.Tensor, dim: int, base: float, dtype=torch.float32):
    """cos/sin tables [T, dim/2] for rotary embeddings at absolute ``positions``."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on the last dim of ``x`` [..., T, dim]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class FFN(nn.Module):
    """SwiGLU feed-forward with ``ratio * width`` hidden units; stateless."""

    def __init__(self, width: int, ratio: int):
        super().__init__()
        self.hidden = ratio * width
        self.w_in = nn.Linear(width, 2 * self.hidden, bias=False)
        self.w_out = nn.Linear(self.hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(gate) * up)

    def prefill(self, x: torch.Tensor, capacity: int = 0):
        return self.forward(x), None

    def empty_state(self, batch: int, capacity: int = 0, device=None, dtype=torch.float32):
        return None

    def synthetic_state(self, batch: int, context: int, generator: torch.Generator,
                        device=None, dtype=torch.float32):
        return None

    def step(self, x: torch.Tensor, state) -> torch.Tensor:
        return self.forward(x)
