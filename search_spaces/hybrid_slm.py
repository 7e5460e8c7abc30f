"""Hybrid small-language-model space (the Nemotron-Flash idea).

A causal decoder whose layers each pick one operator -- full grouped-query
attention, sliding-window attention, Mamba2-style SSM, gated DeltaNet, or a
SwiGLU FFN -- with vocabulary, width, head count, KV groups and depth as
decisions.  Parameter-optimal is not latency-optimal here: the operator mix
and depth/width decide prefill and decode latency and the cache/state memory,
which is what the search trades off.

Canonical string::

    v256_d128_h4_g2:attn-ffn4-mamba-ffn2-swa64-delta

``v`` vocabulary, ``d`` width, ``h`` query heads, ``g`` key/value heads
(grouped-query groups), then the layers in order (``-``-separated), tokens as
in :mod:`search_spaces.slm.spec`.  The model takes token ids (``torch.long``)
of shape ``input_shape(arch)`` = (batch, ``seq_len``) and returns logits.

Invalid combinations (heads not dividing width, kv heads not dividing heads,
odd head dimension, no token-mixing layer) are rejected by ``contains``, the
parser and ``build``; ``explain(arch)`` says why in words.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from search_spaces.base import SearchSpace, parse_choice, split_tokens
from search_spaces.slm.spec import OP_KINDS, SLMConfig, SLMLayer, config_problem, parse_layer


@dataclass(frozen=True)
class HybridSLMArch:
    vocab: int
    width: int
    heads: int
    kv_heads: int
    layers: tuple[SLMLayer, ...]

    def __str__(self) -> str:
        head = f"v{self.vocab}_d{self.width}_h{self.heads}_g{self.kv_heads}"
        return head + ":" + "-".join(str(layer) for layer in self.layers)

    @property
    def depth(self) -> int:
        return len(self.layers)


class HybridSLMSpace(SearchSpace):
    name = "hybrid_slm"
    onnx_names = (("tokens",), ("logits",))

    def __init__(self, vocab_sizes=(256,), widths=(64, 96, 128), heads=(2, 4), kv_heads=(1, 2),
                 depths=(4, 6, 8), ops=OP_KINDS, windows=(64, 256), ffn_ratios=(2, 4),
                 ssm_state: int = 16, ssm_expand: int = 2, conv_kernel: int = 4,
                 chunk_size: int = 32, seq_len: int = 256, context_len: int = 1024):
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        self.widths = tuple(int(w) for w in widths)
        self.heads = tuple(int(h) for h in heads)
        self.kv_heads = tuple(int(g) for g in kv_heads)
        self.depths = tuple(int(d) for d in depths)
        self.ops = tuple(str(o) for o in ops)
        self.windows = tuple(int(w) for w in windows)
        self.ffn_ratios = tuple(int(r) for r in ffn_ratios)
        self.ssm_state, self.ssm_expand = int(ssm_state), int(ssm_expand)
        self.conv_kernel, self.chunk_size = int(conv_kernel), int(chunk_size)
        self.seq_len, self.context_len = int(seq_len), int(context_len)
        for label in ("vocab_sizes", "widths", "heads", "kv_heads", "depths", "ops"):
            if not getattr(self, label):
                raise ValueError(f"hybrid_slm option {label!r} must not be empty")
            if label != "ops" and min(getattr(self, label)) < 1:
                raise ValueError(f"hybrid_slm option {label!r} must hold positive integers")
        unknown = sorted(set(self.ops) - set(OP_KINDS))
        if unknown:
            raise ValueError(f"hybrid_slm option 'ops': unknown operator(s) {unknown}; "
                             f"valid: {list(OP_KINDS)}")
        for op, label in (("swa", "windows"), ("ffn", "ffn_ratios")):
            values = getattr(self, label)
            if op in self.ops and (not values or min(values) < 1):
                raise ValueError(f"hybrid_slm option {label!r} needs positive values when {op!r} "
                                 f"is in 'ops'")
        if not {"attn", "swa", "mamba", "delta"} & set(self.ops):
            raise ValueError("hybrid_slm option 'ops' needs at least one token-mixing operator "
                             "(attn, swa, mamba or delta)")
        if self.seq_len < 1 or self.context_len < 1:
            raise ValueError("hybrid_slm options 'seq_len' and 'context_len' must be >= 1")
        # the fixed parts, checked on a probe whose searchable parts are always legal
        problem = config_problem(self._config_of(self.vocab_sizes[0], 2, 1, 1, ("mamba",)))
        if problem:
            raise ValueError(f"hybrid_slm options: {problem}")

    def options(self) -> dict[str, Any]:
        return {"vocab_sizes": list(self.vocab_sizes), "widths": list(self.widths),
                "heads": list(self.heads), "kv_heads": list(self.kv_heads),
                "depths": list(self.depths), "ops": list(self.ops), "windows": list(self.windows),
                "ffn_ratios": list(self.ffn_ratios), "ssm_state": self.ssm_state,
                "ssm_expand": self.ssm_expand, "conv_kernel": self.conv_kernel,
                "chunk_size": self.chunk_size, "seq_len": self.seq_len,
                "context_len": self.context_len}

    def network_options(self) -> dict[str, Any]:
        # the fixed operator settings, plus the prompt length example inputs have
        return {"ssm_state": self.ssm_state, "ssm_expand": self.ssm_expand,
                "conv_kernel": self.conv_kernel, "chunk_size": self.chunk_size,
                "seq_len": self.seq_len}

    # operators --------------------------------------------------------------------
    def layer_choices(self) -> tuple[str, ...]:
        """Every layer token this space allows, e.g. ``('attn', 'swa64', ..., 'ffn4')``."""
        tokens: list[str] = []
        for op in self.ops:
            if op == "swa":
                tokens += [f"swa{w}" for w in self.windows]
            elif op == "ffn":
                tokens += [f"ffn{r}" for r in self.ffn_ratios]
            else:
                tokens.append(op)
        return tuple(tokens)

    # decisions ---------------------------------------------------------------------
    def decisions(self) -> dict[str, tuple]:
        d: dict[str, tuple] = {"vocab": self.vocab_sizes, "width": self.widths, "heads": self.heads,
                               "kv_heads": self.kv_heads, "depth": self.depths}
        for i in range(max(self.depths)):
            d[f"l{i}_op"] = self.layer_choices()
        return d

    def decode(self, decisions: Mapping[str, Any]) -> HybridSLMArch:
        layers = tuple(parse_layer(decisions[f"l{i}_op"]) for i in range(decisions["depth"]))
        arch = HybridSLMArch(int(decisions["vocab"]), int(decisions["width"]), int(decisions["heads"]),
                             int(decisions["kv_heads"]), layers)
        problem = self.combination_problem(arch)
        if problem:
            raise ValueError(f"hybrid_slm arch {arch}: {problem}")
        return arch

    def encode(self, arch: HybridSLMArch) -> dict[str, Any]:
        if not isinstance(arch, HybridSLMArch):
            raise TypeError(f"expected HybridSLMArch, got {type(arch).__name__}")
        d: dict[str, Any] = {"vocab": arch.vocab, "width": arch.width, "heads": arch.heads,
                             "kv_heads": arch.kv_heads, "depth": arch.depth}
        filler = self.layer_choices()[0]
        for i in range(max(self.depths)):
            d[f"l{i}_op"] = str(arch.layers[i]) if i < arch.depth else filler
        return d

    # validity ----------------------------------------------------------------------
    def combination_problem(self, arch: HybridSLMArch) -> str | None:
        """Why choices that are each allowed cannot go together (``None`` if they can)."""
        return config_problem(self.config(arch))

    def explain(self, arch: Any) -> str | None:
        """Why ``arch`` is not in this space, in words; ``None`` when it is."""
        if not isinstance(arch, HybridSLMArch):
            return f"not a HybridSLMArch: {type(arch).__name__}"
        for label, value, allowed in (("vocab", arch.vocab, self.vocab_sizes),
                                      ("width", arch.width, self.widths),
                                      ("heads", arch.heads, self.heads),
                                      ("kv_heads", arch.kv_heads, self.kv_heads),
                                      ("depth", arch.depth, self.depths)):
            if value not in allowed:
                return f"{label} {value} not in allowed values {list(allowed)}"
        allowed_layers = self.layer_choices()
        for i, layer in enumerate(arch.layers):
            if not isinstance(layer, SLMLayer) or str(layer) not in allowed_layers:
                return f"layer {i} {layer} not in allowed layers {list(allowed_layers)}"
        return self.combination_problem(arch)

    def contains(self, arch: Any) -> bool:
        return self.explain(arch) is None

    # strings -----------------------------------------------------------------------
    def parse(self, text: str) -> HybridSLMArch:
        if not isinstance(text, str):
            raise ValueError(f"hybrid_slm arch must be a string, got {type(text).__name__}")
        groups = split_tokens(text.strip(), ":", "group")
        if len(groups) != 2:
            raise ValueError(f"hybrid_slm arch {text!r}: expected "
                             f"'v<vocab>_d<width>_h<heads>_g<kv_heads>:<layer>-<layer>-...', "
                             f"got {len(groups)} ':'-separated groups")
        head = split_tokens(groups[0], "_", "header token")
        if len(head) != 4:
            raise ValueError(f"hybrid_slm arch header {groups[0]!r}: expected "
                             f"v<vocab>_d<width>_h<heads>_g<kv_heads>")
        where = " in header"
        vocab = parse_choice(head[0], "v", self.vocab_sizes, int, where)
        width = parse_choice(head[1], "d", self.widths, int, where)
        heads = parse_choice(head[2], "h", self.heads, int, where)
        kv_heads = parse_choice(head[3], "g", self.kv_heads, int, where)
        tokens = split_tokens(groups[1], "-", "layer")
        if len(tokens) not in self.depths:
            raise ValueError(f"hybrid_slm arch {text!r}: depth {len(tokens)} not in "
                             f"allowed depths {list(self.depths)}")
        allowed = self.layer_choices()
        layers = []
        for i, token in enumerate(tokens):
            layer = parse_layer(token, f" (layer {i})")
            if token not in allowed:
                raise ValueError(f"bad layer token {token!r} (layer {i}): not in this space's "
                                 f"layers {list(allowed)}")
            layers.append(layer)
        arch = HybridSLMArch(vocab, width, heads, kv_heads, tuple(layers))
        problem = self.combination_problem(arch)
        if problem:
            raise ValueError(f"hybrid_slm arch {text!r}: {problem}")
        return arch

    # building ----------------------------------------------------------------------
    def _config_of(self, vocab, width, heads, kv_heads, layers, init_seed: int = 0) -> SLMConfig:
        return SLMConfig(vocab=vocab, width=width, heads=heads, kv_heads=kv_heads,
                         layers=tuple(layers), ssm_state=self.ssm_state, ssm_expand=self.ssm_expand,
                         conv_kernel=self.conv_kernel, chunk_size=self.chunk_size,
                         init_seed=int(init_seed))

    def config(self, arch: HybridSLMArch, init_seed: int = 0) -> SLMConfig:
        """The model configuration of ``arch`` (not validated: see ``explain``)."""
        return self._config_of(arch.vocab, arch.width, arch.heads, arch.kv_heads,
                               tuple(str(layer) for layer in arch.layers), init_seed)

    def build(self, arch: HybridSLMArch, init_seed: int = 0, use_kernels: bool = False):
        from search_spaces.slm.model import HybridLM

        problem = self.explain(arch)
        if problem:
            raise ValueError(f"architecture {arch} is not in {self!r}: {problem}")
        return HybridLM(self.config(arch, init_seed), use_kernels=use_kernels).eval()

    def input_shape(self, arch: HybridSLMArch, batch_size: int = 1) -> tuple[int, ...]:
        """Token ids of dtype ``torch.long``: (batch, ``seq_len``)."""
        return (batch_size, self.seq_len)

    def example_input(self, arch: HybridSLMArch, batch_size: int = 1, seed: int = 0):
        import torch

        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, arch.vocab, self.input_shape(arch, batch_size), generator=generator,
                             dtype=torch.long)

    # analytic features -------------------------------------------------------------
    def features(self, arch: HybridSLMArch) -> dict[str, float]:
        """Analytic costs (:mod:`search_spaces.slm.cost`): ``macs`` of a ``seq_len``
        prefill, ``params``, ``activations``, and the prefill/decode FLOPs and bytes and
        decode state size at ``context_len``.  Counted from formulas rather than
        forward hooks because attention and scan products are not module calls."""
        from search_spaces.slm.cost import model_cost

        problem = self.explain(arch)
        if problem:
            raise ValueError(f"architecture {arch} is not in {self!r}: {problem}")
        cost = model_cost(self.config(arch), self.seq_len, self.context_len)
        return {"macs": cost["prefill_flops"] / 2, "params": cost["params"],
                "activations": cost["prefill_activations"], **cost}

    def operator_costs(self, arch: HybridSLMArch, phase: str = "prefill", batch_size: int = 1) -> list:
        """Per-operator :class:`search_spaces.features.LayerCost` records of a
        ``seq_len``-token prefill or of one decode step at ``context_len``, for
        the analytic device model: forward hooks cannot see attention-score and
        scan products (they are not module calls), these formulas do."""
        from search_spaces.slm.cost import operator_records

        if phase not in ("prefill", "decode"):
            raise ValueError(f"phase must be 'prefill' or 'decode', got {phase!r}")
        problem = self.explain(arch)
        if problem:
            raise ValueError(f"architecture {arch} is not in {self!r}: {problem}")
        return operator_records(self.config(arch), self.seq_len, self.context_len, batch_size,
                                prefill=phase == "prefill")

    def export_extras(self, model, arch: HybridSLMArch, folder) -> list:
        """``config.json`` (the model's :class:`SLMConfig`), so ``load_slm(folder)``
        rebuilds an exported model without hwnas' search space."""
        from search_spaces.slm.export import write_config

        return [write_config(model, arch, folder, prompt_len=self.seq_len)]

    def layer_keys(self, arch: HybridSLMArch) -> list[str]:
        """One key per layer with the geometry that sets its cost, for lookup tables."""
        return [f"{layer}_d{arch.width}_h{arch.heads}_g{arch.kv_heads}" for layer in arch.layers]
