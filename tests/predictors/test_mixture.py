"""The source-mixture predictor behind ``hwnas device add`` (synthetic sources, no timing)."""
from __future__ import annotations

import numpy as np
import pytest

from hardware.analytic import sample_devices
from hardware.store import MeasurementStore, space_key
from predictors import PREDICTORS, load_predictor
from predictors.mixture import (FEATURE_NAMES, FeatureCache, RealSource, SourceMixture, make_mixture, quality,
                                sample_pool, select_reference)
from search_spaces import make_space

SPACE_OPTIONS = {"resolutions": [32], "num_classes": 10, "depths": [1, 2]}


@pytest.fixture(scope="module")
def space():
    return make_space("mbv3", **SPACE_OPTIONS)


def synthetic(seed: int = 0, archs: int = 200, sources: int = 12):
    rng = np.random.default_rng(seed)
    basis = np.exp(rng.normal(0.0, 0.6, size=(archs, sources))) * rng.uniform(0.5, 5, size=sources)
    return rng, basis


def test_registered():
    assert PREDICTORS.get("mixture") is SourceMixture
    assert SourceMixture.min_measurements == 3


def test_adapt_recovers_a_nonnegative_mixture_of_sources(space):
    rng, basis = synthetic()
    truth = basis[:, 2] * 0.7 + basis[:, 5] * 0.2 + 0.3
    p = SourceMixture(space)
    chosen = select_reference(basis, 20)
    assert p.fit_encoded(basis[chosen], truth[chosen]) is p
    q = quality(p.predict_encoded(basis), truth)
    assert q["spearman"] > 0.99 and q["mape"] < 0.01
    assert min(p.weights) >= 0.0
    assert set(p.loo) == {"mixture", "single"} and p.method == min(p.loo, key=p.loo.get)
    assert p.samples == 20


def test_adapt_is_robust_to_noise_and_beats_a_wrong_source(space):
    rng, basis = synthetic(1)
    truth = basis[:, 0] * 2.0 + 1.0
    noisy = truth * np.exp(rng.normal(0, 0.03, size=truth.shape))
    p = SourceMixture(space)
    chosen = select_reference(basis, 10)
    p.fit_encoded(basis[chosen], noisy[chosen])
    adapted = quality(p.predict_encoded(basis), truth)
    wrong = quality(basis[:, 3], truth)
    assert adapted["spearman"] > 0.95 and adapted["mape"] < 0.1
    assert adapted["spearman"] > wrong["spearman"] + 0.3


@pytest.mark.parametrize("bad, match", [([1.0, 2.0], "at least 3"), ([1.0, -2.0, 3.0], "> 0"),
                                        ([1.0, float("nan"), 3.0], "finite")])
def test_adapt_rejects_bad_measurements(space, bad, match):
    _, basis = synthetic()
    with pytest.raises(ValueError, match=match):
        SourceMixture(space).fit_encoded(basis[: len(bad)], bad)


def test_fit_on_archs_rejects_too_few_measurements(space):
    archs = sample_pool(space, 2, seed=0)
    with pytest.raises(ValueError, match="at least 3"):
        SourceMixture(space, analytic=sample_devices(1, 0)).fit(archs, [1.0, 2.0])


def test_predicting_before_adapting_is_an_error(space):
    _, basis = synthetic()
    with pytest.raises(ValueError, match="not been adapted"):
        SourceMixture(space).predict_encoded(basis)


def test_a_bank_without_sources_is_an_error(space):
    with pytest.raises(ValueError, match="no source devices"):
        SourceMixture(space).basis(sample_pool(space, 2, seed=0))


def test_reference_set_is_diverse_and_distinct():
    _, basis = synthetic(2)
    chosen = select_reference(basis, 15)
    assert len(set(chosen)) == 15
    # k-center spreads over the range: the chosen set spans most of every source's spread
    logs = np.log(basis)
    span = np.ptp(logs[chosen], axis=0) / np.ptp(logs, axis=0)
    assert np.median(span) > 0.6
    assert select_reference(basis[:5], 10) == [0, 1, 2, 3, 4]


