"""The ``predictor`` latency source, alone and driving a latency-constrained nb201 search."""
import csv

import numpy as np
import pytest

from hardware.store import MeasurementStore
from nas.sources import LATENCY_SOURCES, RunContext, make_source
from predictors import load_predictor
from predictors.protocol_data import load_protocol_table
from search_spaces import make_space

A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def context(space, tmp_path):
    return RunContext(space=space, store=MeasurementStore(":memory:"), run_dir=tmp_path, base_dir=tmp_path,
                      progress=False)


def test_shipped_name_or_path_gives_the_predictors_numbers(tmp_path):
    space = make_space("nb201")
    source = make_source({"predictor": "nb201"}, LATENCY_SOURCES, context(space, tmp_path), "latency")
    assert source.metrics == {"latency_ms": "minimize"}
    out = source.evaluate([space.parse(A)])
    assert out[0]["latency_ms"] == pytest.approx(float(load_predictor("nb201").predict([A])[0]))
    # a relative path resolves against the recipe's folder
    load_predictor("nb201").save(tmp_path / "mine.npz")
    by_path = make_source({"predictor": "mine.npz"}, LATENCY_SOURCES, context(space, tmp_path), "latency")
    assert by_path.evaluate([space.parse(A)]) == out
    assert by_path.fingerprint()["checkpoint_sha1"]


def test_bad_recipes_are_named(tmp_path):
    space = make_space("nb201")
    ctx = context(space, tmp_path)
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
