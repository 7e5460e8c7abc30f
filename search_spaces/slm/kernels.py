"""Optional fused GPU kernels for the SSM/DeltaNet recurrence.

`flash-linear-attention <https://github.com/fla-org/flash-linear-attention>`_
(package ``fla``) provides Triton kernels for exactly the two recurrences of
:mod:`search_spaces.slm.recurrence`: ``chunk_simple_gla`` (scalar-gated linear
attention = Mamba2's SSD) and ``chunk_gated_delta_rule``.  They are used only
when the tensors are on CUDA, the package imports, and the layer was built with
``use_kernels=True``; otherwise ``fused_scan`` returns ``None`` and the pure
PyTorch reference runs.  The import is lazy so CPU machines never touch it.
Agreement with the reference is tested (GPU-only test, skipped elsewhere).
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def _fla_ops():
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        from fla.ops.simple_gla import chunk_simple_gla
    except ImportError:
        return None
    return chunk_simple_gla, chunk_gated_delta_rule


def available() -> bool:
    return _fla_ops() is not None


def fused_scan(q, k, v, g, beta, state, chunk: int):
    """Same contract as :func:`~search_spaces.slm.recurrence.chunked_scan`
    ([B, H, T, d] layout), or ``None`` when no kernel applies."""
    if not v.is_cuda:
        return None
    ops = _fla_ops()
    if ops is None:
        return None
    simple_gla, gated_delta = ops
    heads = v.shape[1]
    # fla wants [B, T, H, d], explicit per-head q/k and its own scale disabled
    q, k = q.expand(-1, heads, -1, -1), k.expand(-1, heads, -1, -1)
    q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    g = g.transpose(1, 2).contiguous()
    if beta is None:
        o, final = simple_gla(q, k, v, g, scale=1.0, initial_state=state, output_final_state=True)
    else:
        o, final = gated_delta(q, k, v, g, beta.transpose(1, 2).contiguous(), scale=1.0,
                               initial_state=state, output_final_state=True)
    return o.transpose(1, 2), final.to(v.dtype)
