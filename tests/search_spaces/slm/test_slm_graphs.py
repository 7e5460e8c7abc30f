"""The graphs a runtime times for a token model: the decode step is a pure function of the
token on a fixed synthetic cache, agrees with ``HybridLM.step``, and exports to ONNX."""
import numpy as np
import pytest
import torch

from hardware.onnx_io import export_onnx, ort_session
from search_spaces import make_space
from search_spaces.slm.graphs import DecodeStep, decode_token, prompt_tokens

SPACE = make_space("hybrid_slm", widths=[32], heads=[2], kv_heads=[1], depths=[6], windows=[8], chunk_size=16,
                   seq_len=32, context_len=24)
#: every operator kind, attention at a context past the sliding window
ARCH = SPACE.parse("v256_d32_h2_g1:attn-swa8-mamba-delta-ffn2-attn")
BATCH, CONTEXT, SEED = 2, 24, 3


@pytest.fixture(scope="module")
def model():
    return SPACE.build(ARCH).eval()


def test_decode_step_is_model_step_on_the_synthetic_cache_and_pure(model):
    graph = DecodeStep(model, BATCH, CONTEXT, SEED)
    token = torch.tensor([5, 7])
    before = {name: buf.clone() for name, buf in graph.named_buffers()}
    cache = model.synthetic_cache(BATCH, CONTEXT, torch.Generator().manual_seed(SEED), room=1)
    expected = model.step(token, cache)
    with torch.no_grad():
        first, second = graph(token), graph(token)
    assert first.shape == (BATCH, 256)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, first)  # the cache is copied, never advanced
    assert all(torch.equal(buf, before[name]) for name, buf in graph.named_buffers())
    # five stateful layers (the FFN has none), two tensors each
    assert len(before) == 10


def test_decode_step_exports_with_the_cache_inside_and_one_integer_input(model):
    graph = DecodeStep(model, BATCH, CONTEXT, SEED)
    token = decode_token(BATCH)
    session = ort_session(export_onnx(graph, token))
    (only,) = session.get_inputs()
    assert only.type == "tensor(int64)" and only.shape == [BATCH]
    (onnx_out,) = session.run(None, {only.name: token.numpy()})[:1]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, graph(token).numpy(), atol=1e-4)


def test_graph_inputs_are_token_ids():
    assert prompt_tokens(2, 32).shape == (2, 32) and prompt_tokens(2, 32).dtype == torch.long
    assert decode_token(4).shape == (4,) and not decode_token(4).is_floating_point()
