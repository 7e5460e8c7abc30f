"""Analytic per-operator cost terms for the hybrid SLM space.

For each layer this gives parameters, FLOPs and memory traffic (bytes) of

* **prefill**: processing a prompt of ``tokens`` tokens in parallel, and
* **decode**: producing one token when ``context`` tokens are already cached,

plus the size of its decode cache/state.  The terms encode the facts the
search trades on: attention's decode FLOPs, bytes and KV cache grow with the
context (capped at the window for sliding-window attention); Mamba2 and
DeltaNet decode costs and states are constant in the context.

Counts follow the algorithms of :mod:`search_spaces.slm` (chunked scans with
``chunk_size`` chunks, grouped-query attention without KV replication), at
float32 (4 bytes).  A multiply-add is 2 FLOPs.  Memory traffic is a
first-order estimate: weights read once per forward plus cache/state reads and
writes plus linear-layer input/output activations.
"""
from __future__ import annotations

from dataclasses import dataclass

from search_spaces.slm.spec import SLMConfig, SLMLayer

BYTES = 4  # float32


@dataclass(frozen=True)
class LayerCost:
    """One layer in one phase, split into its projections (weights) and its
    token-mixing core (attention scores, scan, short conv: cache/state traffic)."""

    linear_flops: float
    mixer_flops: float
    linear_bytes: float  # weights + projection inputs/outputs
    mixer_bytes: float  # KV-cache / recurrent-state reads and writes
    state_bytes: float  # cache/state held: after the prompt (prefill), at ``context`` (decode)
    params: int

    @property
    def flops(self) -> float:
        return self.linear_flops + self.mixer_flops

    @property
    def bytes(self) -> float:
        return self.linear_bytes + self.mixer_bytes


def _attention_pairs(tokens: int, window: int | None) -> int:
    """Query-key pairs a causal (windowed) attention computes over ``tokens`` tokens."""
    if window is None or window >= tokens:
        return tokens * (tokens + 1) // 2
    return window * (window + 1) // 2 + (tokens - window) * window


