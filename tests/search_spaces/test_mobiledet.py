import numpy as np
import pytest

from search_spaces import make_space
from search_spaces.blocks import TuckerBlock


def space():
    return make_space("mobiledet", resolutions=[32], num_classes=10)


GOOD = ("r32:ir_k3_e4-fu_k5_e8-skip-tu_k3_i0.25_o0.75:fu_k3_e4-skip-skip-skip:tu_k5_i0.75_o0.25-ir_k5_e8-skip-skip:"
        "ir_k3_e8-ir_k3_e4-fu_k3_e4-skip:fu_k5_e4-tu_k3_i0.25_o0.25-skip-skip")


def test_parse_all_layer_kinds():
    arch = space().parse(GOOD)
    kinds = {layer.kind for stage in arch.stages for layer in stage}
    assert kinds == {"ir", "fu", "tu", "skip"}
    assert str(arch) == GOOD


def test_skip_not_allowed_as_first_layer():
    bad = GOOD.replace("r32:ir_k3_e4-", "r32:skip-", 1)
    with pytest.raises(ValueError, match="skip"):
        space().parse(bad)


def test_tucker_ratio_must_be_a_choice():
    with pytest.raises(ValueError, match="tu_k3_i0.5_o0.75"):
        space().parse(GOOD.replace("tu_k3_i0.25_o0.75", "tu_k3_i0.5_o0.75"))


def test_skips_shorten_the_network_and_tucker_blocks_are_built():
    s = space()
    arch = s.parse(GOOD)
    model = s.build(arch)
    n_layers = sum(1 for stage in arch.stages for layer in stage if layer.kind != "skip")
    assert len(model.blocks) == 1 + n_layers
    assert sum(isinstance(m, TuckerBlock) for m in model.modules()) == 3


def test_sampled_archs_never_skip_first_layer():
    s = space()
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert all(stage[0].kind != "skip" for stage in s.sample(rng).stages)


def test_size_level_samples_span_the_cost_range_uniform_samples_crowd():
    s = space()
    # every layer type, cheapest first, for the size-level sampler
    assert s.size_order("s1_l1_type", s.decisions()["s1_l1_type"]) == ("skip", "tu", "ir", "fu")
    assert s.size_order("s1_l0_type", s.decisions()["s1_l0_type"]) == ("tu", "ir", "fu")
    rng = np.random.default_rng(0)
    uniform = [s.features(s.sample(rng))["macs"] for _ in range(100)]
    levels = [s.features(s.sample_size_level(rng))["macs"] for _ in range(100)]
    assert np.percentile(levels, 10) < np.percentile(uniform, 10)
    assert np.percentile(levels, 90) > np.percentile(uniform, 90)
