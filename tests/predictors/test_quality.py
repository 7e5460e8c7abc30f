"""Cross-validated quality next to the MACs proxy, outlier rows, positive predictions."""
import logging

import numpy as np
import pytest

from predictors import load_predictor
from predictors.base import Predictor
from predictors.mixture import sample_pool
from predictors.protocol import help_split
from predictors.protocol_data import load_protocol_table
from predictors.quality import adapt, cross_validated_quality, find_outliers, folds
from search_spaces import make_space


class MeanPredictor(Predictor):
    """Predicts the mean of the training latencies: its leave-one-out predictions are
    (sum - y_i) / (n - 1), computable by hand."""

    name = "mean"

    def encode(self, archs):
        return np.zeros(len(archs))

    def fit_encoded(self, encoded, latency_ms):
        self.mean = float(np.mean(latency_ms))
        return self

    def predict_encoded(self, encoded):
        return np.full(len(encoded), self.mean)

    def get_state(self):
        return {"mean": self.mean}, {}

    @classmethod
    def from_state(cls, space, meta, arrays):
        return cls(space)


def test_folds_hold_out_every_sample_once_and_are_seeded():
    splits = folds(23, seed=3)
    assert len(splits) == 10
    assert sorted(np.concatenate(splits).tolist()) == list(range(23))
    assert [s.tolist() for s in folds(23, seed=3)] == [s.tolist() for s in splits]
    assert len(folds(6)) == 6  # leave-one-out for few samples
    with pytest.raises(ValueError, match="at least 3"):
        folds(2)


def test_cross_validated_quality_matches_the_hand_computed_case(caplog):
    space = make_space("nb201")
    archs = sample_pool(space, 40, seed=1)
    macs = np.array([space.features(a)["macs"] for a in archs])
    _, first = np.unique(macs, return_index=True)
    archs = [archs[i] for i in sorted(first)[:5]]  # 5 distinct MACs counts
    macs = np.array([space.features(a)["macs"] for a in archs])
    y = 0.5 + macs / 1e6  # exactly linear in MACs: the MACs proxy is perfect out of fold
    printed = []
    with caplog.at_level(logging.WARNING, logger="predictors.quality"):
        cv = cross_validated_quality(MeanPredictor(space), archs, y, seed=0, emit=printed.append)
    # leave-one-out (5 samples): the mean predictor predicts (sum - y_i) / 4 for sample i
    oof = (y.sum() - y) / 4
    assert cv["folds"] == 5 and cv["count"] == 5
    assert cv["predictor"]["mape"] == pytest.approx(np.mean(np.abs(oof - y) / y))
    assert cv["predictor"]["spearman"] == pytest.approx(-1.0)  # oof falls as y rises
    assert cv["macs_proxy"]["spearman"] == pytest.approx(1.0)
    assert cv["macs_proxy"]["mape"] == pytest.approx(0.0, abs=1e-9)
    assert cv["better_than_macs"] is False
    assert "not better than a plain MACs fit" in caplog.text
    assert printed[0].startswith("cross-validated (leave-one-out, 5 samples, seed 0): Spearman -1.000")
    assert "not better than a plain MACs fit" in printed[1]


def test_no_warning_when_the_predictor_beats_macs(caplog):
    space = make_space("nb201")
    archs = sample_pool(space, 40, seed=2)
    macs = np.array([space.features(a)["macs"] for a in archs])
    y = 2.0 + 1e-3 * np.arange(len(archs))  # a ranking MACs knows nothing about
    class Index(MeanPredictor):
        def encode(self, archs_):
            return np.array([archs.index(a) for a in archs_], dtype=float)

        def fit_encoded(self, encoded, latency_ms):
            self.a, self.b = np.polyfit(encoded, latency_ms, 1)
            return self

        def predict_encoded(self, encoded):
            return self.a * encoded + self.b
    with caplog.at_level(logging.WARNING, logger="predictors.quality"):
        cv = cross_validated_quality(Index(space), archs, y)
    assert cv["better_than_macs"] and cv["predictor"]["spearman"] == pytest.approx(1.0)
    assert "not better" not in caplog.text and np.ptp(macs) > 0


@pytest.fixture(scope="module")
def nb201_device():
    """20 archs with a real device's latencies, rescaled to 1-2 ms."""
    space = make_space("nb201")
    device = help_split("nb201").test[3]
    archs, columns = load_protocol_table(space, [device])
    rows = np.random.default_rng(0).permutation(len(archs))[:20]
    y = columns[device][rows]
    y = 1.0 + (y - y.min()) / np.ptp(y)
    return space, [archs[i] for i in rows], y


def test_an_outlier_row_is_named_left_out_and_predictions_stay_positive(nb201_device, caplog):
    space, archs, y = nb201_device
    y = y.copy()
    y[7] = 1300.0  # one broken measurement among 1-2 ms rows
    assert find_outliers(space, archs, y).tolist() == [7]
    predictor = load_predictor("nb201")
    with caplog.at_level(logging.WARNING, logger="predictors.quality"):
        record = adapt(predictor, archs, y, seed=0)
    assert record["outliers"] == [{"arch": str(archs[7]), "latency_ms": 1300.0}]
    assert record["samples"] == 19 and record["cross_validated"]["count"] == 19
    assert str(archs[7])[:40] in caplog.text and "1300 ms" in caplog.text
    pool = sample_pool(space, 2000, seed=5)
    predicted = predictor.predict(pool)
    assert np.all(predicted > 0)
    assert predicted.max() < 10  # the 1,300 ms row did not drag the unit along


def test_a_fit_on_the_outlier_still_predicts_positive_milliseconds(nb201_device):
    space, archs, y = nb201_device
    y = y.copy()
    y[7] = 1300.0
    predictor = load_predictor("nb201").fit(archs, y)  # no outlier removal: the floor still holds
    predicted = predictor.predict(sample_pool(space, 2000, seed=5))
    assert np.all(predicted >= 0.5 * y.min())
    # the floor is saved with the checkpoint
    assert predictor.floor_ms == pytest.approx(0.5 * y.min())


def test_clean_measurements_have_no_outliers(nb201_device):
    space, archs, y = nb201_device
    assert find_outliers(space, archs, y).tolist() == []
