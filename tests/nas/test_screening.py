"""Cheap-objective screening, warm start and resumption of the search loop, on tabulated
NAS-Bench-201 objectives (synthetic tables covering all 15,625 cells: instant lookups)."""
import hashlib
import itertools
import json

import numpy as np
import pytest
import yaml

from nas.recipe import RecipeError, load_recipe
from nas.search import SCREENED_ATTR, WARM_START_ATTR, Search, run_search
from nas.sources import TableAccuracy
from search_spaces import make_space

COST = {"none": 0.0, "skip_connect": 0.2, "avg_pool_3x3": 1.0, "nor_conv_1x1": 1.5, "nor_conv_3x3": 4.0}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")
    space = make_space("nb201")
    names = list(space.decisions())
    acc, lat = ["arch,cifar10,live"], ["arch,dev"]
    for combo in itertools.product(*space.decisions().values()):
        arch = space.decode(dict(zip(names, combo)))
        noise = int(hashlib.sha1(str(arch).encode()).hexdigest()[:4], 16) / 65536
        # live: only convolutions on an input-to-output path count, as in a trained network
        live = sum(op.startswith("nor_conv") and on for op, on in zip(arch.ops, arch.live_edges()))
        acc.append(f"{arch},{50 + 5 * sum(op.startswith('nor_conv') for op in arch.ops) + noise:.4f},"
                   f"{50 + 5 * live + noise:.4f}")
        lat.append(f"{arch},{1 + sum(COST[op] for op in arch.ops):.3f}")
    (folder / "acc.csv").write_text("\n".join(acc) + "\n")
    (folder / "lat.csv").write_text("\n".join(lat) + "\n")
    return folder


@pytest.fixture
def evaluated(monkeypatch):
    """The archs sent to the accuracy source (the expensive evaluation), in order."""
    archs = []
    original = TableAccuracy.evaluate
    monkeypatch.setattr(TableAccuracy, "evaluate", lambda self, batch: archs.extend(batch) or original(self, batch))
    return archs


def recipe(tmp_path, tables, name="run", column="cifar10", **search):
    return {"name": "screen", "seed": 0, "space": {"name": "nb201"},
            "latency": {"table": str(tables / "lat.csv"), "column": "dev"},
            "accuracy": {"table": str(tables / "acc.csv"), "column": column},
            "search": {"controller": "evolution", "trials": 16, "batch_size": 4, **search},
            "output": str(tmp_path / name), "store": str(tmp_path / "store.db")}


def test_screening_counts_only_expensive_evaluations(tmp_path, tables, evaluated):
    result = run_search(recipe(tmp_path, tables, screen={"factor": 4}, storage=":memory:", controller="tpe",
                               constraints={"latency_ms": 12.0}), progress=False)
    # 16 trials = 16 accuracy (expensive) evaluations; 4 x 4 candidates per batch of 4
    assert len(result.trials) == 16 and len(evaluated) == 16
    assert result.screened_out == 16 * 4 - 16
    # the cheap latency is known for every candidate: only feasible ones were sent on
    assert all(r["feasible"] and r["latency_ms"] <= 12.0 for r in result.trials)


def test_evolution_screens_its_own_proposals_under_constraints(tmp_path, tables, evaluated):
    options = {"population": 4, "pool": 64}
    screened = run_search(recipe(tmp_path, tables, "screened", "live", screen={"factor": 4}, storage=":memory:",
                                 objectives=["accuracy"], constraints={"latency_ms": 12.0}, trials=24,
                                 options=options), progress=False)
    # nothing pruned: every trial is an expensive evaluation of a feasible candidate, picked
    # from pools of 64 cheap evaluations
    assert len(screened.trials) == 24 and len(evaluated) == 24
    assert all(r["feasible"] and r["latency_ms"] <= 12.0 for r in screened.trials)
    assert screened.screened_out > 24
    # the synthetic accuracy rises with live convolutions: the GP on the cells' paths finds
    # better feasible cells than the tournament alone in the same number of trials
    plain = run_search(recipe(tmp_path, tables, "plain", "live", screen={"factor": 1}, storage=":memory:",
                              objectives=["accuracy"], constraints={"latency_ms": 12.0}, trials=24, options=options),
                       progress=False)
    best = max(r["accuracy"] for r in screened.trials)
    assert best >= max(r["accuracy"] for r in plain.trials if r["feasible"])


