"""An absolute latency budget on an un-adapted predictor gets a warning about its units."""
import logging

import numpy as np

from hardware.store import MeasurementStore
from nas.sources import LATENCY_SOURCES, RunContext, make_source
from predictors import load_predictor
from predictors.mixture import sample_pool
from search_spaces import make_space


def context(space, tmp_path):
    return RunContext(space=space, store=MeasurementStore(":memory:"), run_dir=tmp_path, base_dir=tmp_path,
                      progress=False)


def test_a_budget_on_the_shipped_predictor_is_warned_about(tmp_path):
    space = make_space("nb201")
    source = make_source({"predictor": "nb201"}, LATENCY_SOURCES, context(space, tmp_path), "latency")
    assert source.shipped
    message = source.constraint_warning({"latency_ms": 5.0})
    assert message and "average source device" in message and "latency_ms <= 5" in message
    assert "shipped checkpoint" in message
    # no latency bound: nothing to say
    assert source.constraint_warning({"accuracy": -90.0}) is None


def test_the_search_logs_the_warning(tmp_path, caplog):
    from nas.search import Search
    from nas.recipe import load_recipe

    recipe = {"name": "w", "seed": 0, "space": {"name": "nb201"}, "latency": {"predictor": "nb201"},
              "accuracy": {"table": str(tmp_path / "acc.csv"), "column": "acc"},
              "search": {"trials": 1, "constraints": {"latency_ms": 5.0}, "storage": ":memory:"},
              "output": str(tmp_path / "run"), "store": str(tmp_path / "store.db")}
    space = make_space("nb201")
    (tmp_path / "acc.csv").write_text("arch,acc\n" + "".join(f"{a},50\n" for a in sample_pool(space, 3, seed=0)))
    with caplog.at_level(logging.WARNING, logger="hwnas.search"):
        Search(load_recipe(recipe), progress=False).close()
    assert "average source device" in caplog.text


def test_no_warning_for_an_adapted_predictor(tmp_path):
    space = make_space("nb201")
    archs = sample_pool(space, 12, seed=0)
    adapted = load_predictor("nb201")
    adapted.fit(archs, 1.0 + np.arange(12) / 12)
    adapted.save(tmp_path / "mine.npz")
    ctx = context(space, tmp_path)
    source = make_source({"predictor": "mine.npz"}, LATENCY_SOURCES, ctx, "latency")
    assert not source.shipped
    assert source.constraint_warning({"latency_ms": 5.0}) is None
    # an un-adapted copy in the user's own folder has the same units problem
    load_predictor("nb201").save(tmp_path / "raw.npz")
    raw = make_source({"predictor": "raw.npz"}, LATENCY_SOURCES, ctx, "latency")
    assert "un-adapted checkpoint" in raw.constraint_warning({"latency_ms": 5.0})
