"""MACs proxy, layer-wise lookup table and source-transfer baselines."""
import numpy as np
import pytest

from predictors import PREDICTORS, LayerLUT, MACsProxy, SourceTransfer, load_predictor
from predictors.protocol import spearman
from search_spaces import make_space


@pytest.fixture(scope="module")
def fbnet():
    space = make_space("fbnet")
    rng = np.random.default_rng(0)
    return space, [space.sample(rng) for _ in range(400)]


def test_registered():
    assert {"fewshot", "macs", "lut", "transfer"} <= set(PREDICTORS.names())


def test_macs_proxy_ranks_by_macs_and_calibrates_to_ms(tmp_path):
    space = make_space("nb201")
    rng = np.random.default_rng(3)
    archs = [space.sample(rng) for _ in range(200)]
    macs = np.array([space.features(a)["macs"] for a in archs])
    proxy = MACsProxy(space)
    assert spearman(proxy.predict(archs), macs) == pytest.approx(1.0)
    y = 2e-6 * macs + 0.5  # a device that is exactly compute-bound
    proxy.fit(archs[:10], y[:10])
    np.testing.assert_allclose(proxy.predict(archs), y, rtol=1e-6)
    np.testing.assert_array_equal(load_predictor(proxy.save(tmp_path / "m.npz")).predict(archs[:20]),
                                  proxy.predict(archs[:20]))


def test_lookup_table_recovers_additive_block_costs(fbnet, tmp_path):
    space, archs = fbnet
    keys = sorted({k for a in archs for k in space.layer_keys(a)})
    cost = dict(zip(keys, np.random.default_rng(1).gamma(2.0, 0.1, size=len(keys))))
    y = np.array([1.0 + sum(cost[k] for k in space.layer_keys(a)) for a in archs])
    lut = LayerLUT(space, ridge=1e-9).fit(archs[:300], y[:300])
    covered = [i for i in range(300, 400) if set(space.layer_keys(archs[i])) <= set(lut.costs)]
    assert covered
    np.testing.assert_allclose(lut.predict([archs[i] for i in covered]), y[covered], rtol=1e-4)
    restored = load_predictor(lut.save(tmp_path / "lut.npz"))
    np.testing.assert_array_equal(restored.predict(archs[:5]), lut.predict(archs[:5]))


def test_lookup_table_refuses_unseen_blocks(fbnet):
    space, archs = fbnet
    lut = LayerLUT(space).fit(archs[:2], [1.0, 2.0])
    unseen = next(a for a in archs if not set(space.layer_keys(a)) <= set(lut.costs))
    with pytest.raises(ValueError, match="no cost for block"):
        lut.predict([unseen])
    with pytest.raises(ValueError, match="empty"):
        LayerLUT(space).predict(archs[:1])


def test_transfer_recovers_a_mix_of_source_devices(fbnet, tmp_path):
    space, archs = fbnet
    rng = np.random.default_rng(2)
    sources = rng.gamma(2.0, size=(len(archs), 3)) + 1.0
    target = 7.0 * (0.7 * sources[:, 0] / sources[:, 0].mean() + 0.3 * sources[:, 2] / sources[:, 2].mean())
    model = SourceTransfer(space, archs, sources, ["a", "b", "c"], ridge=1e-8).fit(archs[:10], target[:10])
    np.testing.assert_allclose(model.predict(archs), target, rtol=1e-5)
    restored = load_predictor(model.save(tmp_path / "t.npz"))
    np.testing.assert_array_equal(restored.predict(archs[:50]), model.predict(archs[:50]))
    with pytest.raises(ValueError, match="no source latencies"):
        model.predict([next(a for a in (space.sample(rng) for _ in range(10)) if str(a) not in model.row)])