def test_two_objective_evolution_screens_by_expected_hypervolume_improvement(tmp_path, tables, evaluated):
    options = {"population": 4, "pool": 64}
    # screening is on by default: the table latency is cheap
    screened = run_search(recipe(tmp_path, tables, "screened", "live", storage=":memory:", trials=24,
                                 options=options), progress=False)
    assert len(screened.trials) == 24 and len(evaluated) == 24 and screened.screened_out > 24
    plain = run_search(recipe(tmp_path, tables, "plain", "live", screen={"factor": 1}, storage=":memory:",
                              trials=24, options=options), progress=False)
    assert plain.screened_out == 0

    def area(rows):  # dominated area of (latency, accuracy) up to latency 20 above accuracy 50
        front, total = sorted((r["latency_ms"], r["accuracy"]) for r in rows), 0.0
        for (lat, acc), nxt in zip(front, [l for l, _ in front[1:]] + [20.0]):
            best = max(a for l, a in front if l <= lat)
            total += max(0.0, min(nxt, 20.0) - lat) * max(0.0, best - 50.0)
        return total

    assert area(screened.trials) > area(plain.trials)


def test_screening_prints_both_counts(tmp_path, tables, capsys):
    run_search(recipe(tmp_path, tables, screen={"factor": 3}, storage=":memory:", trials=8, controller="tpe"),
               progress=True)
    assert "screening: 8 expensive evaluations (trials), 24 cheap ones (16 candidates screened out)" \
        in capsys.readouterr().out


def test_screening_needs_a_cheap_latency_source(tmp_path, tables):
    rec = recipe(tmp_path, tables, screen={"factor": 4})
    rec["latency"] = {"runner": "onnxruntime", "threads": 1}
    with pytest.raises(RecipeError, match="search.screen: the 'runner' latency source is not cheap"):
        run_search(rec, progress=False)
    assert not (tmp_path / "run" / "recipe.yaml").exists()  # refused before anything is written


def test_resumed_screened_search_makes_the_same_proposals(tmp_path, tables):
    # SQLite studies, as a real run: the second call is a new Search over the stored study
    options = {"screen": {"factor": 2}, "options": {"population": 4}}
    whole = run_search(recipe(tmp_path, tables, "whole", trials=8, **options), progress=False)
    run_search(recipe(tmp_path, tables, "parts", trials=4, **options), progress=False)  # one batch of 4
    resumed = run_search(recipe(tmp_path, tables, "parts", trials=8, **options), progress=False)
    assert [r["arch"] for r in resumed.trials] == [r["arch"] for r in whole.trials]
    assert resumed.screened_out == whole.screened_out


def test_resumed_evolution_screening_makes_the_same_proposals(tmp_path, tables):
    options = {"screen": {"factor": 2}, "options": {"population": 4, "pool": 32}, "objectives": ["accuracy"],
               "constraints": {"latency_ms": 12.0}}
    whole = run_search(recipe(tmp_path, tables, "whole", trials=12, **options), progress=False)
    run_search(recipe(tmp_path, tables, "parts", trials=8, **options), progress=False)
    resumed = run_search(recipe(tmp_path, tables, "parts", trials=12, **options), progress=False)
    assert [r["arch"] for r in resumed.trials] == [r["arch"] for r in whole.trials]


def test_warm_start_enqueues_the_other_runs_front(tmp_path, tables):
    first = run_search(recipe(tmp_path, tables, "first", controller="random", storage=":memory:"),
                       progress=False)
    front = [r["arch"] for r in first.front]
    assert front
    search = Search(load_recipe(recipe(tmp_path, tables, "second", storage=":memory:", screen={"factor": 2},
                                       warm_start=str(first.run_dir))), progress=False)
    try:
        waiting = search.study.get_trials(deepcopy=False)
        assert [t.user_attrs[WARM_START_ATTR] for t in waiting] == front
        assert [str(search.space.decode(t.system_attrs["fixed_params"])) for t in waiting] == front
        result = search.run()
    finally:
        search.close()
    # the front is evaluated first, never screened out, and counted as trials
    assert [r["arch"] for r in result.trials[:len(front)]] == front
    screened = [t for t in search.study.trials if SCREENED_ATTR in t.user_attrs]
    assert not {t.user_attrs["arch"] for t in screened} & set(front)


