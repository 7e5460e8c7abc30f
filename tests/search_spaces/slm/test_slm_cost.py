"""Analytic cost terms: attention decode cost grows with context, SSM/DeltaNet
decode cost does not; parameter and state counts match the built model."""
import pytest
import torch

from search_spaces.slm.cost import decode_cost, layer_params, model_cost, prefill_cost
from search_spaces.slm.model import HybridLM
from search_spaces.slm.spec import SLMConfig, SLMLayer

CFG = SLMConfig(vocab=256, width=64, heads=4, kv_heads=2, layers=("attn", "swa32", "mamba", "delta", "ffn4"))


def test_attention_decode_grows_with_context_ssm_does_not():
    attn, swa, mamba, delta = (SLMLayer("attn"), SLMLayer("swa", 32), SLMLayer("mamba"), SLMLayer("delta"))
    short, long = 256, 4096
    for field in ("flops", "bytes", "state_bytes"):
        assert getattr(decode_cost(attn, CFG, long), field) > getattr(decode_cost(attn, CFG, short), field)
        for spec in (mamba, delta, swa):  # windowed attention saturates at its window
            assert getattr(decode_cost(spec, CFG, long), field) == getattr(decode_cost(spec, CFG, short), field)
    # prefill: attention is quadratic in the prompt, the scans linear
    ratio_attn = prefill_cost(attn, CFG, 2048).flops / prefill_cost(attn, CFG, 1024).flops
    ratio_ssm = prefill_cost(mamba, CFG, 2048).flops / prefill_cost(mamba, CFG, 1024).flops
    assert ratio_attn > 2.2 and ratio_ssm == pytest.approx(2.0)


def test_counts_match_the_built_model():
    model = HybridLM(CFG)
    for block in model.blocks:
        own = sum(p.numel() for p in block.parameters())
        assert layer_params(block.spec, CFG) == own, block.spec
    totals = model_cost(CFG, prompt_len=64, context_len=100, batch=2)
    assert totals["params"] == sum(p.numel() for p in model.parameters())
    assert totals["weight_bytes"] == model.weight_bytes()
    cache = model.synthetic_cache(2, 100, torch.Generator().manual_seed(0))
    assert totals["state_bytes"] == cache.nbytes
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(1))
    _, prefilled = model.prefill(tokens)
    assert sum(prefill_cost(s, CFG, 64, 2).state_bytes for s in CFG.layer_specs()) == prefilled.nbytes


def test_operator_records_for_the_analytic_device_model():
    from search_spaces import make_space

    short = make_space("hybrid_slm", seq_len=64, context_len=256)
    long = make_space("hybrid_slm", seq_len=64, context_len=4096)
    arch = short.parse("v256_d64_h4_g2:attn-ffn2-mamba-delta")
    prefill = short.operator_costs(arch, "prefill")
    assert sum(r.macs for r in prefill) == pytest.approx(short.features(arch)["macs"], rel=1e-9)
    assert sum(r.params for r in prefill) + 64 == short.features(arch)["params"]  # + final norm
    by_name = {}
    for space in (short, long):
        for r in space.operator_costs(arch, "decode"):
            by_name.setdefault(r.name, []).append(r)
    grows = {name for name, (a, b) in by_name.items() if b.in_elements > a.in_elements}
    assert grows == {"blocks.0.attn.mix"}  # only full attention reads more at longer context
    with pytest.raises(ValueError, match="phase"):
        short.operator_costs(arch, "train")
