"""Mamba2-style selective state-space layer and Gated DeltaNet layer.

Both follow the published layer layouts (Dao & Gu 2024, "Transformers are
SSMs"; Yang et al. 2024, "Gated Delta Networks"): input projection, short
causal convolution + SiLU, a gated linear recurrence with a data-dependent
scalar decay per head, gated RMSNorm, output projection.  Their decode state
(convolution tail + [dk, dv] matrix per head) has a fixed size, so their
per-token cost does not depend on the context length.

The recurrence itself is :mod:`search_spaces.slm.recurrence`; optimized GPU
kernels, when installed, replace only that part (:mod:`search_spaces.slm.kernels`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.slm import kernels
from search_spaces.slm.layers import RMSNorm, ShortConv, l2_normalize
from search_spaces.slm.recurrence import chunked_scan, recurrent_step


@dataclass
class RecurrentState:
    conv: torch.Tensor  # [B, channels, conv_kernel - 1]
    ssm: torch.Tensor  # [B, heads, dk, dv]

    @property
    def nbytes(self) -> int:
        return self.conv.nbytes + self.ssm.nbytes


def _init_decay(a_log: torch.Tensor, dt_bias: torch.Tensor, generator: torch.Generator) -> None:
    """Mamba2's initialisation: A in [1, 16], softplus(dt_bias) log-uniform in [1e-3, 1e-1]."""
    with torch.no_grad():
        a_log.copy_(torch.empty_like(a_log).uniform_(1.0, 16.0, generator=generator).log())
        dt = torch.empty_like(dt_bias).uniform_(0.0, 1.0, generator=generator)
        dt = (dt * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).exp().clamp(min=1e-4)
        dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus


class _Recurrent(nn.Module):
    """Shared plumbing: prefill/step/state handling around ``_inputs``/``_outputs``."""

    chunk_size: int
    use_kernels: bool = False

    def _scan(self, q, k, v, g, beta, state):
        if self.use_kernels:
            fused = kernels.fused_scan(q, k, v, g, beta, state, self.chunk_size)
            if fused is not None:
                return fused
        return chunked_scan(q, k, v, g, beta, state, self.chunk_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x)[0]

    def prefill(self, x: torch.Tensor, capacity: int = 0) -> tuple[torch.Tensor, RecurrentState]:
        (convolved, rest), conv_state = self.conv(self.in_proj(x))
        q, k, v, g, beta, skip = self._inputs(F.silu(convolved), rest)
        # [B, T, H, d] -> [B, H, T, d] for the scan
        o, ssm = self._scan(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                            g.transpose(1, 2), None if beta is None else beta.transpose(1, 2), None)
        return self._outputs(o.transpose(1, 2), skip), RecurrentState(conv_state, ssm)

    def step(self, x: torch.Tensor, state: RecurrentState) -> torch.Tensor:
        convolved, rest = self.conv.step(self.in_proj(x), state.conv)
        q, k, v, g, beta, skip = self._inputs(F.silu(convolved), rest)
        o = recurrent_step(q, k, v, g, state.ssm, beta)
        return self._outputs(o, skip)

    def empty_state(self, batch: int, capacity: int = 0, device=None, dtype=torch.float32):
        return RecurrentState(self.conv.empty_state(batch, device, dtype),
                              torch.zeros(batch, self.heads, self.dk, self.dv, device=device, dtype=dtype))

    def synthetic_state(self, batch: int, context: int, generator: torch.Generator,
                        device=None, dtype=torch.float32) -> RecurrentState:
        """A state of the size decoding at any context has (random contents; see Attention)."""
        state = self.empty_state(batch, 0, device, dtype)
        for buf in (state.conv, state.ssm):
            buf.copy_(torch.randn(buf.shape, generator=generator))
        return state


