"""The ``predictor`` latency source, alone and driving a latency-constrained nb201 search;
an absolute latency budget on an un-adapted predictor gets a warning about its units."""
import csv
import logging

import numpy as np
import pytest

from nas.sources import LATENCY_SOURCES, make_source
from predictors import load_predictor
from predictors.mixture import sample_pool
from predictors.protocol_data import load_protocol_table
from search_spaces import make_space
from tests.nas.sources.nb201 import A, memory_context


def test_shipped_name_or_path_gives_the_predictors_numbers(tmp_path):
    space = make_space("nb201")
    source = make_source({"predictor": "nb201"}, LATENCY_SOURCES, memory_context(tmp_path, space), "latency")
    assert source.metrics == {"latency_ms": "minimize"}
    out = source.evaluate([space.parse(A)])
    assert out[0]["latency_ms"] == pytest.approx(float(load_predictor("nb201").predict([A])[0]))
    # a relative path resolves against the recipe's folder
    load_predictor("nb201").save(tmp_path / "mine.npz")
    by_path = make_source({"predictor": "mine.npz"}, LATENCY_SOURCES, memory_context(tmp_path, space), "latency")
    assert by_path.evaluate([space.parse(A)]) == out
    assert by_path.fingerprint()["checkpoint_sha1"]


def test_bad_recipes_are_named(tmp_path):
    space = make_space("nb201")
    ctx = memory_context(tmp_path, space)
    with pytest.raises(ValueError, match=r"latency\.scale: unknown key"):
        make_source({"predictor": "nb201", "scale": 2}, LATENCY_SOURCES, ctx, "latency")
    with pytest.raises(FileNotFoundError, match="neither a file nor a shipped checkpoint"):
        make_source({"predictor": "nope.npz"}, LATENCY_SOURCES, ctx, "latency")
    with pytest.raises(ValueError, match="is a predictor for space 'fbnet', not 'nb201'"):
        make_source({"predictor": "fbnet"}, LATENCY_SOURCES, ctx, "latency")


def test_latency_constrained_nb201_search_on_the_accuracy_table(tmp_path, shared_data):
    from nas.search import run_search

    # a "new device": 10 measured networks of titan_rtx_256 adapt the shipped predictor
    space = make_space("nb201")
    archs, columns = load_protocol_table(space, ["titan_rtx_256"])
    truth = dict(zip(map(str, archs), columns["titan_rtx_256"]))
    rows = np.random.default_rng(0).choice(len(archs), 10, replace=False)
    predictor = load_predictor("nb201").fit([archs[i] for i in rows], columns["titan_rtx_256"][rows])
    ckpt = predictor.save(tmp_path / "titan.npz")
    budget = float(np.percentile(columns["titan_rtx_256"], 30))

    recipe = {
        "name": "nb201_titan", "seed": 0,
        "space": {"name": "nb201"},
        "latency": {"predictor": str(ckpt)},
        "accuracy": {"table": str(shared_data / "nb201" / "accuracy.csv"), "column": "cifar10"},
        "search": {"controller": "evolution", "trials": 48, "batch_size": 8,
                   "objectives": ["accuracy", "latency_ms"], "constraints": {"latency_ms": budget}},
        "output": str(tmp_path / "run"), "store": str(tmp_path / "store.db"),
    }
    result = run_search(recipe, progress=False)
    assert result.front
    assert all(r["latency_ms"] <= budget for r in result.front)
    best = max(result.front, key=lambda r: r["accuracy"])
    # the predictor was right about the budget on the real device (within 5%)
    assert truth[best["arch"]] <= 1.05 * budget
    with open(shared_data / "nb201" / "accuracy.csv", newline="") as f:
        accuracy = {r["arch"]: float(r["cifar10"]) for r in csv.DictReader(f)}
    feasible = sorted(accuracy[a] for a, ms in truth.items() if ms <= budget)
    assert best["accuracy"] == accuracy[best["arch"]]
    # 48 of 15,625 networks evaluated, yet better than 80% of what truly fits the budget
    # (random search would need ~8 feasible draws for that; seed 0 reaches the 94th)
    assert best["accuracy"] >= np.percentile(feasible, 80)


def test_a_budget_on_the_shipped_predictor_is_warned_about(tmp_path):
    space = make_space("nb201")
    source = make_source({"predictor": "nb201"}, LATENCY_SOURCES, memory_context(tmp_path, space), "latency")
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
    ctx = memory_context(tmp_path, space)
    source = make_source({"predictor": "mine.npz"}, LATENCY_SOURCES, ctx, "latency")
    assert not source.shipped
    assert source.constraint_warning({"latency_ms": 5.0}) is None
    # an un-adapted copy in the user's own folder has the same units problem
    load_predictor("nb201").save(tmp_path / "raw.npz")
    raw = make_source({"predictor": "raw.npz"}, LATENCY_SOURCES, ctx, "latency")
    assert "un-adapted checkpoint" in raw.constraint_warning({"latency_ms": 5.0})
