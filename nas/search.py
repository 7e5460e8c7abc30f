"""The search loop: ask a batch, measure latency, estimate accuracy, tell.

Per batch of ``search.batch_size`` trials:

1. the controller (an Optuna sampler) proposes architectures via ``study.ask``;
2. the latency source evaluates the whole batch (runners interleave timing
   rounds across it; cached results are not re-measured);
3. candidates violating a hard constraint on a latency metric skip the
   accuracy estimate (the expensive part) and are told as infeasible;
4. the accuracy source evaluates the rest; every metric and analytic feature
   is stored on the trial, then ``study.tell``.

Resumption: study state is in Optuna storage and every result is in the
measurement store as soon as it exists.  Trials left RUNNING by a killed
process are marked FAIL and their parameters re-enqueued, so they are
re-evaluated from the store: nothing measured is lost or measured again.
"""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.trial import TrialState

from nas.controllers import (ARCH_ATTR, CONSTRAINTS_ATTR, is_feasible, make_controller, record_constraints,
                             suggest_arch)
from nas.recipe import Recipe, RecipeError, load_recipe, write_resolved
from nas.sources import (ACCURACY_SOURCES, LATENCY_SOURCES, MAXIMIZE, RunContext, make_progress,
                         make_source)

FEATURES = ("macs", "params")


def hwnas_home() -> Path:
    return Path(os.environ.get("HWNAS_HOME", "~/.hwnas")).expanduser()


def default_store_path() -> Path:
    return hwnas_home() / "measurements.db"


@dataclass
class SearchResult:
    run_dir: Path
    objectives: list[str]
    directions: list[str]
    front: list[dict[str, Any]]
    trials: list[dict[str, Any]] = field(default_factory=list)
    #: architectures whose latency this process measured (not read from the store)
    measured: list[str] = field(default_factory=list)
    remeasured: list[dict[str, Any]] | None = None


def pareto_front(rows: Sequence[dict], objectives: Sequence[str], directions: Sequence[str]) -> list[dict]:
    """Non-dominated rows (one per arch), sorted by the first objective, best first."""
    signs = [1.0 if d == MAXIMIZE else -1.0 for d in directions]
    unique = {r["arch"]: r for r in rows}
    rows = list(unique.values())
    scored = [[s * r[o] for s, o in zip(signs, objectives)] for r in rows]

    def dominated(i: int) -> bool:
        a = scored[i]
        return any(all(b_k >= a_k for a_k, b_k in zip(a, b)) and any(b_k > a_k for a_k, b_k in zip(a, b))
                   for j, b in enumerate(scored) if j != i)

    front = [r for i, r in enumerate(rows) if not dominated(i)]
    return sorted(front, key=lambda r: -signs[0] * r[objectives[0]])


