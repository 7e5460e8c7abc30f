"""The measured source tables shipped in ``predictors/source_tables`` and the priors
meta-trained on them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from predictors.encoders import SLMEncoder, make_encoder
from predictors.mixture import FeatureCache, shipped_features, table_sources
from predictors.source_tables import (PROVENANCE, TABLE_DIR, TABLE_SPACES, config_name, load_tables,
                                      meta_train)
from search_spaces import make_space

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tables():
    loaded = load_tables("hybrid_slm")
    assert loaded is not None, "predictors/source_tables/hybrid_slm must ship"
    return loaded


def test_hybrid_slm_tables_ship_with_their_provenance(tables):
    assert set(tables.metrics) == {"decode_ms", "prefill_ms", "memory_mb"}
    assert len(tables.configs) >= 8 and "slm_t1_b1_p256_c2048" in tables.configs
    for name, described in tables.provenance["configs"].items():
        assert config_name(described["options"]) == name
        assert described["fingerprint"]["kind"] == "slm"
    for metric in tables.metrics:
        archs, values, names = tables.columns(metric)
        assert values.shape == (len(archs), len(tables.configs)) >= (150, 8) and np.all(values > 0)
    # physics the tables must show: a longer context slows attention decode, a batch of 4
    # costs more than one sequence, and memory does not depend on the thread count
    decode = dict(zip(tables.columns("decode_ms")[2], tables.columns("decode_ms")[1].T))
    assert np.median(decode["slm_t1_b4_p256_c2048"] / decode["slm_t1_b1_p256_c2048"]) > 1.2
    memory = dict(zip(tables.columns("memory_mb")[2], tables.columns("memory_mb")[1].T))
    np.testing.assert_allclose(memory["slm_t1_b1_p64_c512"], memory["slm_t2_b1_p64_c512"])
    # a full-attention layer's KV cache grows with the context; Mamba2/DeltaNet state does not
    archs = tables.columns("memory_mb")[0]
    grows = np.array([any(layer.kind == "attn" for layer in a.layers) for a in archs])
    longer, shorter = memory["slm_t1_b1_p256_c2048"], memory["slm_t1_b1_p64_c512"]
    assert np.all(longer[grows] > shorter[grows]) and grows.any()
    assert np.all(longer >= shorter)


def test_table_space_is_the_recipe_space():
    recipe = yaml.safe_load((ROOT / "recipes" / "slm_cpu.yaml").read_text())
    options = {k: v for k, v in recipe["space"].items() if k != "name"}
    assert make_space("hybrid_slm", **options).options() == \
        make_space("hybrid_slm", **TABLE_SPACES["hybrid_slm"]).options()


def test_a_device_measured_like_a_column_is_that_column(tables):
    described = tables.provenance["configs"]["slm_t2_b4_p64_c512"]["fingerprint"]
    assert tables.configs_measured_as(described) == ["slm_t2_b4_p64_c512"]
    other = {**described, "protocol": {**described["protocol"], "rounds": 7}}
    assert tables.configs_measured_as(other) == []


def test_excluded_configurations_leave_the_prior(tables):
    prior = meta_train(tables.space, "decode_ms", tables, exclude=["slm_t1_b1_p256_c2048"], analytic_per_family=1)
    assert "slm_t1_b1_p256_c2048" not in prior.devices
    assert sum(d.startswith("slm_") for d in prior.devices) == len(tables.configs) - 1
    assert sum(d.startswith("analytic_") for d in prior.devices) == 3  # one per family
    memory = meta_train(tables.space, "memory_mb", tables, neural=False)
    assert all(d.startswith("slm_") for d in memory.devices) and memory.basis is None  # counted, not timed


def test_prior_moves_to_a_space_with_other_options(tables):
    # the user's space: other widths and depths, the tables' prompt and context lengths
    small = make_space("hybrid_slm", **{**TABLE_SPACES["hybrid_slm"], "widths": [48, 64], "depths": [2, 4]})
    # an eager device's prior, as device add trains it (the ONNX Runtime graphs' columns are
    # another engine's; their sub-0.1 ms decode times extrapolate below zero for these small models)
    onnx = [c for c in tables.configs if c.startswith("slm_onnxruntime_")]
    prior = meta_train(small, "decode_ms", tables, exclude=onnx, analytic_per_family=0)
    home = meta_train(tables.space, "decode_ms", tables, exclude=onnx, analytic_per_family=0)
    assert prior.space is small and prior.devices == home.devices
    both = small.parse("v256_d64_h2_g1:attn-ffn2-mamba-delta")  # in both spaces: the same physics
    np.testing.assert_allclose(prior.predict([both]), home.predict([str(both)]), rtol=1e-12)
    rng = np.random.default_rng(0)
    archs = [small.sample(rng) for _ in range(12)]
    spread = prior.source_predictions(archs)
    assert spread.shape == (12, len(tables.configs) - len(onnx)) and np.all(np.isfinite(spread)) and np.all(spread > 0)
    narrow = [a for a in archs if a.width == 48]
    assert narrow and np.all(prior.predict(narrow) > 0)


def test_slm_encoder_views_mean_physics_and_keep_their_size():
    space = make_space("hybrid_slm", **TABLE_SPACES["hybrid_slm"])
    wider = make_space("hybrid_slm", **{**TABLE_SPACES["hybrid_slm"], "context_len": 4096, "widths": [64, 256]})
    assert isinstance(make_encoder(space), SLMEncoder)
    attn, mamba = space.parse("v256_d64_h2_g1:attn-ffn2-attn-ffn2"), space.parse("v256_d64_h2_g1:mamba-ffn2-mamba-ffn2")
    short = make_encoder(space).encode([attn, mamba])["costs"]
    long_ = make_encoder(wider).encode([attn, mamba])["costs"]
    assert short.shape == long_.shape and np.all(short[:, 0] == 1)
    # a doubled context doubles what attention's decode reads; Mamba2's state does not grow
    assert long_[0].sum() > short[0].sum() and np.allclose(long_[1], short[1])


def test_malformed_tables_are_refused_naming_the_file(tmp_path):
    copy = tmp_path / "hybrid_slm"
    shutil.copytree(TABLE_DIR / "hybrid_slm", copy)
    assert load_tables("hybrid_slm", tmp_path) is not None
    assert load_tables("mbv3", tmp_path) is None  # nothing ships: no tables, not an error
    lines = (copy / "decode_ms.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",-1"
    (copy / "decode_ms.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"decode_ms\.csv line 4.*positive"):
        load_tables("hybrid_slm", tmp_path)
    (copy / PROVENANCE).write_text(json.dumps({"space_options": {}}))
    with pytest.raises(ValueError, match="provenance"):
        load_tables("hybrid_slm", tmp_path)


@pytest.mark.parametrize("space_name", [s for s in TABLE_SPACES if s != "hybrid_slm" and load_tables(s) is not None])
def test_network_tables_ship_the_features_their_cost_models_fit(space_name):
    tables = load_tables(space_name)
    assert set(tables.metrics) == {"latency_ms"}
    shipped = shipped_features(tables)
    archs = tables.tables["latency_ms"].archs
    assert shipped is not None and shipped.shape[0] == len(archs)
    # what ships is what counting the built networks gives
    np.testing.assert_allclose(shipped[:3], FeatureCache(tables.space).features(archs[:3]), rtol=1e-12)
    sources = table_sources(tables, FeatureCache(tables.space), exclude=[tables.configs[0]])
    assert [s.name for s in sources] == [f"table/{c}" for c in tables.configs[1:]]
    assert all(s.fit_mape < 0.5 for s in sources)


@pytest.mark.parametrize("space", ["mbv3", "mobiledet"])
def test_network_tables_ship_float32_and_int8_columns_with_their_fingerprints(space):
    tables = load_tables(space)
    assert tables is not None, f"predictors/source_tables/{space} must ship"
    assert tables.metrics == ["latency_ms"] and len(tables.configs) == 12
    for name, described in tables.provenance["configs"].items():
        assert config_name(described["options"]) == name
        fingerprint = described["fingerprint"]
        assert fingerprint["dtype"] == described["options"].get("dtype", "float32")
        # an int8 column names the quantization scheme it was timed with
        assert ("int8" in fingerprint["extra"]) == name.endswith("_int8")
        assert 0 <= described["unreliable_rows"] <= 150
    archs, values, names = tables.columns("latency_ms")
    assert values.shape == (150, 12) and np.all(values > 0)
    assert sum(n.endswith("_int8") for n in names) == 4


def test_int8_speeds_up_regular_convolutions_more_than_depthwise_ones():
    """The physics the int8 columns add to the prior: ONNX Runtime's int8 kernels speed up
    mobiledet's regular convolutions, while mbv3's depthwise-heavy blocks gain far less."""
    def speedup(space):
        archs, values, names = load_tables(space).columns("latency_ms")
        by = dict(zip(names, values.T))
        return np.median(by["onnxruntime_t1_b1"] / by["onnxruntime_t1_b1_int8"])

    assert speedup("mobiledet") > 1.5
    assert speedup("mobiledet") > 1.3 * speedup("mbv3")
