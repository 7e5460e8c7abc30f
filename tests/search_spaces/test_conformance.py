"""Every registered space, like timm tests every registered model."""
import numpy as np
import pytest
import torch

from search_spaces import SPACES, make_space

SMALL_OPTIONS = {
    "mbv3": {"resolutions": [32, 48], "widths": [0.5, 1.0], "num_classes": 10},
    "mobiledet": {"resolutions": [32], "num_classes": 10},
}


def small_space(name):
    return make_space(name, **SMALL_OPTIONS.get(name, {}))


@pytest.fixture(params=SPACES.names())
def space(request):
    return small_space(request.param)


def test_round_trip_and_contains(space):
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        assert space.parse(str(arch)) == arch
        assert str(space.parse(str(arch))) == str(arch)
        assert space.contains(arch)
        assert space.decode(space.encode(arch)) == arch


def test_mutate_and_crossover_stay_in_space(space):
    rng = np.random.default_rng(1)
    a, b = space.sample(rng), space.sample(rng)
    for _ in range(10):
        child = space.mutate(a, rng)
        assert child != a and space.contains(child)
        assert space.contains(space.crossover(a, b, rng))


def test_structure_encoding_is_binary_of_one_length(space):
    rng = np.random.default_rng(2)
    archs = [space.sample(rng) for _ in range(10)]
    codes = [space.structure_encoding(a) for a in archs]
    assert len({c.shape for c in codes}) == 1 and codes[0].ndim == 1
    for arch, code in zip(archs, codes):
        assert set(np.unique(code)) <= {0.0, 1.0}
        assert np.array_equal(space.structure_encoding(space.parse(str(arch))), code)


def test_live_macs_is_none_or_a_cheap_positive_count(space):
    rng = np.random.default_rng(3)
    for arch in (space.sample(rng) for _ in range(5)):
        macs = space.live_macs(arch)
        if macs is None:  # the space does not count it without a network
            continue
        # ops cut off from the output count for nothing, so it never exceeds the full count
        assert 0 < macs <= space.features(arch)["macs"]
        assert space.live_macs(space.parse(str(arch))) == macs


def test_seeds_reproduce(space):
    first = [str(space.sample(np.random.default_rng(7))) for _ in range(3)]
    second = [str(space.sample(np.random.default_rng(7))) for _ in range(3)]
    assert first == second
    assert str(space.sample(np.random.default_rng(8))) != first[0] or space.size() < 10


def test_build_runs_a_forward_pass(space):
    arch = space.sample(np.random.default_rng(2))
    model = space.build(arch)
    with torch.no_grad():
        out = model(space.example_input(arch, batch_size=2))
    assert out.shape[0] == 2 and torch.isfinite(out).all()


def test_features_are_positive(space):
    feats = space.features(space.sample(np.random.default_rng(3)))
    assert feats["macs"] > 0 and feats["params"] > 0 and feats["activations"] > 0


@pytest.mark.parametrize("garbage", ["", "nonsense", "a:b:c"])
def test_garbage_is_rejected_with_value_error(space, garbage):
    with pytest.raises(ValueError):
        space.parse(garbage)


def test_unknown_token_is_named(space):
    text = str(space.sample(np.random.default_rng(4)))
    bad = text[: len(text) // 2] + "zz9" + text[len(text) // 2:]
    with pytest.raises(ValueError) as info:
        space.parse(bad)
    assert "zz9" in str(info.value) or "bad" in str(info.value)


def test_size_level_samples_stay_in_space_and_reproduce(space):
    for name, options in space.decisions().items():
        assert sorted(map(str, space.size_order(name, options))) == sorted(map(str, options)), name
    archs = [space.sample_size_level(np.random.default_rng([3, k])) for k in range(20)]
    assert all(space.contains(arch) for arch in archs)
    again = [space.sample_size_level(np.random.default_rng([3, k])) for k in range(20)]
    assert archs == again
    with pytest.raises(ValueError, match="no decision named 'no_such_decision'"):
        space.sample_size_level(np.random.default_rng(0), uniform=("no_such_decision",))
