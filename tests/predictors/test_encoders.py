"""Architecture encoders: the views the few-shot predictor regresses on."""
import numpy as np

from predictors.encoders import DecisionEncoder, FBNetEncoder, NB201Encoder, make_encoder
from search_spaces import make_space
from search_spaces.nb201 import NB201Arch


def test_nb201_views_encode_ops_and_the_live_graph():
    space = make_space("nb201")
    assert isinstance(make_encoder(space), NB201Encoder)
    dead = NB201Arch(("nor_conv_3x3", "none", "none", "none", "none", "nor_conv_1x1"))  # conv1 feeds nothing
    live = NB201Arch(("nor_conv_3x3", "none", "nor_conv_3x3", "none", "none", "nor_conv_1x1"))
    views = make_encoder(space).encode([dead, live])
    assert views["counts"].tolist() == [[1, 0, 1, 1, 0], [1, 0, 1, 2, 0]]
    graph = views["graph"]
    assert graph.shape == (2, 1 + 30 + 30 + 1 + 4) and np.all(graph[:, 0] == 1)
    onehot, live_onehot = graph[:, 1:31].reshape(2, 6, 5), graph[:, 31:61].reshape(2, 6, 5)
    assert onehot[0, 0, 3] == 1 and live_onehot[0, 0, 3] == 0  # the dead conv is seen but not live
    assert live_onehot[1, 0, 3] == 1 and live_onehot[1, 2, 3] == 1
    assert views["pairs"].shape == (2, graph.shape[1] + 15 * 25)


def test_fbnet_views_sum_per_layer_costs():
    space = make_space("fbnet")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(5)]
    enc = make_encoder(space)
    assert isinstance(enc, FBNetEncoder)
    views = enc.encode(archs)
    assert views["layers"].shape == (5, 1 + 22 * 9) and np.all(views["layers"][:, 1:].sum(axis=1) == 22)
    # pointwise MACs grow with expansion at a fixed position
    heavy = space.parse("-".join(["k3_e6"] * 22))
    light = space.parse("-".join(["k3_e1"] * 22))
    h, lo = enc.encode([heavy, light])["analytic"]
    assert h[1] > lo[1] and h[2] > lo[2]


def test_any_other_space_falls_back_to_decisions():
    space = make_space("mobiledet")
    enc = make_encoder(space)
    assert isinstance(enc, DecisionEncoder)
    arch = space.sample(np.random.default_rng(0))
    views = enc.encode([arch])
    assert views["decisions"].sum() == 1 + len(space.decisions())
    assert views["analytic"].shape == (1, 4)


def test_precision_variants_are_different_inputs_in_every_view():
    space = make_space("mbv3", resolutions=[32], widths=[0.5], depths=[2], num_classes=10,
                       precisions=["fp32", "int8"], precision_granularity="suffix")
    arch = space.float_arch(space.sample(np.random.default_rng(0)))
    int8 = space.with_precisions(arch, {"s4": "int8", "head": "int8"})
    views = make_encoder(space).encode([arch, int8])
    for name, matrix in views.items():
        assert not np.array_equal(matrix[0], matrix[1]), name
    assert space.features(int8)["int8_macs"] > 0 == space.features(arch)["int8_macs"]