class Search:
    """One search run; ``run()`` drives it to ``search.trials`` completed trials."""

    def __init__(self, recipe: Recipe, progress: bool = True):
        from hardware.store import MeasurementStore
        from search_spaces import make_space

        self.recipe = recipe
        self.progress = progress
        self.run_dir = recipe.run_dir()
        where = recipe.source or "<recipe>"
        try:
            self.space = make_space(recipe.space.name, **recipe.space.options)
        except (KeyError, ValueError) as exc:
            raise RecipeError(f"{where}: space: {exc.args[0] if exc.args else exc}") from None
        write_resolved(recipe, self.run_dir)
        store_path = Path(recipe.store) if recipe.store else default_store_path()
        self.store = MeasurementStore(store_path)
        self.ctx = RunContext(self.space, self.store, self.run_dir, recipe.seed, recipe.base_dir(), progress)
        try:
            self.latency = make_source(recipe.latency, LATENCY_SOURCES, self.ctx, "latency")
            self.accuracy = make_source(recipe.accuracy, ACCURACY_SOURCES, self.ctx, "accuracy")
        except (KeyError, ValueError) as exc:
            raise RecipeError(f"{where}: {exc.args[0] if exc.args else exc}") from None
        self.metric_directions = {**self.accuracy.metrics, **self.latency.metrics}
        self.objectives = list(recipe.search.objectives or
                               [next(iter(self.accuracy.metrics)), next(iter(self.latency.metrics))])
        for metric in [*self.objectives, *recipe.search.constraints]:
            if metric not in self.metric_directions:
                raise RecipeError(f"{where}: search: unknown metric {metric!r}; the sources provide "
                                  f"{sorted(self.metric_directions)}")
        self.directions = [self.metric_directions[o] for o in self.objectives]
        sampler = make_controller(recipe.search.controller, self.space, recipe.search.options,
                                  recipe.seed, (0, self.directions[0]))
        storage = recipe.search.storage or f"sqlite:///{(self.run_dir / 'study.db').resolve()}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(storage=storage, study_name=recipe.name, sampler=sampler,
                                         directions=self.directions, load_if_exists=True)
        if [d.name.lower() for d in self.study.directions] != self.directions:
            raise RecipeError(f"{where}: search.objectives changed since this run started "
                              f"({self.run_dir}); use a new output folder")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(self.objectives)

    # --- resumption ---------------------------------------------------------------
    def _recover_interrupted(self) -> int:
        stale = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in stale:
            self.study.tell(trial.number, state=TrialState.FAIL)
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number},
                                     skip_if_exists=False)
        return len(stale)

    def completed(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    # --- the loop -------------------------------------------------------------------
    def run(self) -> SearchResult:
        recovered = self._recover_interrupted()
        if recovered and self.progress:
            print(f"resuming {self.run_dir}: re-evaluating {recovered} interrupted trial(s) from the store")
        budget = self.recipe.search.trials
        with make_progress(budget, "trials", self.progress) as bar:
            bar.update(self.completed())
            while (done := self.completed()) < budget:
                batch = self._ask_batch(min(self.recipe.search.batch_size, budget - done))
                self._evaluate_and_tell(batch)
                bar.update(self.completed() - bar.n)
        return self.result()

    def _ask_batch(self, size: int) -> list[tuple[optuna.Trial, Any]]:
        batch = []
        attempts = 0
        while len(batch) < size:
            attempts += 1
            if attempts > 50 * size:
                raise RuntimeError(f"controller {self.recipe.search.controller!r} keeps proposing "
                                   f"illegal architectures for {self.space.name}")
            trial = self.study.ask()
            try:
                arch = suggest_arch(trial, self.space)
            except ValueError as exc:
                trial.set_user_attr("illegal", str(exc))
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr(ARCH_ATTR, str(arch))
            batch.append((trial, arch))
        return batch

    def _evaluate_and_tell(self, batch: list[tuple[optuna.Trial, Any]]) -> None:
        archs = [arch for _, arch in batch]
        latencies = self.latency.evaluate(archs)
        constraints = self.recipe.search.constraints
        violations = [{m: metrics[m] - bound for m, bound in constraints.items() if m in metrics}
                      for metrics in latencies]
        feasible = [i for i, v in enumerate(violations) if all(x <= 0 for x in v.values())]
        accuracies = dict(zip(feasible, self.accuracy.evaluate([archs[i] for i in feasible])))
        for i, (trial, arch) in enumerate(batch):
            metrics = {**latencies[i], **accuracies.get(i, {})}
            # constraints on accuracy-side metrics are checked once they exist
            violation = {**violations[i], **{m: metrics[m] - b for m, b in constraints.items()
                                             if m not in latencies[i] and m in metrics}}
            features = self.space.features(arch)
            for key in FEATURES:
                if key in features:
                    trial.set_user_attr(key, features[key])
            for key, value in metrics.items():
                trial.set_user_attr(key, value)
            record_constraints(trial, violation)
            values = [metrics.get(o, -math.inf if d == MAXIMIZE else math.inf)
                      for o, d in zip(self.objectives, self.directions)]
            self.study.tell(trial, values)

    # --- results ----------------------------------------------------------------------
    def trial_rows(self) -> list[dict[str, Any]]:
        rows = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            row = {"trial": t.number, "arch": t.user_attrs[ARCH_ATTR], "feasible": is_feasible(t)}
            row.update({k: v for k, v in t.user_attrs.items()
                        if k not in (ARCH_ATTR, CONSTRAINTS_ATTR, "retry_of") and isinstance(v, (int, float))})
            rows.append(row)
        return rows

    def result(self) -> SearchResult:
        rows = self.trial_rows()
        usable = [r for r in rows if r["feasible"] and all(
            isinstance(r.get(o), (int, float)) and math.isfinite(r[o]) for o in self.objectives)]
        front = pareto_front(usable, self.objectives, self.directions)
        _write_csv(self.run_dir / "trials.csv", rows)
        _write_csv(self.run_dir / "front.csv", front)
        (self.run_dir / "front.json").write_text(json.dumps(
            {"objectives": self.objectives, "directions": self.directions, "front": front}, indent=2))
        result = SearchResult(self.run_dir, self.objectives, self.directions, front, rows,
                              list(getattr(self.latency, "measured", [])))
        remeasure = getattr(self.latency, "remeasure_front", None)
        if remeasure is not None and front:
            archs = [self.space.parse(r["arch"]) for r in front]
            measured = remeasure(archs)
            result.remeasured = [{"arch": r["arch"], **{f"predicted_{k}": r.get(k) for k in m},
                                  **{f"measured_{k}": v for k, v in m.items()}}
                                 for r, m in zip(front, measured)]
            _write_csv(self.run_dir / "front_remeasured.csv", result.remeasured)
        return result

    def close(self) -> None:
        for source in (self.latency, self.accuracy):
            source.close()
        self.store.close()


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys or ["arch"])
        writer.writeheader()
        writer.writerows(rows)


def run_search(recipe: str | Path | dict | Recipe, overrides: Sequence[str] = (),
               progress: bool = True) -> SearchResult:
    search = Search(load_recipe(recipe, overrides), progress=progress)
    try:
        return search.run()
    finally:
        search.close()
