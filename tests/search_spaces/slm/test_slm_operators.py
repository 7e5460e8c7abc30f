"""Operators of the hybrid SLM: the recurrent decode path of every operator
matches its parallel (prefill) path token by token, and cached generation
equals recomputation without a cache."""
import pytest
import torch

from search_spaces.slm.attention import Attention
from search_spaces.slm.layers import l2_normalize
from search_spaces.slm.model import HybridLM, make_operator
from search_spaces.slm.recurrence import chunked_scan, recurrent_step
from search_spaces.slm.spec import SLMConfig, SLMLayer, parse_layer

TOL = 1e-4
CFG = SLMConfig(vocab=256, width=32, heads=4, kv_heads=2,
                layers=("attn", "swa8", "mamba", "delta", "ffn2"), chunk_size=8)


def _operator(token: str):
    op = make_operator(parse_layer(token), CFG)
    # the operators' special parameters (decay rates, conv) get their real init
    model = HybridLM(SLMConfig(**{**CFG.to_dict(), "layers": (token if token != "ffn2" else "attn",)}))
    if token != "ffn2":
        op.load_state_dict(model.blocks[0].op.state_dict())
    else:
        torch.nn.init.normal_(op.w_in.weight, std=0.2, generator=torch.Generator().manual_seed(0))
    return op.eval()


@pytest.mark.parametrize("token", ["attn", "swa8", "mamba", "delta", "ffn2"])
def test_recurrent_decode_matches_parallel_prefill(token):
    op = _operator(token)
    gen = torch.Generator().manual_seed(0)
    # 29 tokens: several chunks and windows, not a multiple of either
    x = torch.randn(2, 29, CFG.width, generator=gen)
    with torch.no_grad():
        parallel = op(x)
        state = op.empty_state(2, capacity=4)  # forces the KV buffer to grow
        stepped = torch.stack([op.step(x[:, t], state) for t in range(29)], dim=1)
        # prefill a prompt, then decode the rest from the returned state
        head, state = op.prefill(x[:, :13], capacity=16)
        tail = torch.stack([op.step(x[:, t], state) for t in range(13, 29)], dim=1)
    assert (parallel - stepped).abs().max().item() <= TOL
    assert (parallel[:, :13] - head).abs().max().item() <= TOL
    assert (parallel[:, 13:] - tail).abs().max().item() <= TOL


@pytest.mark.parametrize("delta", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_chunked_scan_matches_recurrence(delta, chunk):
    gen = torch.Generator().manual_seed(1)
    b, h, t, dk, dv = 2, 3, 21, 8, 5
    q = torch.randn(b, h, t, dk, generator=gen)
    k = l2_normalize(torch.randn(b, 1 if not delta else h, t, dk, generator=gen))
    v = torch.randn(b, h, t, dv, generator=gen)
    g = -torch.rand(b, h, t, generator=gen)
    beta = torch.rand(b, h, t, generator=gen) if delta else None
    start = torch.randn(b, h, dk, dv, generator=gen)
    out, final = chunked_scan(q, k, v, g, beta, start.clone(), chunk)
    state = start.clone()
    steps = [recurrent_step(q[:, :, i], k[:, :, i], v[:, :, i], g[:, :, i], state,
                            None if beta is None else beta[:, :, i]) for i in range(t)]
    assert (out - torch.stack(steps, 2)).abs().max().item() <= TOL
    assert (final - state).abs().max().item() <= TOL


def test_sliding_window_cache_is_a_fixed_ring():
    attn = _operator("swa8")
    x = torch.randn(1, 40, CFG.width, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, cache = attn.prefill(x[:, :20])
        assert cache.keys.shape[2] == 8 and cache.length == 8
        for t in range(20, 40):
            attn.step(x[:, t], cache)
    assert cache.keys.shape[2] == 8 and cache.pos == 40
    assert cache.nbytes == 2 * 8 * CFG.kv_heads * CFG.head_dim * 4


def test_full_attention_cache_grows_with_context():
    attn = _operator("attn")
    assert isinstance(attn, Attention)
    cache = attn.empty_state(1, capacity=2)
    with torch.no_grad():
        for t in range(10):
            attn.step(torch.randn(1, CFG.width, generator=torch.Generator().manual_seed(t)), cache)
    assert cache.length == 10 and cache.keys.shape[2] >= 10
    assert cache.nbytes == 2 * 10 * CFG.kv_heads * CFG.head_dim * 4


def test_generation_with_cache_equals_recomputation():
    model = HybridLM(SLMConfig(vocab=256, width=32, heads=4, kv_heads=2, chunk_size=8,
                               layers=("attn", "ffn2", "mamba", "swa4", "delta", "ffn2"))).eval()
    prompt = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(3))
    cached = model.generate(prompt, 18, use_cache=True)
    recomputed = model.generate(prompt, 18, use_cache=False)
    assert torch.equal(cached, recomputed)
    # greedy tokens could agree by luck; the logits at every step must too
    with torch.no_grad():
        full = model(cached)
        logits, cache = model.prefill(cached[:, :7])
        steps = [logits[:, -1]] + [model.step(cached[:, t], cache) for t in range(7, cached.shape[1] - 1)]
    assert (torch.stack(steps, 1) - full[:, 6:-1]).abs().max().item() <= TOL


def test_synthetic_cache_has_the_real_cache_size():
    model = HybridLM(SLMConfig(vocab=256, width=32, heads=4, kv_heads=2, chunk_size=8,
                               layers=("attn", "swa8", "mamba", "delta"))).eval()
    tokens = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(4))
    _, real = model.prefill(tokens)
    fake = model.synthetic_cache(2, 30, torch.Generator().manual_seed(0), room=0)
    assert fake.nbytes == real.nbytes and fake.pos == real.pos
    with torch.no_grad():
        assert model.step(tokens[:, -1], fake).shape == (2, 256)


def test_layer_tokens_and_config():
    assert str(parse_layer("swa128")) == "swa128" and parse_layer("ffn4") == SLMLayer("ffn", 4)
    for bad in ("swa", "ffn0", "mamba2", "attn64", "Attn"):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_layer(bad)
    with pytest.raises(ValueError, match="needs a positive window"):
        SLMLayer("swa")
    assert SLMConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown key"):
        SLMConfig.from_dict({**CFG.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="heads 3 do not divide width 32"):
        HybridLM(SLMConfig(vocab=256, width=32, heads=3, kv_heads=1, layers=("attn",)))
