"""The gated linear recurrence behind both Mamba2 (SSD) and Gated DeltaNet.

Per head, with a state ``S`` of shape [dk, dv] and a scalar decay
``a_t = exp(g_t)`` (``g_t <= 0``)::

    linear (Mamba2):      S_t = a_t S_{t-1} + k_t v_t^T
    delta rule (DeltaNet): S_t = a_t S_{t-1} + k_t u_t^T,
                           u_t = beta_t (v_t - (a_t S_{t-1})^T k_t)
    output:               o_t = S_t^T q_t

Mamba2 maps onto the linear case with q = C, k = B, v = dt * x (B and C are
shared by all heads and broadcast).  One implementation serves both layers.

``chunked_scan`` is the parallel (prefill/training) form: the sequence is cut
into chunks; inside a chunk everything is dense matrix products, and only the
[dk, dv] state crosses chunk boundaries, so the Python loop has T/chunk steps.
For the delta rule the in-chunk dependency ``(I + A) U = ...`` with ``A``
strictly lower triangular is solved by ``(I + A)^-1 = prod_j (I + (-A)^(2^j))``
(exact because ``A`` is nilpotent); that is matrix products only, which keeps
the graph ONNX-exportable (no triangular solve op there).
``recurrent_step`` is the decode form: one token, state updated in place.
"""
from __future__ import annotations

import torch


def _segment_decay(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative log decay ``b`` [..., C] and ``D[t, s] = exp(b_t - b_s)`` for s <= t, else 0."""
    b = g.cumsum(-1)
    diff = b.unsqueeze(-1) - b.unsqueeze(-2)
    size = g.shape[-1]
    causal = torch.ones(size, size, dtype=torch.bool, device=g.device).tril()
    # mask before exp: for s > t the difference is positive and could overflow
    return b, diff.masked_fill(~causal, float("-inf")).exp()


def chunked_scan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                 beta: torch.Tensor | None = None, state: torch.Tensor | None = None,
                 chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Parallel form over a whole sequence.

    ``q``, ``k`` [B, H or 1, T, dk]; ``v`` [B, H, T, dv]; ``g`` [B, H, T] log decay
    (<= 0); ``beta`` [B, H, T] selects the delta rule (``None``: linear);
    ``state`` [B, H, dk, dv] initial state (zeros when ``None``).
    Returns outputs [B, H, T, dv] and the final state [B, H, dk, dv].
    """
    batch, heads, length, dv = v.shape
    dk = k.shape[-1]
    pad = (-length) % chunk
    if pad:
        # zero keys/values and zero log decay leave the state untouched
        def _pad(x, *trailing):
            return torch.nn.functional.pad(x, (*trailing, 0, pad))
        q, k, v, g = _pad(q, 0, 0), _pad(k, 0, 0), _pad(v, 0, 0), _pad(g)
        beta = None if beta is None else _pad(beta)
    n = (length + pad) // chunk

    def _chunks(x):  # [B, H, T, d] -> [B, H, n, C, d]
        return x.reshape(x.shape[0], x.shape[1], n, chunk, x.shape[-1])

    qc, kc, vc = _chunks(q), _chunks(k), _chunks(v)
    gc = g.reshape(batch, heads, n, chunk)
    b, decay = _segment_decay(gc)  # [B,H,n,C], [B,H,n,C,C]
    if beta is not None:
        betac = beta.reshape(batch, heads, n, chunk).unsqueeze(-1)
        strict = torch.ones(chunk, chunk, dtype=torch.bool, device=v.device).tril(-1)
        a = (betac * (kc @ kc.transpose(-1, -2)) * decay).masked_fill(~strict, 0.0)
        eye = torch.eye(chunk, dtype=v.dtype, device=v.device)
        inverse, power = eye - a, -a
        for _ in range(max(chunk.bit_length() - 2, 0)):
            power = power @ power
            inverse = inverse @ (eye + power)
        u0 = inverse @ (betac * vc)
        w = inverse @ (betac * b.exp().unsqueeze(-1) * kc)
    else:
        u0, w = vc, None
    intra = (qc @ kc.transpose(-1, -2)) * decay  # [B,H,n,C,C]
    q_decayed = qc * b.exp().unsqueeze(-1)
    k_to_end = kc * (b[..., -1:] - b).exp().unsqueeze(-1)
    chunk_decay = b[..., -1].exp()[..., None, None]  # [B,H,n,1,1]

    s = state if state is not None else v.new_zeros(batch, heads, dk, dv)
    outputs = []
    for i in range(n):
        u = u0[:, :, i] if w is None else u0[:, :, i] - w[:, :, i] @ s
        outputs.append(q_decayed[:, :, i] @ s + intra[:, :, i] @ u)
        s = chunk_decay[:, :, i] * s + k_to_end[:, :, i].transpose(-1, -2) @ u
    out = torch.cat(outputs, dim=2) if n > 1 else outputs[0]
    return out[:, :, :length], s


def recurrent_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                   state: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
    """One token: ``q``, ``k`` [B, H or 1, dk]; ``v`` [B, H, dv]; ``g`` (and ``beta``)
    [B, H]; ``state`` [B, H, dk, dv] is updated in place.  Returns o [B, H, dv]."""
    s = state * g.exp()[..., None, None]
    if beta is not None:
        v = beta.unsqueeze(-1) * (v - (k.unsqueeze(-1) * s).sum(-2))
    s = s + k.unsqueeze(-1) * v.unsqueeze(-2)
    state.copy_(s)
    return (q.unsqueeze(-1) * s).sum(-2)