def test_save_load_round_trip_gives_identical_predictions(space, tmp_path):
    rng, basis = synthetic(3, sources=len(sample_devices(1, 0)) + 1)
    features = np.abs(rng.normal(size=(50, len(FEATURE_NAMES)))) * 1e6
    latency = features @ np.abs(rng.normal(size=len(FEATURE_NAMES))) * 1e-6 + 1.0
    real = RealSource.fit("dev", features, latency)
    assert real.fit_mape < 1e-6  # an exactly linear device is recovered
    p = SourceMixture(space, [real], sample_devices(1, 0), batch_size=1)
    p.fit_encoded(basis[:12], basis[:12, 0] * 3.0)
    path = p.save(tmp_path / "p.npz")
    q = load_predictor(path)
    assert isinstance(q, SourceMixture) and q.space.options() == space.options()
    assert q.get_state() == p.get_state()
    assert q.source_names == p.source_names and q.loo == p.loo and q.method == p.method
    np.testing.assert_array_equal(q.predict_encoded(basis), p.predict_encoded(basis))
    (tmp_path / "bad.npz").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="bad.npz"):
        load_predictor(tmp_path / "bad.npz")


def test_checkpoint_with_other_layer_features_is_refused(space, tmp_path, monkeypatch):
    _, basis = synthetic(4, sources=len(sample_devices(1, 0)))
    p = SourceMixture(space, analytic=sample_devices(1, 0)).fit_encoded(basis[:5], basis[:5, 0])
    meta, arrays = p.get_state()
    monkeypatch.setattr(p, "get_state", lambda: ({**meta, "feature_names": ["macs"]}, arrays))
    path = p.save(tmp_path / "old.npz")
    with pytest.raises(ValueError, match="other layer features"):
        load_predictor(path)


def test_fit_predict_save_load_on_architectures(space, tmp_path):
    """The Predictor lifecycle on real archs: encode is the basis, and a saved checkpoint
    predicts identically for architecture objects and their strings."""
    archs = sample_pool(space, 8, seed=0)
    p = SourceMixture(space, analytic=sample_devices(1, 0))
    basis = p.basis(archs)
    assert basis.shape == (8, len(p.source_names)) and np.all(basis > 0)
    np.testing.assert_array_equal(p.encode(archs), basis)
    y = basis @ np.array([0.5, 0.0, 2.0]) + 0.1  # a device that is a known mix of the sources
    p.fit(archs[:6], y[:6])
    np.testing.assert_allclose(p.predict(archs), y, rtol=0.05)
    q = load_predictor(p.save(tmp_path / "device.npz"))
    np.testing.assert_array_equal(q.predict([str(a) for a in archs]), p.predict(archs))
    np.testing.assert_array_equal(q.predict(archs[6:]), p.predict_encoded(basis[6:]))


def test_make_mixture_fits_real_sources_from_the_store(space, tmp_path):
    archs = sample_pool(space, 12, seed=1)
    features = FeatureCache(space).features(archs)
    coef = np.zeros(len(FEATURE_NAMES))
    coef[FEATURE_NAMES.index("convk_macs")] = 2e-6
    coef[FEATURE_NAMES.index("params")] = 1e-5
    y = features @ coef + 0.5
    skey = space_key(space)
    results = {str(a): {"latency_ms": float(v)} for a, v in zip(archs, y)}
    with MeasurementStore(tmp_path / "m.db") as store:
        store.register_source("runnerkey1", {"kind": "runner", "runner": "fake", "threads": 1, "batch_size": 1})
        store.register_source("excluded22", {"kind": "runner", "runner": "fake", "threads": 2, "batch_size": 1})
        store.register_source("accuracy33", {"kind": "train"})
        store.register_source("fewresults", {"kind": "runner", "runner": "fake", "threads": 4, "batch_size": 1})
        for key in ("runnerkey1", "excluded22", "accuracy33"):
            store.put_many(key, skey, results)
        store.put_many("fewresults", skey, dict(list(results.items())[:3]))
        bank = make_mixture(space, store, batch_size=2, exclude=["excluded22"], analytic_per_family=1,
                            seed=0, min_results=5)
    assert isinstance(bank, SourceMixture) and bank.batch_size == 2
    assert [s.name for s in bank.real] == ["fake/t1/b1/runner"]
    assert bank.real[0].count == 12 and bank.real[0].fit_mape < 1e-6
    assert bank.source_names == ["fake/t1/b1/runner"] + [d.name for d in sample_devices(1, 0)]
    np.testing.assert_allclose(bank.basis(archs)[:, 0], y, rtol=1e-6)
