"""The few-shot transfer predictor behind ``hwnas device add`` (synthetic sources, no timing)."""
from __future__ import annotations

import numpy as np
import pytest

from hardware.analytic import sample_devices
from hardware.onboarding import (FEATURE_NAMES, RealSource, TransferPredictor, quality, select_reference)


def synthetic(seed: int = 0, archs: int = 200, sources: int = 12):
    rng = np.random.default_rng(seed)
    basis = np.exp(rng.normal(0.0, 0.6, size=(archs, sources))) * rng.uniform(0.5, 5, size=sources)
    return rng, basis


def test_adapt_recovers_a_nonnegative_mixture_of_sources():
    rng, basis = synthetic()
    truth = basis[:, 2] * 0.7 + basis[:, 5] * 0.2 + 0.3
    p = TransferPredictor("mbv3")
    chosen = select_reference(basis, 20)
    p.adapt(basis[chosen], truth[chosen])
    q = quality(p.predict_basis(basis), truth)
    assert q["spearman"] > 0.99 and q["mape"] < 0.01
    assert min(p.weights) >= 0.0


def test_adapt_is_robust_to_noise_and_beats_a_wrong_source():
    rng, basis = synthetic(1)
    truth = basis[:, 0] * 2.0 + 1.0
    noisy = truth * np.exp(rng.normal(0, 0.03, size=truth.shape))
    p = TransferPredictor("mbv3")
    chosen = select_reference(basis, 10)
    p.adapt(basis[chosen], noisy[chosen])
    adapted = quality(p.predict_basis(basis), truth)
    wrong = quality(basis[:, 3], truth)
    assert adapted["spearman"] > 0.95 and adapted["mape"] < 0.1
    assert adapted["spearman"] > wrong["spearman"] + 0.3


@pytest.mark.parametrize("bad, match", [([1.0, 2.0], "at least 3"), ([1.0, -2.0, 3.0], "> 0"),
                                        ([1.0, float("nan"), 3.0], "finite")])
def test_adapt_rejects_bad_measurements(bad, match):
    _, basis = synthetic()
    with pytest.raises(ValueError, match=match):
        TransferPredictor("mbv3").adapt(basis[: len(bad)], bad)


def test_predicting_before_adapting_is_an_error():
    _, basis = synthetic()
    with pytest.raises(ValueError, match="not been adapted"):
        TransferPredictor("mbv3").predict_basis(basis)


def test_reference_set_is_diverse_and_distinct():
    _, basis = synthetic(2)
    chosen = select_reference(basis, 15)
    assert len(set(chosen)) == 15
    # k-center spreads over the range: the chosen set spans most of every source's spread
    logs = np.log(basis)
    span = np.ptp(logs[chosen], axis=0) / np.ptp(logs, axis=0)
    assert np.median(span) > 0.6
    assert select_reference(basis[:5], 10) == [0, 1, 2, 3, 4]


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    rng, basis = synthetic(3, sources=len(sample_devices(1, 0)) + 1)
    features = np.abs(rng.normal(size=(50, len(FEATURE_NAMES)))) * 1e6
    latency = features @ np.abs(rng.normal(size=len(FEATURE_NAMES))) * 1e-6 + 1.0
    real = RealSource.fit("dev", features, latency)
    assert real.fit_mape < 1e-6  # an exactly linear device is recovered
    p = TransferPredictor("mbv3", [real], sample_devices(1, 0), batch_size=1)
    p.adapt(basis[:12], basis[:12, 0] * 3.0)
    p.save(tmp_path / "p.json")
    q = TransferPredictor.load(tmp_path / "p.json")
    assert q.to_dict() == p.to_dict() and q.digest() == p.digest()
    np.testing.assert_array_equal(q.predict_basis(basis), p.predict_basis(basis))
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="bad.json"):
        TransferPredictor.load(tmp_path / "bad.json")
