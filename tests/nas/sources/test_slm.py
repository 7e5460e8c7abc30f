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
    with pytest.raises(ValueError, match="slm engine must be one of"):
        make_source({"slm": "tpu"}, LATENCY_SOURCES, ctx, "latency")
    # a runner engine: the section's other keys are that runner's, named when wrong
    with pytest.raises(ValueError, match=r"latency\.servers: unknown key"):
        make_source({"slm": "onnxruntime", "servers": "http://127.0.0.1:1"}, LATENCY_SOURCES, ctx, "latency")
    with pytest.raises(ValueError, match=r"latency\.dtype: token models are timed in floating point"):
        make_source({"slm": "onnxruntime", "dtype": "int8"}, LATENCY_SOURCES, ctx, "latency")
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


def test_a_runner_engine_times_the_exported_graphs(ctx):
    """``slm: onnxruntime``: the prefill and decode-step graphs timed by a runner, as any
    ONNX device would; memory is the same count as the eager engine's."""
    section = {"slm": "onnxruntime", **FAST, "batch_size": 2}
    source = make_source(section, LATENCY_SOURCES, ctx, "latency")
    eager = make_source({"slm": "cpu", **FAST, "batch_size": 2}, LATENCY_SOURCES, ctx, "latency")
    fingerprint = source.fingerprint()
    assert fingerprint["engine"]["runner"] == "onnxruntime" and fingerprint["engine"]["batch_size"] == 2
    assert fingerprint["graphs"]["decode"]["context_len"] == FAST["context_len"]
    assert source.key != eager.key and source.device_fingerprint().runner == "onnxruntime"
    archs = [ctx.space.parse(a) for a in ARCHS]
    rows, eager_rows = source.evaluate(archs), eager.evaluate(archs)
    for row, eager_row in zip(rows, eager_rows):
        assert row["prefill_ms"] > 0 and row["decode_ms"] > 0
        assert row["memory_mb"] == pytest.approx(eager_row["memory_mb"])
    # the section round-trips with the runner's own options
    parsed = type(source).parse_options(type(source).section(source.options), "latency", "", ctx.base_dir)
    assert parsed == source.options and parsed.runner_options.threads == 1
    source.close()


def test_a_device_reached_through_serve_device_times_token_models(ctx, monkeypatch):
    """``slm: remote``: the graphs travel as ONNX with integer inputs to a loopback serve-device
    (which never imports torch) and come back timed; the token stays out of the section."""
    from hardware.remote import DeviceServer, Limits

    token = "slm-test-token-0123456789"
    monkeypatch.setenv("HWNAS_DEVICE_TOKEN", token)
    limits = Limits(max_request_bytes=8 << 20, max_models=4, max_measure_s=120, max_wait_s=60)
    with DeviceServer(token, "onnxruntime", {"threads": 1}, host="127.0.0.1", port=0, limits=limits) as server:
        # no threads: the device's own count, and the section round-trips without inventing one
        fast = {k: v for k, v in FAST.items() if k != "threads"}
        source = make_source({"slm": "remote", "servers": server.url, **fast}, LATENCY_SOURCES, ctx, "latency")
        assert source.options.runner_options.threads is None and source.options.threads is None
        section = type(source).section(source.options)
        assert type(source).parse_options(section, "latency", "", ctx.base_dir) == source.options
        assert source.fingerprint()["engine"]["runner"] == "onnxruntime"  # the device's runtime
        rows = source.evaluate([ctx.space.parse(a) for a in ARCHS])
        source.close()
    assert all(r["prefill_ms"] > 0 and r["decode_ms"] > 0 and r["memory_mb"] > 0 for r in rows)
    assert "token" in type(source).secret_keys(source.options)
