"""The hybrid_slm space: canonical strings, strict parsing, validity, building."""
import numpy as np
import pytest
import torch

from search_spaces import SPACES, make_space
from search_spaces.hybrid_slm import HybridSLMArch, HybridSLMSpace
from search_spaces.slm.spec import SLMLayer

ARCH = "v256_d64_h4_g2:attn-ffn2-mamba-swa64-delta-ffn4"



@pytest.fixture(scope="module")
def space():
    return make_space("hybrid_slm")


def test_registered():
    assert SPACES.get("hybrid_slm") is HybridSLMSpace


def test_canonical_string_round_trips(space):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        arch = space.sample(rng)
        text = str(arch)
        assert space.parse(text) == arch
        assert str(space.parse(text)) == text
        assert space.contains(arch)
        assert space.decode(space.encode(arch)) == arch
        seen.add(text)
    assert len(seen) > 30


def test_parse_known_string(space):
    arch = space.parse(ARCH)
    assert (arch.vocab, arch.width, arch.heads, arch.kv_heads) == (256, 64, 4, 2)
    assert arch.layers == (SLMLayer("attn"), SLMLayer("ffn", 2), SLMLayer("mamba"),
                           SLMLayer("swa", 64), SLMLayer("delta"), SLMLayer("ffn", 4))
    assert str(arch) == ARCH


@pytest.mark.parametrize("text, named", [
    ("v256_d64_h4_g2:attn-ffn2-mamba-attn-foo-ffn2", "'foo'"),
    ("v256_d64_h4_g2:attn-ffn3-mamba-attn", "'ffn3'"),
    ("v256_d64_h4_g2:attn-swa32-mamba-attn", "'swa32'"),
    ("v256_d64_h3_g1:attn-ffn2-mamba-attn", "'h3'"),
    ("v512_d64_h4_g2:attn-ffn2-mamba-attn", "'v512'"),
    ("v256_d64_h4_x2:attn-ffn2-mamba-attn", "'x2'"),
    ("v256_d64_h4_g2:attn-ffn2-mamba", "depth 3"),
    ("v256_d64_h4_g2:attn--mamba-attn", "empty layer"),
    ("v256_d64_h4_g2", "groups"),
    ("v256_d64_h4:attn-ffn2-mamba-attn", "header"),
])
def test_parser_names_bad_token(space, text, named):
    with pytest.raises(ValueError, match=named):
        space.parse(text)


def test_no_token_mixer_rejected(space):
    with pytest.raises(ValueError, match="no token-mixing layer"):
        space.parse("v256_d64_h4_g2:ffn2-ffn4-ffn2-ffn4")
    arch = HybridSLMArch(256, 64, 4, 2, (SLMLayer("ffn", 2),) * 4)
    assert not space.contains(arch)
    assert "no token-mixing layer" in space.explain(arch)


@pytest.fixture(scope="module")
def odd_space():
    # choices that are each allowed but do not all combine
    return make_space("hybrid_slm", widths=[96, 100], heads=[4, 5, 6], kv_heads=[1, 3, 4])


@pytest.mark.parametrize("text, message", [
    ("v256_d96_h5_g1:attn-mamba-ffn2-delta", "heads 5 do not divide width 96"),
    ("v256_d96_h4_g3:attn-mamba-ffn2-delta", "kv_heads 3 do not divide heads 4"),
    ("v256_d100_h4_g1:attn-mamba-ffn2-delta", "head dimension .* = 25 is odd"),
])
def test_invalid_combinations_rejected_with_message(odd_space, text, message):
    with pytest.raises(ValueError, match=message):
        odd_space.parse(text)
    w, h, g = (int(t[1:]) for t in text.split(":")[0].split("_")[1:])
    layers = tuple(SLMLayer(k) if k in ("attn", "mamba", "delta") else SLMLayer("ffn", 2)
                   for k in ("attn", "mamba", "ffn", "delta"))
    arch = HybridSLMArch(256, w, h, g, layers)
    assert not odd_space.contains(arch)
    assert odd_space.explain(arch) is not None
    with pytest.raises(ValueError, match=message):
        odd_space.build(arch)
    decisions = odd_space.encode(arch)
    assert not odd_space.is_valid(decisions)


def test_sampling_avoids_invalid_combinations(odd_space):
    rng = np.random.default_rng(3)
    for _ in range(30):
        arch = odd_space.sample(rng)
        assert arch.width % arch.heads == 0 and arch.heads % arch.kv_heads == 0
        assert (arch.width // arch.heads) % 2 == 0


def test_contains_rejects_choices_outside_space(space):
    arch = space.parse(ARCH)
    small = make_space("hybrid_slm", ops=["attn", "ffn"], windows=[64])
    assert not small.contains(arch)
    assert "layer 2 mamba not in allowed layers" in small.explain(arch)
    assert not space.contains("v256_d64_h4_g2:attn")


def test_bad_space_options():
    with pytest.raises(ValueError, match="unknown operator"):
        make_space("hybrid_slm", ops=["attn", "lstm"])
    with pytest.raises(ValueError, match="token-mixing"):
        make_space("hybrid_slm", ops=["ffn"])
    with pytest.raises(ValueError, match="power of two"):
        make_space("hybrid_slm", chunk_size=24)


def test_build_input_and_features(space):
    arch = space.parse(ARCH)
    model = space.build(arch)
    example = space.example_input(arch, batch_size=2)
    assert example.dtype == torch.long and tuple(example.shape) == space.input_shape(arch, 2) == (2, 256)
    with torch.no_grad():
        logits = model(example)
    assert logits.shape == (2, 256, 256)
    features = space.features(arch)
    assert features["params"] == sum(p.numel() for p in model.parameters())
    assert features["macs"] > 0 and features["decode_flops"] > 0 and features["state_bytes"] > 0


def test_build_is_deterministic(space):
    arch = space.parse(ARCH)
    a, b = space.build(arch), space.build(arch)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    c = space.build(arch, init_seed=1)
    assert not torch.equal(a.embed.weight, c.embed.weight)
