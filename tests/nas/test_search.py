"""End-to-end search: results, constraints, resumption after SIGKILL, export parity."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from nas.export import export_run, load_exported
from nas.search import pareto_front, run_search
from tests.conftest import REPO, tiny_recipe


def test_pareto_front_keeps_non_dominated_rows():
    rows = [{"arch": "a", "acc": 90, "lat": 5}, {"arch": "b", "acc": 80, "lat": 2},
            {"arch": "c", "acc": 70, "lat": 3}, {"arch": "d", "acc": 95, "lat": 9}]
    front = pareto_front(rows, ["acc", "lat"], ["maximize", "minimize"])
    assert [r["arch"] for r in front] == ["d", "a", "b"]


def test_search_end_to_end_with_constraint_and_export(tmp_path):
    recipe = tiny_recipe(tmp_path, search={"controller": "evolution", "trials": 6, "batch_size": 3,
                                           "options": {"population": 3, "sample_size": 2}})
    # a bound between the smallest and largest latency of the space: some feasible, not all
    probe = run_search(tiny_recipe(tmp_path / "probe", search={"controller": "random", "trials": 3,
                                                               "batch_size": 3}), progress=False)
    lats = sorted(r["latency_ms"] for r in probe.trials)
    recipe["search"]["constraints"] = {"latency_ms": lats[-1] * 1.5}
    result = run_search(recipe, progress=False)
    assert len(result.trials) == 6
    assert (result.run_dir / "recipe.yaml").is_file() and (result.run_dir / "front.csv").is_file()
    for row in result.front:
        assert row["feasible"] and row["latency_ms"] <= lats[-1] * 1.5
        assert 0 <= row["accuracy"] <= 100 and row["macs"] > 0
    exported = export_run(result.run_dir, top=1, progress=False)
    assert exported[0].onnx_max_abs_diff <= 1e-4
    model, arch, space = load_exported(exported[0].folder)
    assert str(arch) == result.front[0]["arch"]
    # the exported weights are the trained ones: they reproduce the search's accuracy
    from nas.accuracy import evaluate_accuracy
    from nas.data import load_dataset

    acc = evaluate_accuracy(model, load_dataset("digits", 32).val)
    assert acc == pytest.approx(result.front[0]["accuracy"], abs=1e-6)


def test_infeasible_candidates_skip_training(tmp_path):
    recipe = tiny_recipe(tmp_path, search={"controller": "random", "trials": 2, "batch_size": 2,
                                           "constraints": {"latency_ms": 1e-6}})
    result = run_search(recipe, progress=False)
    assert result.front == [] and all(not r["feasible"] and "accuracy" not in r for r in result.trials)


def test_unknown_objective_is_rejected(tmp_path):
    recipe = tiny_recipe(tmp_path, search={"objectives": ["accuracy", "energy_mj"]})
    with pytest.raises(ValueError, match="energy_mj"):
        run_search(recipe, progress=False)


def _rows(store_path):
    con = sqlite3.connect(store_path)
    try:
        return {(k, a): c for k, a, c in con.execute("SELECT source_key, arch, created FROM results")}
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

    result = run_search(path, progress=False)
    after = _rows(store)
    # nothing lost, nothing re-measured or re-trained: pre-kill rows are untouched
    assert all(after[k] == created for k, created in before.items())
    measured_before = {a for (_, a) in before}
    assert not set(result.measured) & measured_before
    assert len(result.trials) == 8
    assert measured_before <= {r["arch"] for r in result.trials}
