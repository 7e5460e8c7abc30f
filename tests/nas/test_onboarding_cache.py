"""``device add`` keeps the featurised pool on disk between runs."""
import logging

import numpy as np

from nas.onboarding import featurised_pool, pool_cache_path
from predictors.mixture import sample_pool
from search_spaces import make_space

SPACE_OPTIONS = {"resolutions": [32], "num_classes": 10, "depths": [1, 2]}


def test_pool_features_are_counted_once_then_read_back(tmp_path, caplog):
    space = make_space("mbv3", **SPACE_OPTIONS)
    archs = sample_pool(space, 4, seed=0)
    lines = []
    first = featurised_pool(space, archs, 0, 4, tmp_path, progress=False, log=lines.append)
    assert first.computed == 4 and pool_cache_path(space, 0, 4, tmp_path).is_file()
    second = featurised_pool(space, archs, 0, 4, tmp_path, progress=False, log=lines.append)
    assert second.computed == 0  # every cost came from disk
    np.testing.assert_array_equal(second.features(archs), first.features(archs))
    np.testing.assert_array_equal(second.table(archs).macs, first.table(archs).macs)
    # another pool seed, size or space options is another cache file
    assert pool_cache_path(space, 1, 4, tmp_path) != pool_cache_path(space, 0, 4, tmp_path)
    assert pool_cache_path(space, 0, 5, tmp_path) != pool_cache_path(space, 0, 4, tmp_path)
    other = make_space("mbv3", **{**SPACE_OPTIONS, "depths": [1, 3]})
    assert pool_cache_path(other, 0, 4, tmp_path) != pool_cache_path(space, 0, 4, tmp_path)


def test_a_corrupt_cache_is_recounted_with_a_warning(tmp_path, caplog):
    space = make_space("mbv3", **SPACE_OPTIONS)
    archs = sample_pool(space, 3, seed=0)
    path = pool_cache_path(space, 0, 3, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"features": 1, "costs": {"x": [[1, 2]]')  # truncated write
    lines = []
    with caplog.at_level(logging.WARNING, logger="nas.onboarding"):
        cache = featurised_pool(space, archs, 0, 3, tmp_path, progress=False, log=lines.append)
    assert cache.computed == 3 and "unreadable" in caplog.text and str(path) in caplog.text
    assert any("unreadable" in line for line in lines)
    # rewritten: the next run reads it
    assert featurised_pool(space, archs, 0, 3, tmp_path, progress=False, log=lines.append).computed == 0
    path.write_text('{"features": 1, "costs": {"x": [[1, 2]]}}')  # parses, wrong shape
    with caplog.at_level(logging.WARNING, logger="nas.onboarding"):
        assert featurised_pool(space, archs, 0, 3, tmp_path, progress=False, log=lines.append).computed == 3
