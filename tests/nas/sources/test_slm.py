"""The ``slm`` latency source: real prefill/decode timings of hybrid SLMs,
memory from the actual cache tensors, results cached in the store."""
import math

import pytest

from hardware.store import MeasurementStore
from nas.sources import LATENCY_SOURCES, RunContext, make_source
from search_spaces import make_space
from search_spaces.slm.cost import model_cost

FAST = {"threads": 1, "prompt_len": 32, "context_len": 96, "rounds": 2, "repeats": 1,
        "warmup": 1, "target_ms": 2.0, "max_iterations": 4}
ARCHS = ["v256_d32_h2_g1:attn-ffn2", "v256_d32_h2_g1:mamba-delta"]



@pytest.fixture()
def ctx(tmp_path):
    space = make_space("hybrid_slm", widths=[32], heads=[2], kv_heads=[1], depths=[2], chunk_size=16)
    store = MeasurementStore(tmp_path / "m.db")
    yield RunContext(space, store, tmp_path, seed=0, base_dir=tmp_path, progress=False)
    store.close()


def test_registered():
    assert "slm" in LATENCY_SOURCES


def test_measures_all_metrics_and_caches(ctx):
    source = make_source({"slm": "cpu", **FAST}, LATENCY_SOURCES, ctx, "latency")
    assert set(source.metrics) == {"prefill_ms", "decode_ms", "memory_mb"}
    archs = [ctx.space.parse(a) for a in ARCHS]
    results = source.evaluate(archs)
    for arch, metrics in zip(archs, results):
        for key in ("prefill_ms", "decode_ms", "memory_mb"):
            assert math.isfinite(metrics[key]) and metrics[key] > 0, (arch, key)
        cost = model_cost(ctx.space.config(arch), FAST["prompt_len"], FAST["context_len"])
        assert metrics["memory_mb"] == pytest.approx((cost["weight_bytes"] + cost["state_bytes"]) / 2**20)
    assert source.measured == ARCHS
    # a second source with the same conditions reads the store instead of measuring
    again = make_source({"slm": "cpu", **FAST}, LATENCY_SOURCES, ctx, "latency")
    assert again.evaluate(archs[::-1]) == results[::-1]
    assert again.measured == []
    # other conditions are another source key: measured afresh
    longer = make_source({"slm": "cpu", **{**FAST, "context_len": 192}}, LATENCY_SOURCES, ctx, "latency")
    assert longer.key != source.key
    assert longer.evaluate(archs[:1])[0]["memory_mb"] > results[0]["memory_mb"]  # KV cache doubled
    assert longer.measured == ARCHS[:1]


def test_bad_options_are_named(ctx):
    with pytest.raises(ValueError, match=r"latency\.ctx_len: unknown key"):
        make_source({"slm": "cpu", "ctx_len": 5}, LATENCY_SOURCES, ctx, "latency")
    with pytest.raises(ValueError, match="device must be one of"):
        make_source({"slm": "tpu"}, LATENCY_SOURCES, ctx, "latency")
    with pytest.raises(ValueError, match="context_len must be an integer >= 1"):
        make_source({"slm": "cpu", "context_len": 0}, LATENCY_SOURCES, ctx, "latency")


def test_rejects_models_without_decode_cache(tmp_path):
    space = make_space("mbv3", resolutions=[32], depths=[2], num_classes=10)
    with MeasurementStore(tmp_path / "m.db") as store:
        context = RunContext(space, store, tmp_path, progress=False)
        source = make_source({"slm": "cpu", **FAST}, LATENCY_SOURCES, context, "latency")
        arch = space.sample(__import__("numpy").random.default_rng(0))
        with pytest.raises(ValueError, match="no decode cache"):
            source.evaluate([arch])
