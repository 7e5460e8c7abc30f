"""The roofline device family and the per-layer costs it prices."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from hardware.analytic import FAMILIES, KINDS, AnalyticDevice, LayerTable, latency_matrix, layer_table, sample_devices
from search_spaces import make_space
from search_spaces.features import LayerCost, count_features, layer_costs


@pytest.fixture(scope="module")
def mbv3():
    space = make_space("mbv3", resolutions=[32, 48, 64], num_classes=10)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(8)]
    return space, archs, layer_table(space, archs)


def one_layer(kind: str, macs: float, elements: float, params: float = 0.0) -> LayerTable:
    cost = LayerCost("x", kind, int(macs), int(elements // 2), int(elements - elements // 2), int(params))
    return LayerTable.from_costs(["a"], [[cost]])


def device(**overrides) -> AnalyticDevice:
    params = dict(name="d", family="edge_gpu", peak_gflops=1000.0, mem_gbps=100.0, launch_us=10.0,
                  dw_efficiency=0.25, saturation=1.0, fuse_elementwise=True)
    params.update(overrides)
    return AnalyticDevice(**params)


def test_roofline_compute_and_memory_bound_layers():
    d = device()
    # 1e9 MACs = 2e9 FLOP at 1 TFLOP/s = 2 ms, plus 10 us launch; bytes are negligible
    assert d.latency_ms(one_layer("conv", 1e9, 1000))[0] == pytest.approx(2.0 + 0.01)
    # 1e8 elements * 4 B = 0.4 GB at 100 GB/s = 4 ms: memory bound
    assert d.latency_ms(one_layer("conv", 1e3, 1e8))[0] == pytest.approx(4.0 + 0.01, rel=1e-6)
    # depthwise convs run at dw_efficiency of peak
    assert d.latency_ms(one_layer("dwconv", 1e9, 1000))[0] == pytest.approx(8.0 + 0.01)
    # batch 4 does four times the work
    assert d.latency_ms(one_layer("conv", 1e9, 1000), batch_size=4)[0] == pytest.approx(8.0 + 0.01)


def test_elementwise_layers_are_free_only_when_fused():
    table = one_layer("act", 0, 1e6)
    assert device(fuse_elementwise=True).latency_ms(table)[0] == 0.0
    assert device(fuse_elementwise=False).latency_ms(table)[0] == pytest.approx(4e6 / 100e9 * 1e3 + 0.01)


def test_small_kernels_underuse_a_wide_device():
    wide = device(saturation=1e6)
    # 1000 output elements on a device needing 1e6 to fill: 1/1000 utilisation
    assert wide.latency_ms(one_layer("conv", 1e6, 2000))[0] == pytest.approx(2e6 / 1e12 * 1e3 * 1000 + 0.01)


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="peak_gflops"):
        device(peak_gflops=0.0)
    with pytest.raises(ValueError, match="dw_efficiency"):
        device(dw_efficiency=1.5)
    with pytest.raises(ValueError, match="unknown analytic device family 'tpu'"):
        sample_devices(1, 0, families=["tpu"])


def test_sampling_is_seeded_and_within_the_family_ranges():
    a, b, c = sample_devices(3, 7), sample_devices(3, 7), sample_devices(3, 8)
    assert a == b and a != c
    assert len(a) == 3 * len(FAMILIES)
    for d in a:
        for key, (lo, hi) in FAMILIES[d.family].items():
            if key != "fuse_prob":
                assert lo <= getattr(d, key) <= hi


def test_families_rank_architectures_differently(mbv3):
    space, archs, table = mbv3
    devices = sample_devices(4, 0)
    matrix = latency_matrix(table, devices)
    assert matrix.shape == (len(archs), len(devices)) and np.all(matrix > 0)
    macs = (table.macs * table.live).sum(axis=1)
    by_family = {}
    for d, column in zip(devices, matrix.T):
        by_family.setdefault(d.family, []).append(spearmanr(column, macs)[0])
    # phone CPUs are compute bound (rank like MACs); datacentre GPUs are launch/memory bound
    assert np.mean(by_family["phone_cpu"]) > 0.8
    assert np.mean(by_family["datacenter_gpu"]) < np.mean(by_family["phone_cpu"]) - 0.2


def test_layer_costs_sum_to_the_features_and_classify_layers(mbv3):
    space, archs, table = mbv3
    arch = archs[0]
    costs = layer_costs(space.build(arch), space.example_input(arch))
    features = count_features(space.build(arch), space.example_input(arch))
    assert sum(c.macs for c in costs) == features["macs"]
    kinds = {c.kind for c in costs}
    assert {"conv", "dwconv", "linear", "act", "pool"} <= kinds
    dw = [c for c in costs if c.kind == "dwconv"]
    assert {c.kernel for c in dw} <= set(space.kernels) and all(c.params > 0 for c in dw)
    # views (Identity, in-eval dropout) run no kernel and are dropped from the table
    live = int(table.live[0].sum())
    assert live == sum(c.kind != "view" for c in costs)
    assert set(np.unique(table.kind[0][table.live[0]])) <= set(range(len(KINDS)))


def test_lm_spaces_are_priced_from_their_operator_costs_per_phase():
    """Attention scores and scans are not module calls: the analytic model prices
    hybrid_slm from the space's own operator costs, and its decode latency grows
    with the context for full attention only."""
    from search_spaces.features import arch_layer_costs

    short = make_space("hybrid_slm", seq_len=64, context_len=256)
    long = make_space("hybrid_slm", seq_len=64, context_len=4096)
    archs = [short.parse("v256_d64_h4_g2:attn-ffn2-attn-ffn2"), short.parse("v256_d64_h4_g2:mamba-ffn2-mamba-ffn2"),
             short.parse("v256_d64_h4_g2:delta-ffn2-delta-ffn2")]
    # memory bound with no launch cost, so the ratio reflects the bytes each step reads
    d = device(family="phone_cpu", launch_us=0.0, mem_gbps=10.0)
    decode = {space.context_len: d.latency_ms(layer_table(space, archs, phase="decode"))
              for space in (short, long)}
    growth = decode[4096] / decode[256]
    assert growth[0] > 2.0
    assert growth[1] == pytest.approx(1.0) and growth[2] == pytest.approx(1.0)
    prefill = layer_table(short, archs)
    assert np.allclose((prefill.macs * prefill.live).sum(axis=1), [short.features(a)["macs"] for a in archs])
    with pytest.raises(ValueError, match="phase 'decode' needs a space with operator_costs"):
        arch_layer_costs(make_space("mbv3", resolutions=[32]), make_space("mbv3", resolutions=[32]).sample(
            np.random.default_rng(0)), "decode")
