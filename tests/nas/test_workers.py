"""Several ``hwnas search`` workers on one study in a real PostgreSQL server.

Workers are separate processes (``python -m tests.nas.sources.slow search ...``:
``hwnas`` with a slow tabulated accuracy that logs every computation), bounded
by timeouts and killed by pid when a test ends."""
import csv
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hardware.store import MeasurementStore, store_url
from nas.recipe import RecipeError, load_recipe
from nas.search import Search
from search_spaces.nb201 import EDGES, OPS, NB201Arch
from tests.conftest import REPO
from tests.nas.sources.slow import read_log

WORKER_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def accuracy_table(tmp_path_factory):
    """An accuracy column for every nb201 arch, generated (seeded): these tests check
    coordination, not values, and must run where ``../shared`` is absent (CI clones)."""
    path = tmp_path_factory.mktemp("table") / "accuracy.csv"
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch", "cifar10"])
        for ops in itertools.product(OPS, repeat=len(EDGES)):
            writer.writerow([str(NB201Arch(ops)), f"{rng.uniform(10, 95):.3f}"])
    return path


@pytest.fixture
def workers():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _recipe(tmp_path, table, study_url, store, trials, delay_s, batch_size=1, grace_s=30.0):
    recipe = {
        "name": "workers", "seed": 0, "space": {"name": "nb201"},
        "latency": {"predictor": "nb201"},
        "accuracy": {"slow_table": str(table), "column": "cifar10",
                     "delay_s": delay_s, "log": str(tmp_path / "computations.log")},
        "search": {"controller": "evolution", "trials": trials, "batch_size": batch_size, "storage": study_url,
                   "heartbeat": {"interval_s": 1, "grace_s": grace_s}},
        "output": str(tmp_path / "run"), "store": store,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _start(workers, recipe, tmp_path, count):
    for i in range(count):
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "tests.nas.sources.slow", "search", str(recipe), "--no-progress"], cwd=REPO,
            stdout=open(tmp_path / f"worker{i}.out", "w"), stderr=subprocess.STDOUT,
            env={**os.environ, "HWNAS_HOME": str(tmp_path / "home")}))


def _wait(workers, tmp_path):
    for i, proc in enumerate(workers):
        try:
            proc.wait(timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {i} still running after {WORKER_TIMEOUT_S} s")
    return [(tmp_path / f"worker{i}.out").read_text() for i in range(len(workers))]


def _study(url):
    return optuna.load_study(study_name="workers", storage=store_url(url))


def test_four_workers_complete_exactly_the_budget_and_compute_each_arch_once(
        tmp_path, accuracy_table, postgres_server, workers):
    study_url, store = postgres_server.create_database("w4_study"), postgres_server.create_database("w4_store")
    recipe = _recipe(tmp_path, accuracy_table, study_url, store, trials=24, delay_s=0.4, batch_size=2)
    _start(workers, recipe, tmp_path, 4)
    outputs = _wait(workers, tmp_path)
    assert [w.returncode for w in workers] == [0] * 4, outputs
    study = _study(study_url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 24
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL))
    log = read_log(tmp_path / "computations.log")
    done = Counter(arch for event, _, arch in log if event == "done")
    assert done and max(done.values()) == 1  # no arch computed twice
    assert set(done) <= {t.user_attrs["arch"] for t in complete}
    assert len({pid for _, pid, _ in log}) >= 2  # the workers shared the work
    # one worker wrote the run's results; the others said so
    assert sum("another worker writes the run's results" in out for out in outputs) == 3
    assert (tmp_path / "run" / "front.json").is_file()
    with MeasurementStore(store) as s:
        assert s.count() >= len(done)


def test_a_killed_workers_trial_is_retried_once_and_nothing_is_lost_or_repeated(
        tmp_path, accuracy_table, postgres_server, workers):
    study_url, store = postgres_server.create_database("kill_study"), postgres_server.create_database("kill_store")
    recipe = _recipe(tmp_path, accuracy_table, study_url, store, trials=12, delay_s=1.5, grace_s=4.0)
    _start(workers, recipe, tmp_path, 3)
    victim = workers[0]
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    killed_arch = None
    while time.monotonic() < deadline and killed_arch is None:
        log = read_log(tmp_path / "computations.log")
        finished = {(pid, arch) for event, pid, arch in log if event == "done"}
        for event, pid, arch in log:
            if event == "start" and pid == victim.pid and (pid, arch) not in finished:
                os.kill(victim.pid, signal.SIGKILL)  # mid-trial: its arch is being computed
                killed_arch = arch
                break
        time.sleep(0.05)
    assert killed_arch is not None, "the victim never started a computation"
    victim.wait(timeout=30)
    outputs = _wait(workers[1:], tmp_path)
    assert [w.returncode for w in workers[1:]] == [0, 0], outputs
    study = _study(study_url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(complete) == 12
    assert len(failed) == 1 and failed[0].user_attrs["arch"] == killed_arch
    retries = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    log = read_log(tmp_path / "computations.log")
    done = Counter(arch for event, _, arch in log if event == "done")
    assert max(done.values()) == 1  # nothing measured twice
    assert done[killed_arch] == 1  # and the killed computation was not lost
    assert {t.user_attrs["arch"] for t in complete} <= set(done)


def test_a_second_process_on_a_sqlite_run_is_refused_pointing_to_postgresql(tmp_path, accuracy_table):
    recipe = _recipe(tmp_path, accuracy_table, None, str(tmp_path / "store.db"), trials=2, delay_s=0)
    first = Search(load_recipe(recipe), progress=False)
    try:
        with pytest.raises(RecipeError, match="postgresql://") as err:
            Search(load_recipe(recipe), progress=False)
        assert "in use by hwnas search pid" in str(err.value)
    finally:
        first.close()
    Search(load_recipe(recipe), progress=False).close()  # released with the first run
