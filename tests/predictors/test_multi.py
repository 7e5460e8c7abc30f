"""One checkpoint predicting several metrics of one device."""
from __future__ import annotations

import numpy as np
import pytest

from predictors import MACsProxy, MultiMetricPredictor, load_predictor
from search_spaces import make_space


def test_members_fit_their_metric_and_round_trip(tmp_path):
    space = make_space("hybrid_slm", widths=[32, 48], depths=[2, 3])
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(8)]
    macs = np.array([space.features(a)["macs"] for a in archs])
    predictor = MultiMetricPredictor(space, {"decode_ms": MACsProxy(space), "prefill_ms": MACsProxy(space)})
    assert predictor.metrics == ("decode_ms", "prefill_ms")
    predictor.fit(archs, {"decode_ms": 1e-6 * macs + 0.5, "prefill_ms": 3e-6 * macs})
    got = predictor.predict_metrics(archs)
    np.testing.assert_allclose(got["decode_ms"], 1e-6 * macs + 0.5, rtol=1e-6)
    np.testing.assert_allclose(got["prefill_ms"], 3e-6 * macs, rtol=1e-6)
    np.testing.assert_array_equal(predictor.predict(archs), got["decode_ms"])  # the first metric
    back = load_predictor(predictor.save(tmp_path / "device.npz"))
    assert isinstance(back, MultiMetricPredictor) and back.metrics == predictor.metrics
    for metric, values in back.predict_metrics(archs).items():
        np.testing.assert_array_equal(values, got[metric])


def test_measurements_must_name_every_metric():
    space = make_space("hybrid_slm", widths=[32], depths=[2])
    predictor = MultiMetricPredictor(space, {"decode_ms": MACsProxy(space), "memory_mb": MACsProxy(space)})
    archs = [space.sample(np.random.default_rng(i)) for i in range(4)]
    with pytest.raises(ValueError, match=r"missing \['memory_mb'\], unknown \['prefill_ms'\]"):
        predictor.fit(archs, {"decode_ms": [1, 2, 3, 4], "prefill_ms": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match="fits a mapping metric -> values"):
        predictor.fit(archs, [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="must be a positive number"):
        predictor.fit(archs, {"decode_ms": [1, 2, 3, 4], "memory_mb": [1, 2, 0, 4]})
    with pytest.raises(ValueError, match="no '/'"):
        MultiMetricPredictor(space, {"a/b": MACsProxy(space)})
