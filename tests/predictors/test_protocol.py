"""HELP's protocol: device splits, adaptation draws and query sets."""
import numpy as np
import pytest

from predictors.protocol import HELP, episodes, evaluate_device, help_split, mape, spearman


def test_splits_are_disjoint_and_published_numbers_cover_the_test_devices():
    for name, split in HELP.items():
        assert not set(split.sources) & set(split.test)
        assert set(split.published) == set(split.test)
    assert help_split("nb201").published["pixel2"] == 0.802
    with pytest.raises(ValueError, match="not 'mbv3'"):
        help_split("mbv3")


def test_remaining_queries_are_everything_not_drawn_and_seeded():
    latency = np.arange(1.0, 101.0)
    first = episodes(latency, 10, [0, 1])
    again = episodes(latency, 10, [0, 1])
    for (seed, rows, query), (_, rows2, _) in zip(first, again):
        assert len(rows) == 10 and np.array_equal(rows, rows2)
        assert sorted(np.concatenate([rows, query]).tolist()) == list(range(100))
    assert not np.array_equal(first[0][1], first[1][1])


def test_help_split_trims_outliers_of_pool_and_queries():
    rng = np.random.default_rng(0)
    latency = rng.random(2500) + 1.0
    (_, rows, query), = episodes(latency, 10, [3], "help-split", pool=900)
    assert len(query) == 800 and query.min() >= 900 and query.max() < 1900
    pool = latency[:900]
    low, high = np.sort(pool)[90], np.sort(pool)[809]
    assert rows.max() < 900 and np.all((latency[rows] >= low) & (latency[rows] <= high))
    with pytest.raises(ValueError, match="needs at least 1900"):
        episodes(latency[:1000], 10, [0], "help-split", pool=900)
    with pytest.raises(ValueError, match="unknown query mode"):
        episodes(latency, 10, [0], "all")


def test_scores():
    y = np.array([1.0, 2.0, 4.0, 8.0])
    assert spearman(y * 3, y) == pytest.approx(1.0) and spearman(-y, y) == pytest.approx(-1.0)
    assert mape(y * 1.1, y) == pytest.approx(10.0)
    score = evaluate_device("d", np.arange(1.0, 51.0), lambda rows, yy: np.arange(1.0, 51.0) ** 2, 5, [0, 1])
    assert score.spearman == pytest.approx([1.0, 1.0]) and score.mean_spearman == pytest.approx(1.0)
