"""The fbnet space: HW-NAS-Bench strings, strict parsing, the CIFAR-100 FBNet network."""
import csv

import numpy as np
import pytest
import torch

from search_spaces import SPACES, make_space
from search_spaces.fbnet import CHOICES, FBNetArch, FBNetSpace
from search_spaces.features import count_features

EXAMPLE = ("k5_e6-skip-k3_e1_g2-skip-k5_e1-skip-skip-skip-k5_e6-k5_e1-k3_e1_g2-k5_e1-k5_e6-k3_e6-"
           "k3_e3-k5_e6-k3_e6-k3_e3-k5_e1-k3_e3-k5_e1-k5_e1_g2")


@pytest.fixture(scope="module")
def space():
    return make_space("fbnet")


def test_registered_with_22_layers_of_9_choices(space):
    assert SPACES.get("fbnet") is FBNetSpace
    assert len(space.decisions()) == 22
    assert all(v == CHOICES for v in space.decisions().values()) and len(CHOICES) == 9
    assert space.size() == 9 ** 22


def test_strings_round_trip(space):
    arch = space.parse(EXAMPLE)
    assert str(arch) == EXAMPLE and arch.layers[2] == "k3_e1_g2"
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = space.sample(rng)
        assert space.parse(str(a)) == a and space.decode(space.encode(a)) == a


@pytest.mark.parametrize("text, message", [
    (EXAMPLE.replace("k5_e1_g2", "k7_e1"), "k7_e1"),
    (EXAMPLE.rsplit("-", 1)[0], "expected 22 layers"),
    (EXAMPLE.replace("-skip-", "--", 1), "empty layer"),
])
def test_strict_parsing_names_the_problem(space, text, message):
    with pytest.raises(ValueError, match=message):
        space.parse(text)


def test_macro_geometry(space):
    specs = space.layer_specs
    assert [s.c_out for s in specs][:2] == [16, 24] and specs[-1].c_out == 352
    assert [s.stride for s in specs].count(2) == 3  # CIFAR: three downsamplings in the cells
    assert specs[-1].resolution == 4


def test_builds_a_cifar100_network(space):
    arch = space.parse(EXAMPLE)
    model = space.build(arch)
    with torch.no_grad():
        out = model(space.example_input(arch, batch_size=2))
    assert out.shape == (2, 100)
    # skip is an identity where shapes match, a strided 1x1 conv where they do not
    all_skip = FBNetArch(("skip",) * 22)
    blocks = space.build(all_skip).cells
    assert isinstance(blocks[0], torch.nn.Identity)
    assert isinstance(blocks[1][0], torch.nn.Conv2d) and blocks[1][0].kernel_size == (1, 1)


def test_grouped_blocks_shuffle_channels(space):
    from search_spaces._fbnet_net import ChannelShuffle

    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_fast_features_equal_a_full_count(space):
    rng = np.random.default_rng(2)
    for arch in [space.parse(EXAMPLE), space.sample(rng)]:
        full = count_features(space.build(arch), space.example_input(arch))
        assert space.features(arch) == pytest.approx(full, rel=0, abs=0)


def test_layer_keys_describe_geometry(space):
    keys = space.layer_keys(space.parse(EXAMPLE))
    assert len(keys) == 22
    assert keys[0] == "k5_e6_r32_i16_o16_s1" and keys[-1] == "k5_e1_g2_r4_i184_o352_s1"


def test_benchmark_table_strings_are_canonical(space, shared_data):
    with open(shared_data / "fbnet" / "latency_ms.csv", newline="") as f:
        archs = [row["arch"] for row in csv.DictReader(f)]
    assert len(archs) == 5000
    assert all(str(space.parse(a)) == a for a in archs)
