"""The precision axis of mbv3 and mobiledet: canonical strings, decisions, units."""
import numpy as np
import pytest

from search_spaces import SPACES, make_space

BASE = {"mbv3": {"resolutions": [32, 48], "widths": [0.5, 1.0], "num_classes": 10},
        "mobiledet": {"resolutions": [32], "num_classes": 10}}
PRECISION_SPACES = list(BASE)


def precision_space(name, granularity="layer"):
    return make_space(name, **BASE[name], precisions=["fp32", "int8"], precision_granularity=granularity)


@pytest.mark.parametrize("granularity", ["layer", "stage", "suffix"])
@pytest.mark.parametrize("name", PRECISION_SPACES)
def test_round_trip_sample_mutate_crossover(name, granularity):
    space = precision_space(name, granularity)
    rng = np.random.default_rng(0)
    seen_int8 = seen_mixed = False
    for _ in range(60):
        arch = space.sample(rng)
        assert space.parse(str(arch)) == arch and space.contains(arch)
        child = space.mutate(arch, rng)
        assert space.contains(child) and space.parse(str(child)) == child
        assert space.contains(space.crossover(arch, child, rng))
        precisions = {u.precision for u in space.precision_units(arch).values()}
        seen_int8 |= "int8" in str(arch)
        seen_mixed |= precisions == {"fp32", "int8"}
        if granularity == "suffix":  # one boundary: fp32 units, then int8 ones
            order = [u.precision for u in space.precision_units(arch).values()]
            assert order == sorted(order, key=lambda p: p == "int8")
    assert seen_int8 and seen_mixed


@pytest.mark.parametrize("name", PRECISION_SPACES)
def test_suffix_space_refuses_int8_before_fp32(name):
    space = precision_space(name, "suffix")
    arch = space.float_arch(space.sample(np.random.default_rng(5)))
    assert "int8_from" in space.decisions() and not any(k.endswith("_precision") for k in space.decisions())
    late = space.with_precisions(arch, {"s4": "int8", "head": "int8"})
    assert space.encode(late)["int8_from"] == "s4" and space.parse(str(late)) == late
    with pytest.raises(ValueError, match="fp32 stage or head after an int8 one"):
        space.with_precisions(arch, {"s0": "int8"})
    # a stage space may run stage 0 alone in int8; the suffix space refuses that string
    text = str(precision_space(name, "stage").with_precisions(arch, {"s0": "int8"}))
    with pytest.raises(ValueError, match="fp32 stage or head after an int8 one"):
        space.parse(text)


@pytest.mark.parametrize("name", PRECISION_SPACES)
def test_units_name_modules_of_the_built_network(name):
    space = precision_space(name)
    rng = np.random.default_rng(1)
    for _ in range(5):
        arch = space.sample(rng)
        modules = {n for n, _ in space.build(arch).named_modules()}
        units = space.precision_units(arch)
        assert "head" in units and len(units) > 2
        assert all(m in modules for unit in units.values() for m in unit.modules)
        int8 = space.int8_modules(arch)
        assert set(int8) == {m for u in units.values() if u.precision == "int8" for m in u.modules}


@pytest.mark.parametrize("name", PRECISION_SPACES)
def test_with_precisions_and_float_arch(name):
    space = precision_space(name)
    arch = space.float_arch(space.sample(np.random.default_rng(2)))
    assert "int8" not in str(arch) and space.int8_modules(arch) == ()
    units = list(space.precision_units(arch))
    mixed = space.with_precisions(arch, {units[0]: "int8", "head": "int8"})
    assert space.parse(str(mixed)) == mixed
    assert {u for u, unit in space.precision_units(mixed).items() if unit.precision == "int8"} == {units[0], "head"}
    assert space.float_arch(mixed) == arch
    # one network, so the float weights are shared: same build, same features
    assert space.features(mixed)["macs"] == space.features(arch)["macs"]
    with pytest.raises(ValueError, match="unknown precision units"):
        space.with_precisions(arch, {"nope": "int8"})
    with pytest.raises(ValueError, match="fp16"):
        space.with_precisions(arch, {"head": "fp16"})


@pytest.mark.parametrize("name", PRECISION_SPACES)
def test_float_only_space_is_unchanged_and_rejects_precision_tokens(name):
    space = make_space(name, **BASE[name])
    arch = space.sample(np.random.default_rng(3))
    assert "precisions" not in space.options() and space.precision_units(arch) == {}
    assert not any("precision" in key for key in space.decisions())
    first_stage = str(arch).split(":")[1]
    first_layer = first_stage.split("-")[0]
    with pytest.raises(ValueError, match=rf"{first_layer}_int8.*precision 'int8' not in"):
        space.parse(str(arch).replace(first_layer, first_layer + "_int8", 1))


