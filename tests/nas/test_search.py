"""End-to-end search: results, constraints, resumption after SIGKILL, export parity."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from nas.export import export_run, load_exported
from nas.search import nearest_misses, pareto_front, pareto_layers, run_search
from tests.conftest import REPO, tiny_recipe


def test_pareto_front_keeps_non_dominated_rows():
    rows = [{"arch": "a", "acc": 90, "lat": 5}, {"arch": "b", "acc": 80, "lat": 2},
            {"arch": "c", "acc": 70, "lat": 3}, {"arch": "d", "acc": 95, "lat": 9}]
    front = pareto_front(rows, ["acc", "lat"], ["maximize", "minimize"])
    assert [r["arch"] for r in front] == ["d", "a", "b"]


def test_search_end_to_end_with_constraint_and_export(tmp_path):
    def evolution(folder, trials):
        # one store for both runs: the constrained run looks up the probe's batch, not redo it
        return tiny_recipe(folder, store=str(tmp_path / "store.db"),
                           search={"controller": "evolution", "trials": trials, "batch_size": 3,
                                   "options": {"population": 3, "sample_size": 2}})

    # The bound is on MACs, not on measured latency: a latency bound taken from one run and
    # applied to another is at the mercy of the machine's load between them (it once left
    # all six trials infeasible in CI).  The seeded first batch of 3 is the same in both runs,
    # so its median MACs leaves at least one trial feasible and at least one not.
    probe = run_search(evolution(tmp_path / "probe", trials=3), progress=False)
    bound = sorted(r["macs"] for r in probe.trials)[1]
    recipe = evolution(tmp_path, trials=6)
    recipe["search"]["constraints"] = {"macs": bound}
    result = run_search(recipe, progress=False)
    assert len(result.trials) == 6
    assert [r["arch"] for r in result.trials[:3]] == [r["arch"] for r in probe.trials]
    assert any(not r["feasible"] for r in result.trials)
    assert (result.run_dir / "recipe.yaml").is_file() and (result.run_dir / "front.csv").is_file()
    assert result.front
    for row in result.front:
        assert row["feasible"] and row["macs"] <= bound
        assert 0 <= row["accuracy"] <= 100 and row["latency_ms"] > 0
    exported = export_run(result.run_dir, top=1, progress=False)
    assert exported[0].onnx_max_abs_diff <= 1e-4
    model, arch, space = load_exported(exported[0].folder)
    assert str(arch) == result.front[0]["arch"]
    # the exported weights are the trained ones: they reproduce the search's accuracy
    from nas.accuracy import evaluate_accuracy
    from nas.data import load_dataset

    acc = evaluate_accuracy(model, load_dataset("digits", 32).val)
    assert acc == pytest.approx(result.front[0]["accuracy"], abs=1e-6)


def test_pareto_layers_sort_the_rest_behind_the_front():
    rows = [{"arch": "a", "acc": 90, "lat": 5}, {"arch": "b", "acc": 80, "lat": 2},
            {"arch": "c", "acc": 70, "lat": 3}, {"arch": "d", "acc": 95, "lat": 9},
            {"arch": "e", "acc": 60, "lat": 4}]
    layers = pareto_layers(rows, ["acc", "lat"], ["maximize", "minimize"])
    assert [[r["arch"] for r in layer] for layer in layers] == [["d", "a", "b"], ["c"], ["e"]]
    assert len(pareto_layers(rows, ["acc", "lat"], ["maximize", "minimize"], limit=3)) == 1


def test_nearest_misses_ranks_by_relative_miss():
    rows = [{"arch": "far", "latency_ms": 3.0}, {"arch": "near", "latency_ms": 1.1}, {"arch": "ok", "latency_ms": 0.9}]
    nearest = nearest_misses(rows, {"latency_ms": 1.0})
    assert [r["arch"] for r in nearest] == ["near", "far"]
    assert nearest[0]["misses"] == "latency_ms 1.1 > 1 (+10%)"


def test_infeasible_candidates_skip_training(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, search={"controller": "random", "trials": 2, "batch_size": 2,
                                           "constraints": {"latency_ms": 1e-6}})
    result = run_search(recipe, progress=False)
    assert result.front == [] and all(not r["feasible"] and "accuracy" not in r for r in result.trials)
    # no silent empties: the nearest candidates and their misses are reported and saved
    assert len(result.nearest) == 2 and all("latency_ms" in r["misses"] for r in result.nearest)
    assert json.loads((result.run_dir / "front.json").read_text())["nearest"] == result.nearest
    from nas.commands.report import print_front

    print_front(result)
    out = capsys.readouterr().out
    assert "no trial met the constraints" in out and result.nearest[0]["arch"][:20] in out.replace("\n", "")
    with pytest.raises(ValueError, match="nothing to export: no trial met the constraints.*nearest: "):
        export_run(result.run_dir, top=1, progress=False)


def test_front_is_remeasured_in_one_batch_and_recomputed(tmp_path):
    recipe = tiny_recipe(tmp_path, search={"controller": "random", "trials": 6, "batch_size": 2})
    result = run_search(recipe, progress=False)
    # the front and the next ones in line, measured together, the search's values beside
    rows = {r["arch"]: r for r in result.remeasured}
    assert {r["arch"] for r in result.search_front} <= set(rows)
    assert len(rows) == min(len(result.trials), len(result.search_front) + max(4, len(result.search_front)))
    for row in rows.values():
        assert row["measured_latency_ms"] > 0 and row["predicted_latency_ms"] > 0
    agreement = result.agreement["latency_ms"]
    assert agreement["count"] == len(rows) and agreement["mape"] >= 0
    assert agreement["spearman"] is None or -1 <= agreement["spearman"] <= 1
    # the reported front is the front of the measured values
    truth = [{**t, "latency_ms": rows[t["arch"]]["measured_latency_ms"]} for t in result.trials if t["arch"] in rows]
    expected = pareto_front(truth, result.objectives, result.directions)
    assert [r["arch"] for r in result.front] == [r["arch"] for r in expected]
    assert all(r["latency_ms"] == rows[r["arch"]]["measured_latency_ms"] for r in result.front)
    saved = json.loads((result.run_dir / "front.json").read_text())
    assert saved["front"] == result.front and saved["agreement"] == result.agreement
    assert (result.run_dir / "front_remeasured.csv").is_file()
    # a finished run asked again measures nothing
    before = _rows(recipe["store"])
    again = run_search(recipe, progress=False)
    assert _rows(recipe["store"]) == before and again.front == result.front


def test_unknown_objective_is_rejected(tmp_path):
    recipe = tiny_recipe(tmp_path, search={"objectives": ["accuracy", "energy_mj"]})
    with pytest.raises(ValueError, match="energy_mj"):
        run_search(recipe, progress=False)


def test_latency_and_accuracy_must_quantize_int8_weights_alike(tmp_path):
    space = {**tiny_recipe(tmp_path)["space"], "precisions": ["fp32", "int8"]}
    recipe = tiny_recipe(tmp_path, space=space, latency__int8_weights="per_tensor")
    with pytest.raises(ValueError, match="per_tensor weights but accuracy scores them with per_channel"):
        run_search(recipe, progress=False)
    assert not (tmp_path / "run" / "recipe.yaml").exists()


def _rows(store_path):
    con = sqlite3.connect(store_path)
    try:
        return {(k, a): c for k, a, c in con.execute("SELECT source_key, arch, created FROM results")}
    except sqlite3.OperationalError as err:
        # the search opens the file before it creates its tables: a poll in between sees no table yet
        if "no such table" not in str(err):
            raise
        return {}
    finally:
        con.close()


def test_killed_search_resumes_without_losing_or_repeating_work(tmp_path):
    recipe = tiny_recipe(tmp_path, search={"controller": "evolution", "trials": 8, "batch_size": 2,
                                           "options": {"population": 2, "sample_size": 1}})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    store = recipe["store"]
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(path), "--no-progress"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HWNAS_HOME": str(tmp_path / "home")})
    deadline = time.time() + 240
    # kill once the 2nd batch has been measured but before the run can finish
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(store) and len(_rows(store)) >= 5:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(store)
    assert before

    # rows of a batch timed while the machine was busy are not facts: those are measured again
    con = sqlite3.connect(store)
    try:
        facts = {(k, a) for k, a in con.execute("SELECT source_key, arch FROM results WHERE reliable=1")}
    finally:
        con.close()
    result = run_search(path, progress=False)
    after = _rows(store)
    # nothing lost, nothing re-measured or re-trained: pre-kill rows are untouched
    assert all(after[k] == created for k, created in before.items() if k in facts)
    measured_before = {a for (_, a) in facts}
    assert not set(result.measured) & measured_before
    measured_before = {a for (_, a) in before}
    assert len(result.trials) == 8
    assert measured_before <= {r["arch"] for r in result.trials}


def test_resuming_with_a_changed_recipe_is_refused_unless_forced(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, search={"controller": "random", "trials": 2, "batch_size": 2})
    first = run_search(recipe, progress=False)
    written = (first.run_dir / "recipe.yaml").read_text()
    changed = tiny_recipe(tmp_path, search={"controller": "random", "trials": 2, "batch_size": 2},
                          accuracy__epochs=2)
    with pytest.raises(ValueError, match=r"changed: accuracy\.epochs\. These change results.*--force"):
        run_search(changed, progress=False)
    assert (first.run_dir / "recipe.yaml").read_text() == written  # refused before writing
    # the budget and the batch size do not change results: resuming with more trials is fine
    with pytest.raises(ValueError, match=r"changed: search\.controller"):
        run_search(tiny_recipe(tmp_path, search={"controller": "tpe", "trials": 2}), progress=False)
    forced = run_search(changed, progress=False, force=True)
    assert "already complete (2/2 trials)" in capsys.readouterr().out
    assert [r["arch"] for r in forced.trials] == [r["arch"] for r in first.trials]
    assert "epochs: 2" in (first.run_dir / "recipe.yaml").read_text()


def _nb201_table(path, space):
    """An accuracy table covering all 15,625 NAS-Bench-201 cells (values from a hash)."""
    import hashlib
    import itertools

    names = list(space.decisions())
    lines = ["arch,acc"]
    for combo in itertools.product(*space.decisions().values()):
        arch = str(space.decode(dict(zip(names, combo))))
        lines.append(f"{arch},{int(hashlib.sha1(arch.encode()).hexdigest()[:4], 16) / 655.36:.3f}")
    path.write_text("\n".join(lines) + "\n")


def test_export_needs_only_the_run_folder_and_the_accuracy_source(tmp_path, monkeypatch):
    from predictors import load_predictor
    from search_spaces import make_space

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    _nb201_table(recipes / "acc.csv", make_space("nb201"))
    load_predictor("nb201").save(recipes / "lat.npz")
    (recipes / "r.yaml").write_text(yaml.safe_dump({
        "name": "t", "space": {"name": "nb201"}, "latency": {"predictor": "lat.npz"},
        "accuracy": {"table": "acc.csv", "column": "acc"},
        "search": {"controller": "random", "trials": 4, "batch_size": 4},
        "output": str(tmp_path / "run"), "store": str(tmp_path / "store.db")}))
    monkeypatch.chdir(recipes)
    result = run_search(recipes / "r.yaml", progress=False)
    resolved = yaml.safe_load((result.run_dir / "recipe.yaml").read_text())
    assert resolved["accuracy"]["table"] == str(recipes / "acc.csv")
    # from another folder, with the latency source gone (an offline device, a deleted checkpoint)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (recipes / "lat.npz").unlink()
    exported = export_run(result.run_dir, top=1, progress=False)
    assert exported[0].weights == "random-init" and exported[0].onnx_max_abs_diff <= 1e-4
    assert (exported[0].folder / "arch.txt").read_text().strip() == result.front[0]["arch"]
    assert not (result.run_dir / "export" / "1" / "model.onnx.tmp").exists()
