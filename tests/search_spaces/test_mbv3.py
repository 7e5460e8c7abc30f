import numpy as np
import pytest
import timm

from search_spaces import make_space


def space():
    return make_space("mbv3", resolutions=[64], widths=[0.75, 1.0], num_classes=10)


def test_canonical_string_form():
    s = space()
    arch = s.parse("r64_w1:ir_k3_e4-ir_k5_e6:ir_k7_e3-ir_k3_e3:ir_k3_e6-ir_k3_e6:ir_k5_e4-ir_k5_e4:ir_k3_e3-ir_k7_e6")
    assert arch.depths == (2, 2, 2, 2, 2)
    assert arch.stages[0][1].kernel == 5 and arch.stages[0][1].expand == 6
    assert str(arch).startswith("r64_w1:ir_k3_e4-ir_k5_e6:")


@pytest.mark.parametrize("text, token", [
    ("r64_w1:ir_k9_e4-ir_k5_e6:ir_k7_e3-ir_k3_e3:ir_k3_e6-ir_k3_e6:ir_k5_e4-ir_k5_e4:ir_k3_e3-ir_k7_e6", "ir_k9_e4"),
    ("r65_w1:ir_k3_e4-ir_k5_e6:ir_k7_e3-ir_k3_e3:ir_k3_e6-ir_k3_e6:ir_k5_e4-ir_k5_e4:ir_k3_e3-ir_k7_e6", "r65"),
    ("r64_w1:ir_k3_e4-xx_k5_e6:ir_k7_e3-ir_k3_e3:ir_k3_e6-ir_k3_e6:ir_k5_e4-ir_k5_e4:ir_k3_e3-ir_k7_e6", "xx_k5_e6"),
])
def test_bad_tokens_are_named(text, token):
    with pytest.raises(ValueError, match=token):
        space().parse(text)


def test_depth_outside_choices_rejected():
    with pytest.raises(ValueError, match="depth 1"):
        space().parse("r64_w1:ir_k3_e4:ir_k7_e3-ir_k3_e3:ir_k3_e6-ir_k3_e6:ir_k5_e4-ir_k5_e4:ir_k3_e3-ir_k7_e6")


def test_builds_an_ordinary_timm_model():
    s = space()
    arch = s.sample(np.random.default_rng(0))
    model = s.build(arch)
    assert isinstance(model, timm.models.mobilenetv3.MobileNetV3)
    # blocks: fixed first stage + one per searchable stage + the 1x1 head conv
    assert sum(len(stage) for stage in model.blocks) == 1 + sum(arch.depths) + 1


def test_width_multiplier_changes_the_network():
    s = space()
    a = s.sample(np.random.default_rng(0))
    narrow = s.parse(str(a).replace("_w1:", "_w0.75:", 1)) if "_w1:" in str(a) else a
    wide = s.parse(str(narrow).replace("_w0.75:", "_w1:", 1))
    assert s.features(narrow)["params"] < s.features(wide)["params"]


def test_size_level_samples_span_the_cost_range_uniform_samples_crowd():
    s = space()
    rng = np.random.default_rng(0)
    uniform = [s.features(s.sample(rng))["macs"] for _ in range(100)]
    levels = [s.features(s.sample_size_level(rng))["macs"] for _ in range(100)]
    assert np.percentile(levels, 10) < np.percentile(uniform, 10)
    assert np.percentile(levels, 90) > np.percentile(uniform, 90)