@pytest.mark.parametrize("name", PRECISION_SPACES)
def test_bad_precision_tokens_are_named(name):
    space = precision_space(name, "stage")
    arch = space.float_arch(space.sample(np.random.default_rng(4)))
    text = str(arch)
    header, first_stage = text.split(":")[:2]
    layer = first_stage.split("-")[0]
    with pytest.raises(ValueError, match="fp32 is the default"):
        space.parse(text.replace(layer, layer + "_fp32", 1))
    if len(first_stage.split("-")) > 1 and first_stage.split("-")[1] != "skip":
        with pytest.raises(ValueError, match="mixes precisions"):
            space.parse(text.replace(layer, layer + "_int8", 1))
    with pytest.raises(ValueError, match="fp16 layers would need the GPU runners"):
        space.parse(text.replace(header, header + "_fp16", 1))
    with pytest.raises(ValueError, match="precisions"):
        make_space(name, **BASE[name], precisions=["int8"])
    with pytest.raises(ValueError, match="fp16 layers would need the GPU runners"):
        make_space(name, **BASE[name], precisions=["fp32", "fp16"])


@pytest.mark.parametrize("name", [n for n in SPACES.names() if n not in PRECISION_SPACES])
def test_spaces_without_a_precision_axis(name):
    space = make_space(name)
    arch = space.sample(np.random.default_rng(0))
    assert space.precision_units(arch) == {} and space.int8_modules(arch) == ()
    assert space.float_arch(arch) == arch
    with pytest.raises(ValueError, match="no precision axis"):
        space.with_precisions(arch, {"head": "int8"})


def ordered_space(name, order):
    return make_space(name, **BASE[name], precisions=["fp32", "int8"], precision_granularity="ordered",
                      precision_order=order)


@pytest.mark.parametrize("name", PRECISION_SPACES)
def test_ordered_space_proposes_prefixes_of_its_order(name):
    order = ["head", "s4.l1", "s2.l0", "s3.l0", "s0.l0"]
    space = ordered_space(name, order)
    assert space.decisions()["int8_units"] == tuple(range(len(space.precision_order) + 1))
    assert space.precision_order[:5] == tuple(order) and "s4.l0" in space.precision_order  # the rest follow
    assert space.options()["precision_order"] == list(space.precision_order)
    rng = np.random.default_rng(3)
    counts = set()
    for _ in range(80):
        arch = space.sample(rng)
        assert space.parse(str(arch)) == arch and space.contains(arch)
        assert space.decode(space.encode(arch)) == arch
        child = space.mutate(arch, rng)
        assert space.parse(str(child)) == child and space.contains(space.crossover(arch, child, rng))
        units = space.precision_units(arch)
        int8 = [u for u, unit in units.items() if unit.precision == "int8"]
        ranked = sorted(units, key=space.precision_order.index)
        assert ranked[:len(int8)] == sorted(int8, key=space.precision_order.index)  # a prefix of the order
        counts.add(len(int8))
    assert len(counts) > 3


@pytest.mark.parametrize("name", PRECISION_SPACES)
def test_ordered_space_refuses_what_its_order_cannot_propose(name):
    space = ordered_space(name, ["head", "s4.l0"])
    arch = space.float_arch(space.sample(np.random.default_rng(2)))
    both = space.with_precisions(arch, {"head": "int8", "s4.l0": "int8"})
    assert space.encode(both)["int8_units"] == 2 and space.parse(str(both)) == both
    with pytest.raises(ValueError, match="unit head is fp32 but s4.l0, later"):
        space.with_precisions(arch, {"s4.l0": "int8"})
    text = str(precision_space(name).with_precisions(arch, {"s0.l0": "int8"}))
    with pytest.raises(ValueError, match="is fp32 but s0.l0"):
        space.parse(text)
    for bad, match in ((["s9.l0"], "unknown unit 's9.l0'"), (["head", "head"], "names 'head' more than once"),
                       ("head", "must be a list")):
        with pytest.raises(ValueError, match=match):
            ordered_space(name, bad)
    with pytest.raises(ValueError, match="needs 'precision_order'"):
        precision_space(name, "ordered")
    with pytest.raises(ValueError, match="needs precision_granularity: ordered"):
        make_space(name, **BASE[name], precisions=["fp32", "int8"], precision_order=["head"])
