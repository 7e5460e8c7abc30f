"""The nb201 space: NAS-Bench-201 strings exactly, strict parsing, the standard network."""
import csv

import numpy as np
import pytest
import torch

from search_spaces import SPACES, make_space
from search_spaces.features import count_features
from search_spaces.nb201 import EDGES, OPS, NB201Arch, NB201Space

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.fixture(scope="module")
def space():
    return make_space("nb201")


def test_registered_and_sized(space):
    assert SPACES.get("nb201") is NB201Space
    assert space.size() == 5 ** 6 == 15625


def test_example_string_round_trips(space):
    arch = space.parse(EXAMPLE)
    assert arch.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3",
                        "skip_connect", "nor_conv_3x3", "skip_connect")
    assert str(arch) == EXAMPLE
    assert space.decode(space.encode(arch)) == arch


def test_every_arch_round_trips(space):
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        assert space.parse(str(arch)) == arch
        assert space.contains(arch)
    child = space.mutate(space.parse(EXAMPLE), rng)
    assert child != space.parse(EXAMPLE) and space.contains(child)


@pytest.mark.parametrize("text, message", [
    (EXAMPLE.replace("avg_pool_3x3", "max_pool_3x3"), "max_pool_3x3"),
    (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~0"), "avg_pool_3x3~0"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "3 nodes"),
    (EXAMPLE.replace("|+|skip_connect~0|", "|+|"), "node 3"),
    (EXAMPLE.replace("nor_conv_3x3~0|+", "nor_conv_3x3~0+", 1), "wrapped"),
])
def test_strict_parsing_names_the_problem(space, text, message):
    with pytest.raises(ValueError, match=message):
        space.parse(text)


def test_live_edges_follow_the_graph():
    # a chain 0 -> 1 -> 2 -> 3: exactly its three edges are live
    arch = NB201Arch(("nor_conv_3x3", "none", "nor_conv_1x1", "none", "none", "skip_connect"))
    assert arch.live_edges() == (True, False, True, False, False, True)
    assert arch.connected()
    # node 1 computes a conv but feeds nothing that reaches the output
    arch = NB201Arch(("nor_conv_3x3", "avg_pool_3x3", "none", "none", "none", "nor_conv_1x1"))
    assert arch.live_edges() == (False, True, False, False, False, True)
    assert not NB201Arch(("nor_conv_3x3",) + ("none",) * 5).connected()


def test_live_macs_count_only_edges_that_reach_the_output(space):
    chain = NB201Arch(("nor_conv_3x3", "none", "nor_conv_1x1", "none", "none", "skip_connect"))
    assert space.live_macs(chain) == space.features(chain)["macs"]  # every non-none edge is live
    # a 3x3 convolution into node 2, which feeds nothing: built and counted by features, not live
    dead = NB201Arch(("nor_conv_3x3", "nor_conv_3x3", "none", "none", "skip_connect", "none"))
    cut = NB201Arch(("nor_conv_3x3", "none", "none", "none", "skip_connect", "none"))
    assert space.features(dead)["macs"] > space.features(cut)["macs"]
    assert space.live_macs(dead) == space.live_macs(cut) == space.features(cut)["macs"]
    # a live 3x3 convolution costs more than a live 1x1 one in the same place
    assert space.live_macs(chain) > space.live_macs(
        NB201Arch(("nor_conv_1x1", "none", "nor_conv_1x1", "none", "none", "skip_connect")))


def test_structure_encoding_is_the_path_encoding_with_the_edges(space):
    edges = 6 * 5  # one-hot decisions first, then one feature per path and op sequence

    def paths(arch):
        return space.structure_encoding(arch)[edges:]

    # the chain 0 -> 1 -> 2 -> 3 (conv3, conv1, skip) is one path: one feature set
    chain = NB201Arch(("nor_conv_3x3", "none", "nor_conv_1x1", "none", "none", "skip_connect"))
    code = space.structure_encoding(chain)
    assert code.shape == (edges + 4 + 16 + 16 + 64,) and paths(chain).sum() == 1 and code.sum() == 1 + 6
    # ops off every path (node 2 fed by a pool but not feeding the output) change no path ...
    dead = NB201Arch(("nor_conv_3x3", "avg_pool_3x3", "none", "none", "skip_connect", "none"))
    also_dead = NB201Arch(("nor_conv_3x3", "nor_conv_1x1", "none", "none", "skip_connect", "none"))
    assert np.array_equal(paths(dead), paths(also_dead))
    # ... but the edges still tell the cells apart
    assert not np.array_equal(space.structure_encoding(dead), space.structure_encoding(also_dead))
    # an op on a path changes it, and so does its position along the path
    assert not np.array_equal(paths(dead), paths(
        NB201Arch(("nor_conv_1x1", "avg_pool_3x3", "none", "none", "skip_connect", "none"))))
    swapped = NB201Arch(("skip_connect", "none", "none", "none", "nor_conv_3x3", "none"))
    assert not np.array_equal(paths(dead), paths(swapped))
    assert not paths(NB201Arch(("none",) * 6)).any()


def test_builds_the_standard_network(space):
    arch = space.parse(EXAMPLE)
    model = space.build(arch)
    x = space.example_input(arch, batch_size=2)
    assert x.shape == (2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    # 3 stages x 5 cells plus 2 reduction blocks, as in NAS-Bench-201
    assert len(model.cells) == 17
    assert make_space("nb201", num_classes=100).build(arch).classifier.out_features == 100


def test_fast_features_equal_a_full_count(space):
    rng = np.random.default_rng(1)
    for arch in [space.parse(EXAMPLE), NB201Arch(("none",) * 6), space.sample(rng)]:
        full = count_features(space.build(arch), space.example_input(arch))
        assert space.features(arch) == pytest.approx(full, rel=0, abs=0)
    all_conv = NB201Arch(("nor_conv_3x3",) * 6)
    assert space.features(all_conv)["macs"] > space.features(NB201Arch(("nor_conv_1x1",) * 6))["macs"]


def test_layer_keys_cover_every_op_instance(space):
    keys = space.layer_keys(space.parse(EXAMPLE))
    assert len(keys) == 3 * 5 * len(EDGES)
    assert "nor_conv_3x3_c64_r8" in keys and "avg_pool_3x3_c16_r32" in keys
    assert {k.rsplit("_c", 1)[0] for k in keys} <= set(OPS)


def test_benchmark_table_strings_are_canonical(space, shared_data):
    with open(shared_data / "nb201" / "latency_ms.csv", newline="") as f:
        archs = [row["arch"] for row in csv.DictReader(f)]
    assert len(archs) == 15625 == len(set(archs))
    assert all(str(space.parse(a)) == a for a in archs)
