"""Scale-out: 1, 2 and 4 ``hwnas search`` workers on one study in PostgreSQL.

Two workloads, each with every worker a separate process on this machine:

(a) **coordination overhead.** nb201 with ``accuracy`` from the CIFAR-10 table behind a
    fixed 0.5 s wait per architecture (standing in for a remote device or a trainer:
    ``tests/nas/sources/slow.py``) and ``latency: {predictor: nb201}``; aging evolution,
    the recipe's default batch size (8).  With evaluations that only wait, N workers can reach N times the
    trials/min of one; what they lose is the cost of coordinating through the database
    (serialised proposals, heartbeats, claims, Optuna's storage round trips).
(b) **real measurement.** A small mbv3 space timed with ONNX Runtime on this CPU
    (``latency: {runner: onnxruntime}``) and trained for one epoch on digits, 2 workers:
    each architecture must be measured once across both (the store's claims), so
    duplicated measurements must be 0.  (Both workers time on the same CPU, so the
    machine's timing lock serialises their measurements: this checks correctness, not
    speed.)

For each run it prints trials/min, completed/budget, lost trials (budget not
completed, or a failed trial without a completed retry) and duplicated
measurements (an architecture computed by more than one worker, from the sources'
own logs).  Workers are started, build their search (tables, predictor, study) and
wait at a barrier; the clock runs from the barrier to the last trial's completion,
so Python start-up is not counted: that is a one-off cost per worker.

Without ``--url`` it starts its own throwaway PostgreSQL server
(``hardware/postgres.py``) and stops it at the end.

    python benchmarks/scale_out.py                # about 6 minutes on 2 cores: 3.79x, 3.82x (4 vs 1)
    python benchmarks/scale_out.py --url postgresql://me@db/hwnas_bench --trials 96

Last line: ``scale-out: 4 workers speedup X.XX, completed N/N, lost 0, duplicated 0``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the slow source lives with the tests that use it too

import optuna  # noqa: E402
import yaml  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from hardware.postgres import ThrowawayPostgres  # noqa: E402
from hardware.store import redact, store_url  # noqa: E402
from nas.recipe import load_recipe  # noqa: E402
from nas.search import Search  # noqa: E402
from tests.nas.sources.slow import read_log  # noqa: E402 - importing it registers the slow_table source

DATA = REPO.parent / "shared" / "data" / "nb201"
WORKER_TIMEOUT_S = 900
#: study names of this run: a database given with --url may hold earlier runs' studies
RUN_TAG = time.strftime("%Y%m%d%H%M%S")


def worker(recipe_path: str, ready: str, go: str, out: str) -> int:
    """One worker: build the search, say ready, wait for the go file, run it."""
    search = Search(load_recipe(recipe_path), progress=False)
    try:
        Path(ready).touch()
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while not Path(go).exists():
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.01)
        search.run()
        Path(out).write_text(json.dumps({"measured": search.latency.measured,
                                         "computed": search.accuracy.measured}))
    finally:
        search.close()
    return 0


def run_workers(recipe: dict, count: int, folder: Path) -> list[dict]:
    """Start ``count`` workers of ``recipe``, release them together, wait; their reports."""
    folder.mkdir(parents=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    go = folder / "go"
    procs = []
    try:
        for i in range(count):
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", str(path), str(folder / f"ready{i}"), str(go),
                 str(folder / f"out{i}.json")], cwd=REPO, stdout=open(folder / f"worker{i}.log", "w"),
                stderr=subprocess.STDOUT))
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while not all((folder / f"ready{i}").exists() for i in range(count)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker did not get ready; see {folder}/worker*.log")
            time.sleep(0.05)
        go.touch()
        for proc in procs:
            proc.wait(timeout=WORKER_TIMEOUT_S)
    finally:
        for proc in procs:  # never leave a worker behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"worker(s) {failed} failed; see {folder}/worker*.log")
    return [json.loads((folder / f"out{i}.json").read_text()) for i in range(count)]


def study_figures(url: str, name: str, budget: int) -> dict:
    study = optuna.load_study(study_name=name, storage=store_url(url))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    retried = {t.system_attrs.get("failed_trial") for t in complete}
    unretried = [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]
    first = min(t.datetime_start for t in complete).timestamp()
    last = max(t.datetime_complete for t in complete).timestamp()
    return {"completed": len(complete), "lost": max(0, budget - len(complete)) + len(unretried),
            "seconds": last - first}


def duplicated(counts: Counter) -> int:
    return sum(n - 1 for n in counts.values() if n > 1)


def overhead_workload(server: ThrowawayPostgres | None, url: str | None, counts: list[int], budget: int,
                      batch_size: int, delay_s: float, tmp: Path) -> dict[int, dict]:
    rows = {}
    for n in counts:
        study, store = _databases(server, url, f"nb201_{n}")
        log = tmp / f"nb201_{n}.log"
        recipe = {
            "name": f"scale_nb201_{n}_{RUN_TAG}", "seed": 0, "space": {"name": "nb201"},
            "latency": {"predictor": "nb201"},
            "accuracy": {"slow_table": str(DATA / "accuracy.csv"), "column": "cifar10", "delay_s": delay_s,
                         "log": str(log)},
            "search": {"controller": "evolution", "trials": budget, "batch_size": batch_size, "storage": study},
            "output": str(tmp / f"run_nb201_{n}"), "store": store,
        }
        run_workers(recipe, n, tmp / f"workers_nb201_{n}")
        figures = study_figures(study, recipe["name"], budget)
        done = Counter(arch for event, _, arch in read_log(log) if event == "done")
        figures.update(per_min=60 * figures["completed"] / figures["seconds"], duplicated=duplicated(done))
        rows[n] = figures
        print(f"  nb201 + {delay_s:g} s wait, {n} worker(s): {figures['per_min']:7.1f} trials/min, completed "
              f"{figures['completed']}/{budget}, lost {figures['lost']}, duplicated {figures['duplicated']}",
              flush=True)
    return rows


def measurement_workload(server: ThrowawayPostgres | None, url: str | None, budget: int, tmp: Path) -> dict:
    study, store = _databases(server, url, "mbv3_2")
    recipe = {
        "name": f"scale_mbv3_2_{RUN_TAG}", "seed": 0,
        "space": {"name": "mbv3", "resolutions": [32], "widths": [0.5], "depths": [2], "kernels": [3, 5],
                  "expansions": [3, 4, 6], "num_classes": 10},
        "latency": {"runner": "onnxruntime", "threads": 1, "rounds": 5},
        "accuracy": {"train": "digits", "epochs": 1, "batch_size": 128, "threads": 1},
        "search": {"controller": "evolution", "trials": budget, "batch_size": 2, "storage": study},
        "output": str(tmp / "run_mbv3_2"), "store": store,
    }
    reports = run_workers(recipe, 2, tmp / "workers_mbv3_2")
    figures = study_figures(study, recipe["name"], budget)
    measured = Counter(arch for report in reports for arch in report["measured"])
    trained = Counter(arch for report in reports for arch in report["computed"])
    figures.update(per_min=60 * figures["completed"] / figures["seconds"], duplicated=duplicated(measured),
                   duplicated_training=duplicated(trained), measured=len(measured),
                   by_worker=[len(r["measured"]) for r in reports])
    print(f"  mbv3 on ONNX Runtime, 2 workers: {figures['per_min']:.1f} trials/min, completed "
          f"{figures['completed']}/{budget}, lost {figures['lost']}, {figures['measured']} architectures "
          f"measured ({' + '.join(map(str, figures['by_worker']))} by worker), duplicated measurements "
          f"{figures['duplicated']}, duplicated trainings {figures['duplicated_training']}", flush=True)
    return figures


def _databases(server: ThrowawayPostgres | None, url: str | None, tag: str) -> tuple[str, str]:
    """A fresh study database and store database (on the throwaway server), or, with
    ``--url``, the given database with a fresh study name per run and the store shared."""
    if server is not None:
        return server.create_database(f"{tag}_study"), server.create_database(f"{tag}_store")
    return url, url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="an existing PostgreSQL database (default: start a throwaway server)")
    p.add_argument("--trials", type=int, default=256, help="budget of the nb201 workload (default 256)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="search.batch_size of the nb201 workload (default 8, the recipe default)")
    p.add_argument("--delay-s", type=float, default=0.5, help="wait per evaluation (default 0.5 s)")
    p.add_argument("--workers", default="1,2,4", help="worker counts of the nb201 workload")
    p.add_argument("--mbv3-trials", type=int, default=8, help="budget of the measured mbv3 workload (0: skip)")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.workers.split(",")]
    server = None if args.url else ThrowawayPostgres().start()
    try:
        with tempfile.TemporaryDirectory(prefix="hwnas-scale-") as tmp:
            where = redact(args.url) if args.url else f"throwaway PostgreSQL at {server.url()}"
            print(f"scale-out on {where}; {os.cpu_count()} CPU cores")
            print(f"(a) coordination overhead: nb201, {args.trials} trials in batches of {args.batch_size}, "
                  f"each evaluation waits {args.delay_s:g} s (a stand-in for a remote device or trainer)",
                  flush=True)
            rows = overhead_workload(server, args.url, counts, args.trials, args.batch_size, args.delay_s, Path(tmp))
            if args.mbv3_trials:
                print(f"(b) real measurement: mbv3 with ONNX Runtime, {args.mbv3_trials} trials, 2 workers",
                      flush=True)
                measured = measurement_workload(server, args.url, args.mbv3_trials, Path(tmp))
            base, top = rows[counts[0]], rows[counts[-1]]
            speedup = top["per_min"] / base["per_min"]
            print(f"\n{counts[-1]} workers vs {counts[0]}: {speedup:.2f}x trials/min "
                  f"(ideal {counts[-1] / counts[0]:.0f}x; target >= 3.5x for 4 vs 1)")
            lost = top["lost"] + (measured["lost"] if args.mbv3_trials else 0)
            dup = top["duplicated"] + (measured["duplicated"] if args.mbv3_trials else 0)
            print(f"scale-out: {counts[-1]} workers speedup {speedup:.2f}, completed "
                  f"{top['completed']}/{args.trials}, lost {lost}, duplicated {dup}")
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker(*sys.argv[2:6]))
    sys.exit(main())