def _dims(spec: SLMLayer, cfg: SLMConfig) -> dict:
    """Linear-layer shapes (in, out), other parameters, and per-token scan terms."""
    d, h, hd = cfg.width, cfg.heads, cfg.head_dim
    norm = d  # the block's pre-norm
    if spec.kind in ("attn", "swa"):
        kv = cfg.kv_heads * hd
        return {"linears": [(d, d), (d, 2 * kv), (d, d)], "other": norm}
    if spec.kind == "mamba":
        inner, n = cfg.ssm_expand * d, cfg.ssm_state
        conv = inner + 2 * n
        return {"linears": [(d, 2 * inner + 2 * n + h), (inner, d)],
                "other": norm + conv * (cfg.conv_kernel + 1) + 3 * h + inner,
                "conv": conv, "dk": n, "dv": inner // h}
    if spec.kind == "delta":
        conv = 3 * d
        return {"linears": [(d, 4 * d + 2 * h), (d, d)],
                "other": norm + conv * (cfg.conv_kernel + 1) + 2 * h + hd,
                "conv": conv, "dk": hd, "dv": hd}
    hidden = spec.size * d
    return {"linears": [(d, 2 * hidden), (hidden, d)], "other": norm}


def layer_params(spec: SLMLayer, cfg: SLMConfig) -> int:
    dims = _dims(spec, cfg)
    return sum(i * o for i, o in dims["linears"]) + dims["other"]


def _scan_flops_per_token(spec: SLMLayer, cfg: SLMConfig, dims: dict, chunked: bool) -> float:
    """Per-token, all-heads FLOPs of the recurrence (chunked prefill or one decode step)."""
    h, dk, dv, chunk = cfg.heads, dims["dk"], dims["dv"], cfg.chunk_size
    if not chunked:
        # decay, (k^T S for the delta rule), rank-1 update, readout
        per_head = dk * dv + 2 * dk * dv + 2 * dk * dv + (2 * dk * dv if spec.kind == "delta" else 0)
        return h * per_head
    # in-chunk q k^T and (q k^T) u, cross-chunk q S and state update
    per_head = 2 * chunk * (dk + dv) + 4 * dk * dv
    if spec.kind == "delta":
        squarings = max(chunk.bit_length() - 1, 1)
        # k k^T, the (I + A)^-1 products, u0 and w, and w S
        per_head += 2 * chunk * dk + 4 * chunk * chunk * squarings + 2 * chunk * (dk + dv) + 2 * dk * dv
    return h * per_head


def _state_bytes(spec: SLMLayer, cfg: SLMConfig, dims: dict, context: int, batch: int) -> float:
    if spec.kind in ("attn", "swa"):
        kept = context if spec.kind == "attn" else min(context, spec.size)
        return 2 * batch * cfg.kv_heads * cfg.head_dim * kept * BYTES
    if spec.kind in ("mamba", "delta"):
        return batch * (cfg.heads * dims["dk"] * dims["dv"] + dims["conv"] * (cfg.conv_kernel - 1)) * BYTES
    return 0.0


def _cost(spec: SLMLayer, cfg: SLMConfig, tokens: int, context: int, batch: int,
          prefill: bool) -> LayerCost:
    dims = _dims(spec, cfg)
    params = layer_params(spec, cfg)
    n = batch * tokens
    linear_flops = 2.0 * n * sum(i * o for i, o in dims["linears"])
    linear_bytes = params * BYTES + n * sum(i + o for i, o in dims["linears"]) * BYTES
    mixer_flops = mixer_bytes = 0.0
    seen = tokens if prefill else context  # cache/state held afterwards
    if spec.kind in ("attn", "swa"):
        window = spec.size if spec.kind == "swa" else None
        if prefill:
            mixer_flops = 4.0 * batch * cfg.heads * cfg.head_dim * _attention_pairs(tokens, window)
            mixer_bytes = _state_bytes(spec, cfg, dims, tokens, batch)  # write the cache
        else:
            attended = context + 1 if window is None else min(context + 1, window)
            mixer_flops = 4.0 * batch * cfg.heads * cfg.head_dim * attended
            mixer_bytes = 2 * batch * cfg.kv_heads * cfg.head_dim * attended * BYTES  # read K, V
    elif spec.kind in ("mamba", "delta"):
        mixer_flops = 2.0 * n * dims["conv"] * cfg.conv_kernel
        mixer_flops += n * _scan_flops_per_token(spec, cfg, dims, chunked=prefill)
        # prefill writes the final state once; decode reads and writes it every token
        mixer_bytes = (1 if prefill else 2) * _state_bytes(spec, cfg, dims, seen, batch)
    return LayerCost(linear_flops, mixer_flops, linear_bytes, mixer_bytes,
                     _state_bytes(spec, cfg, dims, seen, batch), params)


def prefill_cost(spec: SLMLayer, cfg: SLMConfig, tokens: int, batch: int = 1) -> LayerCost:
    """Processing a ``tokens``-token prompt in parallel."""
    return _cost(spec, cfg, tokens, 0, batch, prefill=True)


def decode_cost(spec: SLMLayer, cfg: SLMConfig, context: int, batch: int = 1) -> LayerCost:
    """One new token after ``context`` cached tokens."""
    return _cost(spec, cfg, 1, context, batch, prefill=False)


def operator_records(cfg: SLMConfig, tokens: int, context: int = 0, batch: int = 1,
                     prefill: bool = True) -> list:
    """The costs as :class:`search_spaces.features.LayerCost` records (the per-layer
    format the analytic device model prices): per layer one ``linear`` record for
    its projections and, for token mixers, one ``other`` record for the mixing core
    whose ``in_elements`` are the cache/state elements it reads -- the term that
    grows with the context for attention and stays fixed for Mamba2/DeltaNet.
    Then the tied LM head."""
    # features imports torch; the formulas above need none, so only this format loads it
    from search_spaces.features import LayerCost as Record

    n = batch * (tokens if prefill else 1)
    records = []
    for i, spec in enumerate(cfg.layer_specs()):
        c = _cost(spec, cfg, tokens if prefill else 1, context, batch, prefill)
        linears = _dims(spec, cfg)["linears"]
        weights = sum(i_ * o for i_, o in linears)
        # the block's other parameters (norms, conv, decay rates) go with its last record
        records.append(Record(f"blocks.{i}.{spec}.proj", "linear", int(c.linear_flops // 2),
                              n * sum(i_ for i_, _ in linears), n * sum(o for _, o in linears),
                              weights if spec.is_mixer else c.params))
        if spec.is_mixer:
            records.append(Record(f"blocks.{i}.{spec}.mix", "other", int(c.mixer_flops // 2),
                                  int(c.mixer_bytes // BYTES), n * cfg.width, c.params - weights))
    records.append(Record("head", "linear", n * cfg.vocab * cfg.width, n * cfg.width, n * cfg.vocab,
                          cfg.vocab * cfg.width))
    return records


def model_cost(cfg: SLMConfig, prompt_len: int, context_len: int, batch: int = 1) -> dict[str, float]:
    """Whole-model totals: ``prefill_*`` at ``prompt_len``, ``decode_*`` for one token at
    ``context_len``, ``state_bytes`` of the decode cache there, and ``params``."""
    specs = cfg.layer_specs()
    d, vocab = cfg.width, cfg.vocab
    head_params = vocab * d + d  # tied embedding / LM head + final norm
    pre = [prefill_cost(s, cfg, prompt_len, batch) for s in specs]
    # elements written by the linear layers and the LM head during prefill
    activations = batch * prompt_len * (sum(o for s in specs for _, o in _dims(s, cfg)["linears"]) + vocab)
    dec = [decode_cost(s, cfg, context_len, batch) for s in specs]
    head_flops = 2.0 * vocab * d
    return {
        "params": float(head_params + sum(c.params for c in pre)),
        "weight_bytes": float((head_params + sum(c.params for c in pre)) * BYTES),
        "prefill_flops": sum(c.flops for c in pre) + head_flops * batch * prompt_len,
        "prefill_bytes": sum(c.bytes for c in pre) + head_params * BYTES + batch * prompt_len * vocab * BYTES,
        "decode_flops": sum(c.flops for c in dec) + head_flops * batch,
        "decode_bytes": sum(c.bytes for c in dec) + head_params * BYTES + batch * vocab * BYTES,
        "state_bytes": float(sum(c.state_bytes for c in dec)),
        "prefill_activations": float(activations),
    }