class Mamba2(_Recurrent):
    def __init__(self, width: int, heads: int, state: int = 16, expand: int = 2,
                 conv_kernel: int = 4, chunk_size: int = 32):
        super().__init__()
        self.inner = expand * width
        self.heads, self.state_size, self.chunk_size = heads, state, chunk_size
        self.head_dim = self.inner // heads
        # state per head is [N, P]: keys are B (N wide), values are dt*x (P wide)
        self.dk, self.dv = state, self.head_dim
        # one projection as in Mamba2: x, B, C (convolved), then the gate z and dt per head
        self.in_proj = nn.Linear(width, 2 * self.inner + 2 * state + heads, bias=False)
        self.conv = _SplitConv(self.inner + 2 * state, conv_kernel, keep=self.inner + heads)
        self.a_log = nn.Parameter(torch.zeros(heads))
        self.dt_bias = nn.Parameter(torch.zeros(heads))
        self.skip_d = nn.Parameter(torch.ones(heads))
        self.norm = RMSNorm(self.inner)
        self.out_proj = nn.Linear(self.inner, width, bias=False)

    def reset_special(self, generator: torch.Generator) -> None:
        _init_decay(self.a_log, self.dt_bias, generator)
        self.conv.reset_parameters(generator)
        with torch.no_grad():
            self.skip_d.fill_(1.0)

    def _inputs(self, xbc, rest):
        z, dt_raw = rest.split([self.inner, self.heads], dim=-1)
        xs, b, c = xbc.split([self.inner, self.state_size, self.state_size], dim=-1)
        shape = xs.shape[:-1]
        xh = xs.reshape(*shape, self.heads, self.head_dim)
        dt = F.softplus(dt_raw + self.dt_bias)
        g = -self.a_log.exp() * dt  # log decay, <= 0
        # B and C are shared by all heads: a broadcast head axis of size 1
        return c.unsqueeze(-2), b.unsqueeze(-2), xh * dt.unsqueeze(-1), g, None, (xh, z)

    def _outputs(self, o, skip):
        xh, z = skip
        y = o + xh * self.skip_d.unsqueeze(-1)
        y = y.reshape(*y.shape[:-2], self.inner)
        return self.out_proj(self.norm(y * F.silu(z)))


class GatedDeltaNet(_Recurrent):
    def __init__(self, width: int, heads: int, conv_kernel: int = 4, chunk_size: int = 32):
        super().__init__()
        self.heads, self.chunk_size = heads, chunk_size
        self.dk = self.dv = width // heads
        self.width = width
        # q, k, v (convolved) then a (decay), b (beta), output gate (not convolved)
        self.in_proj = nn.Linear(width, 4 * width + 2 * heads, bias=False)
        self.conv = _SplitConv(3 * width, conv_kernel, keep=width + 2 * heads)
        self.a_log = nn.Parameter(torch.zeros(heads))
        self.dt_bias = nn.Parameter(torch.zeros(heads))
        self.norm = RMSNorm(self.dv)
        self.out_proj = nn.Linear(width, width, bias=False)

    def reset_special(self, generator: torch.Generator) -> None:
        _init_decay(self.a_log, self.dt_bias, generator)
        self.conv.reset_parameters(generator)

    def _inputs(self, qkv, rest):
        a, b, gate = rest.split([self.heads, self.heads, self.width], dim=-1)
        shape = qkv.shape[:-1]
        q, k, v = (t.reshape(*shape, self.heads, self.dk) for t in qkv.split(self.width, dim=-1))
        q = l2_normalize(q) * (self.dk ** -0.5)
        k = l2_normalize(k)
        g = -self.a_log.exp() * F.softplus(a + self.dt_bias)
        return q, k, v, g, torch.sigmoid(b), gate

    def _outputs(self, o, gate):
        y = self.norm(o) * F.silu(gate.reshape(*gate.shape[:-1], self.heads, self.dv))
        return self.out_proj(y.reshape(*y.shape[:-2], self.width))


class _SplitConv(ShortConv):
    """Short conv over the first ``channels`` features of a projection; the last
    ``keep`` features (gates, dt) bypass it.  Returns ``(convolved, passthrough)``."""

    def __init__(self, channels: int, kernel: int, keep: int):
        super().__init__(channels, kernel)
        self.keep = keep

    def forward(self, x):
        conv_in, rest = x.split([self.channels, self.keep], dim=-1)
        y, state = super().forward(conv_in)
        return (y, rest), state

    def step(self, x, state):
        conv_in, rest = x.split([self.channels, self.keep], dim=-1)
        return super().step(conv_in, state), rest
