"""Layer tokens and the model configuration shared by the space and the model.

A layer is one operator, written as a short token:

* ``attn``        full causal attention, grouped-query (``kv_heads`` groups)
* ``swa<W>``      sliding-window attention over the last ``W`` tokens
* ``mamba``       Mamba2-style selective state-space layer
* ``delta``       gated DeltaNet (delta-rule linear attention)
* ``ffn<R>``      SwiGLU feed-forward with ``R * width`` hidden units

The token grammar lives here, once, because both the search space's parser and
the model's constructor (rebuilding from an exported JSON config) read it.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

OP_KINDS = ("attn", "swa", "mamba", "delta", "ffn")
#: operators that mix information across time steps (everything but the FFN)
MIXER_KINDS = frozenset({"attn", "swa", "mamba", "delta"})
#: operators whose per-token decode cost grows with the context length
CACHE_KINDS = frozenset({"attn", "swa"})
_SIZED = {"swa": "window", "ffn": "ratio"}
_TOKEN = re.compile(r"^(attn|mamba|delta)$|^(swa|ffn)([1-9][0-9]*)$")


@dataclass(frozen=True, order=True)
class SLMLayer:
    kind: str
    size: int = 0  # window for ``swa``, hidden-width ratio for ``ffn``, else 0

    def __post_init__(self):
        if self.kind not in OP_KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; valid: {', '.join(OP_KINDS)}")
        if (self.kind in _SIZED) != (self.size > 0):
            need = f"a positive {_SIZED[self.kind]}" if self.kind in _SIZED else "size 0"
            raise ValueError(f"layer kind {self.kind!r} needs {need}, got size {self.size}")

    def __str__(self) -> str:
        return f"{self.kind}{self.size}" if self.kind in _SIZED else self.kind

    @property
    def is_mixer(self) -> bool:
        return self.kind in MIXER_KINDS


def parse_layer(token: str, where: str = "") -> SLMLayer:
    """``'swa64'`` -> ``SLMLayer('swa', 64)``; an unknown token raises naming it."""
    match = _TOKEN.match(token)
    if match is None:
        raise ValueError(f"bad layer token {token!r}{where}: expected one of attn, swa<window>, "
                         f"mamba, delta, ffn<ratio>")
    if match.group(1):
        return SLMLayer(match.group(1))
    return SLMLayer(match.group(2), int(match.group(3)))


@dataclass(frozen=True)
class SLMConfig:
    """Everything needed to rebuild a :class:`~search_spaces.slm.model.HybridLM`
    (validated by :func:`config_problem` / ``check``, which the model calls).

    Architecture choices (vocab, width, heads, kv_heads, layers) come from the
    search space; the rest are fixed per space and recorded so an exported
    JSON config rebuilds the identical module.  ``chunk_size`` only changes
    how the SSM/DeltaNet prefill is computed, not its result.
    """

    vocab: int
    width: int
    heads: int
    kv_heads: int
    layers: tuple[str, ...]
    ssm_state: int = 16
    ssm_expand: int = 2
    conv_kernel: int = 4
    rope_base: float = 10000.0
    chunk_size: int = 32
    init_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))

    def check(self) -> "SLMConfig":
        """Raise ``ValueError`` saying why this configuration cannot be built."""
        problem = config_problem(self)
        if problem:
            raise ValueError(f"invalid SLM config: {problem}")
        return self

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def layer_specs(self) -> tuple[SLMLayer, ...]:
        return tuple(parse_layer(t, f" (layer {i})") for i, t in enumerate(self.layers))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SLMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"SLM config: unknown key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**data)


def config_problem(cfg: SLMConfig) -> str | None:
    """Why a configuration cannot be built (``None`` when it can).

    One function decides validity, so the space's ``contains``/parser and the
    model constructor reject exactly the same combinations with the same words.
    """
    for name in ("vocab", "width", "heads", "kv_heads", "ssm_state", "ssm_expand", "conv_kernel",
                 "chunk_size"):
        if int(getattr(cfg, name)) < 1:
            return f"{name} must be >= 1, got {getattr(cfg, name)}"
    if cfg.chunk_size & (cfg.chunk_size - 1):
        # the chunked delta rule inverts a triangular matrix by repeated squaring
        return f"chunk_size must be a power of two, got {cfg.chunk_size}"
    if cfg.width % cfg.heads:
        return f"heads {cfg.heads} do not divide width {cfg.width}"
    if cfg.heads % cfg.kv_heads:
        return f"kv_heads {cfg.kv_heads} do not divide heads {cfg.heads} (grouped-query attention)"
    if cfg.head_dim % 2:
        return (f"head dimension width/heads = {cfg.width}/{cfg.heads} = {cfg.head_dim} is odd; "
                f"rotary position embeddings need an even head dimension")
    if not cfg.layers:
        return "a model needs at least one layer"
    try:
        specs = cfg.layer_specs()
    except ValueError as exc:
        return str(exc)
    if not any(s.is_mixer for s in specs):
        return ("no token-mixing layer (attn, swa, mamba or delta): every position would be "
                "predicted from its own token only")
    return None
