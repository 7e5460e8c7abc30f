"""The meta-learned few-shot predictor: adaptation, invariances, checkpoints."""
import numpy as np
import pytest

from predictors import FewShotPredictor, load_predictor, shipped_checkpoints
from predictors.encoders import make_encoder
from predictors.fewshot import adapt, prior_from_sources
from predictors.protocol import help_split, spearman
from predictors.protocol_data import load_protocol_table
from search_spaces import make_space


@pytest.fixture(scope="module")
def nb201():
    space = make_space("nb201")
    archs, columns = load_protocol_table(space, help_split("nb201").test)
    return space, archs, columns


def draw(n_total, n, seed):
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def test_shipped_checkpoints_exist_and_never_saw_test_devices():
    shipped = shipped_checkpoints()
    assert {"nb201", "fbnet"} <= set(shipped)
    for name in ("nb201", "fbnet"):
        predictor = load_predictor(name)
        assert isinstance(predictor, FewShotPredictor)
        assert set(predictor.devices) == set(help_split(name).sources)
        assert not set(predictor.devices) & set(help_split(name).test)
    assert sum(p.stat().st_size for p in shipped.values()) < 2_000_000


def test_finetuning_on_the_device_beats_the_unadapted_predictor(nb201):
    _, archs, columns = nb201
    predictor = load_predictor("nb201")
    for device in ("eyeriss", "pixel2"):
        y = columns[device]
        rows = draw(len(archs), 10, seed=0)
        rest = np.setdiff1d(np.arange(len(archs)), rows)
        before = spearman(predictor.predict([archs[i] for i in rest]), y[rest])
        predictor.fit([archs[i] for i in rows], y[rows])
        after = spearman(predictor.predict([archs[i] for i in rest]), y[rest])
        assert after > before + 0.02, (device, before, after)
        assert after > 0.85


def test_save_load_round_trip_gives_identical_predictions(nb201, tmp_path):
    _, archs, columns = nb201
    predictor = load_predictor("nb201")
    probe = archs[:500]
    unadapted = predictor.predict(probe)
    path = predictor.save(tmp_path / "plain.npz")
    np.testing.assert_array_equal(load_predictor(path).predict(probe), unadapted)

    rows = draw(len(archs), 10, seed=1)
    predictor.fit([archs[i] for i in rows], columns["raspi4"][rows])
    adapted = predictor.predict(probe)
    assert not np.allclose(adapted, unadapted)
    restored = load_predictor(predictor.save(tmp_path / "adapted.npz"))
    np.testing.assert_array_equal(restored.predict(probe), adapted)
    assert restored.view_weights == predictor.view_weights


def test_any_unit_works(nb201):
    # microseconds instead of milliseconds: same ranking, predictions scale exactly
    _, archs, columns = nb201
    rows = draw(len(archs), 10, seed=2)
    fit_archs, probe = [archs[i] for i in rows], archs[:300]
    ms = load_predictor("nb201").fit(fit_archs, columns["fpga"][rows]).predict(probe)
    us = load_predictor("nb201").fit(fit_archs, 1000.0 * columns["fpga"][rows]).predict(probe)
    np.testing.assert_allclose(us, 1000.0 * ms, rtol=1e-9)


def test_integer_rounded_measurements_still_rank_well(nb201):
    # phones report whole milliseconds: rounding a smooth device must not break adaptation
    _, archs, columns = nb201
    y = columns["titan_rtx_256"]
    rows = draw(len(archs), 10, seed=3)
    rest = np.setdiff1d(np.arange(len(archs)), rows)
    predictor = load_predictor("nb201").fit([archs[i] for i in rows], np.round(y[rows]))
    assert spearman(predictor.predict([archs[i] for i in rest]), y[rest]) > 0.97


def test_adapt_function_and_weight_forms_agree():
    rng = np.random.default_rng(0)
    sources = rng.normal(size=(8, 6)) + 1.0
    mean, cov = prior_from_sources(sources)
    X = np.hstack([np.ones((9, 1)), rng.random((9, 5))])
    t = X @ (sources[0] + 0.1 * rng.normal(size=6)) + 0.01 * rng.normal(size=9)
    ll_f, w_f = adapt(X, t, mean, cov, form="function")
    ll_w, w_w = adapt(X, t, mean, cov, form="weight")
    np.testing.assert_allclose(w_f, w_w, rtol=1e-6, atol=1e-9)
    assert ll_f == pytest.approx(ll_w, rel=1e-8)
    with pytest.raises(ValueError, match="form"):
        adapt(X, t, mean, cov, form="dual")


def test_pretraining_recovers_a_device_spanned_by_the_sources():
    # synthetic, exactly additive devices on fbnet: a new device mixing the sources'
    # per-layer costs must be ranked almost perfectly from 10 measurements
    space = make_space("fbnet")
    rng = np.random.default_rng(4)
    archs = [space.sample(rng) for _ in range(600)]
    onehot = make_encoder(space).encode(archs)["layers"]
    costs = rng.gamma(2.0, size=(4, onehot.shape[1]))
    table = onehot @ costs.T
    predictor = FewShotPredictor.pretrain(space, archs, table, ["d0", "d1", "d2", "d3"], seed=0)
    target = onehot @ (0.6 * costs[0] + 0.4 * costs[3])
    rows = draw(len(archs), 10, seed=5)
    rest = np.setdiff1d(np.arange(len(archs)), rows)
    predictor.fit([archs[i] for i in rows], target[rows])
    assert spearman(predictor.predict([archs[i] for i in rest]), target[rest]) > 0.98


def test_pretrain_and_fit_reject_bad_input(nb201):
    space, archs, columns = nb201
    with pytest.raises(ValueError, match="at least 2 source devices"):
        FewShotPredictor.pretrain(space, archs[:50], np.ones((50, 1)), ["only"])
    with pytest.raises(ValueError, match=r"\(archs, devices\)"):
        FewShotPredictor.pretrain(space, archs[:50], np.ones((49, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="positive"):
        FewShotPredictor.pretrain(space, archs[:50], -np.ones((50, 2)), ["a", "b"])
    predictor = load_predictor("nb201")
    with pytest.raises(ValueError, match="at least 2"):
        predictor.fit(archs[:1], [1.0])
    with pytest.raises(ValueError, match="positive"):
        predictor.fit(archs[:3], [1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="max_pool"):
        predictor.predict(["|max_pool~0|+|none~0|none~1|+|none~0|none~1|none~2|"])


def test_shipped_fbnet_checkpoint_is_reproduced_by_pretraining(shared_data):
    from predictors.data import LatencyTable
    from predictors.base import read_checkpoint
    from predictors import resolve_checkpoint

    space = make_space("fbnet")
    split = help_split("fbnet")
    table = LatencyTable.read(shared_data / "fbnet" / "latency_ms.csv", space, split.sources)
    fresh = FewShotPredictor.pretrain(space, table.archs, table.values, table.devices, seed=0)
    _, shipped = read_checkpoint(resolve_checkpoint("fbnet"))
    _, arrays = fresh.get_state()
    assert set(arrays) == set(shipped)
    for key in arrays:
        # equal up to floating-point summation order: BLAS kernels differ between CPUs
        # (the checkpoint was written on another Xeon; here values differ by ~1e-8)
        np.testing.assert_allclose(arrays[key], shipped[key], rtol=1e-6, atol=1e-7)