def test_warm_start_from_a_csv_and_bad_sources(tmp_path, tables):
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    (tmp_path / "best.csv").write_text(f"arch,score\n{arch},1\n")
    result = run_search(recipe(tmp_path, tables, "csv", storage=":memory:", trials=4,
                               warm_start=str(tmp_path / "best.csv")), progress=False)
    assert result.trials[0]["arch"] == arch
    with pytest.raises(RecipeError, match="search.warm_start: .*does not exist"):
        run_search(recipe(tmp_path, tables, "a", warm_start=str(tmp_path / "nowhere")), progress=False)
    (tmp_path / "front.json").write_text(json.dumps({"front": [{"arch": "k3_e1-skip"}]}))
    with pytest.raises(RecipeError, match="not an arch of space 'nb201'"):
        run_search(recipe(tmp_path, tables, "b", warm_start=str(tmp_path / "front.json")), progress=False)


def test_screen_and_warm_start_are_recipe_keys_that_change_results(tmp_path, tables):
    run_search(recipe(tmp_path, tables, trials=4), progress=False)
    with pytest.raises(RecipeError, match=r"changed: search\.screen\.factor"):
        run_search(recipe(tmp_path, tables, trials=4, screen={"factor": 2}), progress=False)
    written = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert written["search"]["screen"] == {"factor": None} and written["search"]["warm_start"] is None


def test_macs_and_params_are_objectives_and_constraints(tmp_path, tables, monkeypatch):
    space = make_space("nb201")
    rng = np.random.default_rng(0)
    bound = sorted(space.features(space.sample(rng))["params"] for _ in range(21))[10]  # a median
    trained = []
    original = TableAccuracy.evaluate
    monkeypatch.setattr(TableAccuracy, "evaluate", lambda self, archs: trained.extend(map(str, archs)) or
                        original(self, archs))
    result = run_search(recipe(tmp_path, tables, storage=":memory:", objectives=["accuracy", "macs"],
                               constraints={"params": bound}), progress=False)
    assert result.objectives == ["accuracy", "macs"] and result.directions == ["maximize", "minimize"]
    for row in result.trials:
        features = space.features(space.parse(row["arch"]))
        assert row["macs"] == features["macs"] and row["params"] == features["params"]
        # a candidate over the analytic bound is never trained
        assert row["feasible"] == (row["params"] <= bound) == (row["arch"] in trained)
    assert any(not r["feasible"] for r in result.trials) and any(r["feasible"] for r in result.trials)
    assert result.front and all(r["params"] <= bound for r in result.front)
    with pytest.raises(RecipeError, match=r"unknown metric 'flops'.*'macs'"):
        run_search(recipe(tmp_path, tables, "bad", objectives=["accuracy", "flops"]), progress=False)


def test_roofline_latency_of_a_named_analytic_device_is_an_objective_and_a_constraint(tmp_path, tables):
    from hardware.analytic import layer_table, named_device

    space = make_space("nb201")
    device = named_device("analytic_phone_cpu_03")
    rng = np.random.default_rng(1)
    samples = [space.sample(rng) for _ in range(21)]
    bound = float(np.median(device.latency_ms(layer_table(space, samples))))
    result = run_search(recipe(tmp_path, tables, storage=":memory:", roofline="analytic_phone_cpu_03",
                               objectives=["accuracy", "roofline_ms"], constraints={"roofline_ms": bound}),
                        progress=False)
    assert result.objectives == ["accuracy", "roofline_ms"] and result.directions == ["maximize", "minimize"]
    for row in result.trials:
        expected = device.latency_ms(layer_table(space, [space.parse(row["arch"])]))[0]
        assert row["roofline_ms"] == pytest.approx(expected)
        assert row["feasible"] == (row["roofline_ms"] <= bound)
    assert result.front and all(r["roofline_ms"] <= bound for r in result.front)
    with pytest.raises(RecipeError, match=r"search.roofline: unknown analytic device 'phone'.*edge_gpu"):
        run_search(recipe(tmp_path, tables, "bad", roofline="phone", objectives=["accuracy", "roofline_ms"]),
                   progress=False)
    with pytest.raises(RecipeError, match="unknown metric 'roofline_ms'"):
        run_search(recipe(tmp_path, tables, "none", objectives=["accuracy", "roofline_ms"]), progress=False)
