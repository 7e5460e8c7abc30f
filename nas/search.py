"""The search loop: ask a batch, measure latency, estimate accuracy, tell.

Per batch of ``search.batch_size`` trials:

1. the controller (an Optuna sampler) proposes architectures via ``study.ask``;
2. the latency source evaluates the whole batch (runners interleave timing
   rounds across it; cached results are not re-measured);
3. candidates violating a hard constraint on a latency metric skip the
   accuracy estimate (the expensive part) and are told as infeasible;
4. the accuracy source evaluates the rest; every metric and analytic feature
   is stored on the trial, then ``study.tell``.

Cheap-objective screening (``search.screen: {factor: F}``, for a latency source
that declares itself ``cheap``: a predictor, an onboarded device, a table): step
1 asks for F times the batch, the latency source evaluates all of them, and
only the batch of most promising candidates (:func:`nas.controllers.screen`:
feasible, then not predicted dominated by the front) goes on; the others are
told to the study as PRUNED with their latency recorded, so the controller
never proposes them again, and do not count as trials.  Only candidates sent
to the accuracy source (the expensive evaluation) are trials.  Aging evolution
screens its own proposals instead when the recipe has one objective, constraints
on the cheap metrics, or one expensive and one cheap objective
(``AgingEvolutionSampler.screen_with``): each proposal is picked from thousands
of candidates by their exact cheap metrics and a Gaussian-process estimate of
the expensive objective, so nothing is pruned.  With ``factor`` unset (the
default) evolution does so whenever the latency source is cheap, and nothing
else screens; ``factor: 1`` turns screening off.

Warm start (``search.warm_start``): a new study is seeded with another run's
front, enqueued as the first trials (they skip screening).

Resumption: study state is in Optuna storage and every result is in the
measurement store as soon as it exists.  Trials left RUNNING by a killed
process are marked FAIL and their parameters re-enqueued, so they are
re-evaluated from the store: nothing measured is lost or measured again.

Several workers (:mod:`nas.workers`): with ``search.storage: postgresql://...``
every ``hwnas search`` of the recipe is a worker of one study.  Proposals are
serialised and counted against the budget, trials carry heartbeats (a dead
worker's trials are retried after ``search.heartbeat.grace_s``, a live one's
never), the store's claims measure each arch once, and the worker that sees
the budget reached first writes the run's results.  A SQLite study is locked
to one process.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from hardware.analytic import layer_table, named_device
from hardware.store import MeasurementStore, default_store_path
from nas.controllers import (ARCH_ATTR, CONSTRAINTS_ATTR, AgingEvolutionSampler, is_feasible, make_controller,
                             record_constraints, screen, suggest_arch)
from nas.files import atomic_write_text
from nas.interrupts import CtrlC
from nas.recipe import Recipe, RecipeError, load_recipe, result_changes, write_resolved
from nas.report import study_storage
from nas.sources import (ACCURACY_SOURCES, LATENCY_SOURCES, MAXIMIZE, MINIMIZE, RunContext, make_progress,
                         parse_source)
from nas.workers import (RunLock, TrialHeartbeats, describe_storage, fail_and_retry, fail_stale_trials, is_shared,
                         open_storage, proposal_lock, retried_from)
from predictors.protocol import mape
from predictors.quality import spearman
from search_spaces import make_space

log = logging.getLogger("hwnas.search")

#: analytic metrics of every space (``SearchSpace.features``): stored on every trial and
#: usable as objectives and constraints, e.g. ``objectives: [accuracy, macs]``
FEATURES = {"macs": MINIMIZE, "params": MINIMIZE}
#: the metric of ``search.roofline``: a named analytic device's latency (ms)
ROOFLINE = "roofline_ms"
#: user attribute of trials screened out on their cheap objectives (told PRUNED)
SCREENED_ATTR = "screened"
WARM_START_ATTR = "warm_start"
#: study user attribute: the worker that writes a shared run's results
FINISHED_BY_ATTR = "finished_by"
#: pause of a worker whose share of the budget is running elsewhere
IDLE_POLL_S = 0.5
#: illegal proposals in a row after which the controller is given up on
ILLEGAL_LIMIT = 400
#: threads writing a batch's trials to a shared study's database
WRITERS = 4


@dataclass
class SearchResult:
    run_dir: Path
    objectives: list[str]
    directions: list[str]
    front: list[dict[str, Any]]
    trials: list[dict[str, Any]] = field(default_factory=list)
    #: architectures whose latency this process measured (not read from the store)
    measured: list[str] = field(default_factory=list)
    #: the front and the next candidates re-measured in one batch (``predicted_*`` = the
    #: values the search used, ``measured_*``); ``None`` when the latency source reaches no device
    remeasured: list[dict[str, Any]] | None = None
    #: the front as the search saw it, before re-measurement recomputed ``front``
    search_front: list[dict[str, Any]] | None = None
    #: per latency metric: Spearman and MAPE (%) of the search's values against the re-measured ones
    agreement: dict[str, dict[str, float]] | None = None
    #: when no trial met the constraints: the closest candidates and how far each misses
    nearest: list[dict[str, Any]] | None = None
    #: candidates whose cheap objectives were evaluated but that screening kept from the
    #: expensive evaluation (not trials); 0 without ``search.screen``
    screened_out: int = 0
    #: False for a worker of a shared study that left the run's files (front, report,
    #: re-measurement, exports) to the worker that finished it
    final: bool = True


def pareto_layers(rows: Sequence[dict], objectives: Sequence[str], directions: Sequence[str],
                  limit: int | None = None) -> list[list[dict]]:
    """Non-dominated sorting: the front, then the front of the rest, and so on (one row
    per arch; each layer sorted by the first objective, best first).  ``limit`` stops once
    the layers hold that many rows."""
    signs = [1.0 if d == MAXIMIZE else -1.0 for d in directions]
    rest = list({r["arch"]: r for r in rows}.values())
    layers: list[list[dict]] = []
    while rest and (limit is None or sum(map(len, layers)) < limit):
        scored = [[s * r[o] for s, o in zip(signs, objectives)] for r in rest]

        def dominated(i: int) -> bool:
            a = scored[i]
            return any(all(b_k >= a_k for a_k, b_k in zip(a, b)) and any(b_k > a_k for a_k, b_k in zip(a, b))
                       for j, b in enumerate(scored) if j != i)

        flags = [dominated(i) for i in range(len(rest))]
        layers.append(sorted((r for r, f in zip(rest, flags) if not f), key=lambda r: -signs[0] * r[objectives[0]]))
        rest = [r for r, f in zip(rest, flags) if f]
    return layers


def pareto_front(rows: Sequence[dict], objectives: Sequence[str], directions: Sequence[str]) -> list[dict]:
    """Non-dominated rows (one per arch), sorted by the first objective, best first."""
    layers = pareto_layers(rows, objectives, directions, limit=1)
    return layers[0] if layers else []


def constraint_misses(row: dict, constraints: dict[str, float]) -> dict[str, float]:
    """``{metric: amount over its bound}`` of the constraints ``row`` violates."""
    return {m: row[m] - bound for m, bound in constraints.items()
            if isinstance(row.get(m), (int, float)) and row[m] > bound}


def nearest_misses(rows: Sequence[dict], constraints: dict[str, float], count: int = 5) -> list[dict]:
    """The ``count`` infeasible rows closest to feasibility (smallest summed relative
    miss), each with a ``misses`` text such as ``latency_ms 0.93 > 0.8 (+16%)``."""
    def relative(misses: dict[str, float]) -> float:
        return sum(v / abs(constraints[m]) if constraints[m] else v for m, v in misses.items())

    missing = [(r, constraint_misses(r, constraints)) for r in {r["arch"]: r for r in rows}.values()]
    missing = sorted(((r, m) for r, m in missing if m), key=lambda rm: (relative(rm[1]), rm[0]["arch"]))
    return [{"arch": r["arch"], **{k: v for k, v in r.items() if k != "arch" and isinstance(v, (int, float))},
             "misses": ", ".join(f"{k} {r[k]:.4g} > {constraints[k]:.4g} (+{v / abs(constraints[k]):.0%})"
                                 if constraints[k] else f"{k} {r[k]:.4g} > 0" for k, v in m.items())}
            for r, m in missing[:count]]


class Search:
    """One search run; ``run()`` drives it to ``search.trials`` completed trials.

    Everything is validated before anything is written: the recipe (by
    :func:`load_recipe`), the objectives against the sources' metrics, the
    controller's options, and, when the run folder already holds a run, that
    the recipe has not changed in a way that changes results (``force``
    resumes anyway).  Only then are the sources built and ``recipe.yaml``
    written."""

    def __init__(self, recipe: Recipe, progress: bool = True, force: bool = False):
        self.recipe = recipe
        self.progress = progress
        self.run_dir = recipe.run_dir()
        where = recipe.source or "<recipe>"
        self.space = make_space(recipe.space.name, **recipe.space.options)
        latency_cls, latency_options = parse_source(recipe.latency, LATENCY_SOURCES, where, "latency",
                                                    recipe.base_dir())
        accuracy_cls, accuracy_options = parse_source(recipe.accuracy, ACCURACY_SOURCES, where, "accuracy",
                                                      recipe.base_dir())
        self.roofline = None
        if recipe.search.roofline is not None:
            try:
                self.roofline = named_device(recipe.search.roofline)
            except ValueError as exc:
                raise RecipeError(f"{where}: search.roofline: {exc}") from None
        analytic = {**FEATURES, **({ROOFLINE: MINIMIZE} if self.roofline else {})}
        try:
            latency_metrics = latency_cls.metrics_of(latency_options)
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{where}: latency: {exc}") from None
        accuracy_metrics = accuracy_cls.metrics_of(accuracy_options)
        self.metric_directions = {**analytic, **accuracy_metrics, **latency_metrics}
        self.objectives = list(recipe.search.objectives or
                               [next(iter(accuracy_metrics)), next(iter(latency_metrics))])
        for metric in [*self.objectives, *recipe.search.constraints]:
            if metric not in self.metric_directions:
                raise RecipeError(f"{where}: search: unknown metric {metric!r}; the sources provide "
                                  f"{sorted(self.metric_directions)}")
        self.directions = [self.metric_directions[o] for o in self.objectives]
        try:
            sampler = make_controller(recipe.search.controller, self.space, recipe.search.options,
                                      recipe.seed, (0, self.directions[0]))
        except (KeyError, ValueError) as exc:
            raise RecipeError(f"{where}: search: {exc.args[0] if exc.args else exc}") from None
        factor = recipe.search.screen.factor
        self.screen_factor = 1 if factor is None else factor
        #: whether cheap objectives screen proposals (batches, or evolution's own pools)
        self.screening = self.screen_factor > 1
        if self.screen_factor > 1 and not latency_cls.cheap:
            cheap = sorted(k for k in LATENCY_SOURCES.names() if LATENCY_SOURCES.get(k).cheap)
            raise RecipeError(f"{where}: search.screen: the {latency_cls.kind!r} latency source is not cheap "
                              f"(it measures); screening needs one of {cheap}")
        self.warm_archs = self._read_warm_start(recipe.search.warm_start, where)
        self._check_resumable(force)
        self.storage_url = study_storage(self.run_dir, recipe.search.storage)
        self.shared = is_shared(self.storage_url)
        # None: a throwaway in-memory study (benchmarks, tests): fast, but nothing to resume from
        self.run_lock = (RunLock(Path(self.storage_url.split(":///", 1)[1])).acquire()
                         if self.storage_url and not self.shared else None)
        with contextlib.ExitStack() as undo:  # a refusal below leaves nothing open or locked
            undo.callback(self._release_run_lock)
            self.store = MeasurementStore(recipe.store or default_store_path(),
                                          lease_s=recipe.search.heartbeat.grace_s)
            undo.callback(self.store.close)
            self.ctx = RunContext(self.space, self.store, self.run_dir, recipe.seed, recipe.base_dir(), progress)
            try:
                self.latency = latency_cls(latency_options, self.ctx)
                undo.callback(self.latency.close)
                if warning := self.latency.constraint_warning(recipe.search.constraints):
                    log.warning(warning)
                self.accuracy = accuracy_cls(accuracy_options, self.ctx)
                undo.callback(self.accuracy.close)
            except RecipeError:
                raise
            except (KeyError, ValueError) as exc:
                raise RecipeError(f"{where}: {exc.args[0] if exc.args else exc}") from None
            timed, scored = self.latency.int8_weights(), self.accuracy.int8_weights()
            if self.space.searches_precision and timed and scored and timed != scored:
                raise RecipeError(f"{where}: latency times int8 layers with {timed} weights but accuracy scores "
                                  f"them with {scored}: set the same int8_weights in both sections")
            # unset factor: evolution screens its own proposals whenever latency is cheap
            if (self.screening or (factor is None and latency_cls.cheap)) and isinstance(
                    sampler, AgingEvolutionSampler) and sampler.screen_with(
                    self.latency.evaluate, list(self.latency.metrics),
                    {m: b for m, b in recipe.search.constraints.items() if m in self.latency.metrics},
                    self.objectives):
                self.screen_factor = 1  # evolution screens its own proposals, from a far larger pool
                self.screening = True
            write_resolved(recipe, self.run_dir)
            self._open_study(sampler, where)
            undo.pop_all()

    def _open_study(self, sampler, where: str) -> None:
        recipe = self.recipe
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # under the proposal lock: workers starting together create Optuna's tables, the study
        # and its warm start once
        with proposal_lock(self.storage_url, recipe.name):
            storage = (open_storage(self.storage_url, recipe.search.heartbeat) if self.storage_url
                       else optuna.storages.InMemoryStorage())
            self.study = optuna.create_study(storage=storage, study_name=recipe.name, sampler=sampler,
                                             directions=self.directions, load_if_exists=True)
            if [d.name.lower() for d in self.study.directions] != self.directions:
                raise RecipeError(f"{where}: search.objectives changed since this run started "
                                  f"({self.run_dir}); use a new output folder")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(self.objectives)
            if self.warm_archs and not self.study.get_trials(deepcopy=False):
                for arch in self.warm_archs:
                    self.study.enqueue_trial(self.space.encode(arch), user_attrs={WARM_START_ATTR: str(arch)},
                                             skip_if_exists=True)
        self._storage, self._study_id = storage, storage.get_study_id_from_name(recipe.name)
        self.heartbeats = TrialHeartbeats(storage, recipe.search.heartbeat.interval_s)
        # a database server takes a batch's writes (a round trip per parameter and attribute)
        # in parallel; SQLite serialises writers, so the process writes there itself
        self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="hwnas-tell") if self.shared else None
        self._stale_checked = -math.inf
        self._illegal_streak = 0

    # --- warm start -------------------------------------------------------------------
    def _read_warm_start(self, source: str | None, where: str) -> list:
        """The architectures to seed the search with: another run's front (its folder or
        ``front.json``) or a CSV with an ``arch`` column; each checked against the space."""
        if not source:
            return []
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / "front.json"
        if not path.is_file():
            raise RecipeError(f"{where}: search.warm_start: {str(path)!r} does not exist (a run folder "
                              f"with front.json, a front.json or a CSV with an 'arch' column)")
        try:
            if path.suffix == ".csv":
                texts = [row["arch"] for row in csv.DictReader(io.StringIO(path.read_text()))]
            else:
                texts = [row["arch"] for row in json.loads(path.read_text())["front"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise RecipeError(f"{where}: search.warm_start: {path}: no list of archs ({exc})") from None
        archs = []
        for text in texts:
            try:
                archs.append(self.space.parse(text))
            except ValueError as exc:
                raise RecipeError(f"{where}: search.warm_start: {path}: not an arch of space "
                                  f"{self.space.name!r}: {exc}") from None
        return archs

    # --- resumption ---------------------------------------------------------------
    def _check_resumable(self, force: bool) -> None:
        """Refuse to continue a run whose recipe changed in a way that changes results."""
        previous = self.run_dir / "recipe.yaml"
        if force or not previous.is_file():
            return
        try:
            changes = result_changes(load_recipe(previous), self.recipe)
        except (RecipeError, FileNotFoundError) as exc:
            raise RecipeError(f"{previous}: cannot compare with the recipe this run started with ({exc}); "
                              f"use a new output folder, or --force") from None
        if changes:
            raise RecipeError(f"{self.run_dir} was started with a different recipe; changed: {', '.join(changes)}. "
                              f"These change results: use a new output folder, or pass --force to resume "
                              f"anyway")

    def _recover_interrupted(self) -> int:
        """Retry the trials a killed process left RUNNING.  Only for a single-process study
        (the run lock says nobody else is running them); shared studies wait for heartbeats."""
        if self.shared:
            return 0
        stale = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return fail_and_retry(self.study, stale, self.recipe.search.heartbeat.retries)

    def completed(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def screened_out(self) -> int:
        """Candidates whose cheap objectives were evaluated but that were not sent on: told
        PRUNED by batch screening, or (evolution screening its own pool) evaluated by this
        process's controller and not proposed."""
        pruned = sum(SCREENED_ATTR in t.user_attrs
                     for t in self.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
        sampler = self.study.sampler
        if isinstance(sampler, AgingEvolutionSampler) and sampler.cheap_evaluations:
            return pruned + max(0, sampler.cheap_evaluations - self.completed())
        return pruned

    # --- the loop -------------------------------------------------------------------
    def run(self) -> SearchResult:
        budget = self.recipe.search.trials
        if self.completed() >= budget:
            print(f"{self.run_dir}: already complete ({self.completed()}/{budget} trials)")
            return self.result()
        recovered = self._recover_interrupted()
        if recovered and self.progress:
            print(f"resuming {self.run_dir}: re-evaluating {recovered} interrupted trial(s) from the store")
        if self.shared:
            print(f"worker of study {self.recipe.name!r} on {describe_storage(self.storage_url)}")
        evaluated = 0
        with make_progress(budget, "trials", self.progress) as bar, self.heartbeats, CtrlC() as ctrl_c:
            try:
                while True:
                    ctrl_c.check()  # a Ctrl-C dropped during the last batch stops before the next
                    batch, done = self._propose(budget)
                    if batch is None:
                        break
                    bar.update(done - bar.n)
                    if batch:
                        self._evaluate_and_tell(batch)
                        self.heartbeats.remove([t._trial_id for t, _ in batch])
                        evaluated += len(batch)
                    else:
                        time.sleep(IDLE_POLL_S)  # the rest of the budget is running on other workers
                bar.update(done - bar.n)
                ctrl_c.check()
            except KeyboardInterrupt:
                # other workers retry this one's trials at once instead of after the grace period
                if self.shared:
                    mine = set(self.heartbeats.running())
                    fail_and_retry(self.study, [t for t in self.study.get_trials(
                        deepcopy=False, states=(TrialState.RUNNING,)) if t._trial_id in mine],
                                   self.recipe.search.heartbeat.retries)
                raise
        if self.screening and self.progress:
            done, out = self.completed(), self.screened_out()
            print(f"screening: {done} expensive evaluations (trials), {done + out} cheap ones "
                  f"({out} candidates screened out)")
        if self.shared and not self._elected_to_finish():
            print(f"budget reached ({self.completed()}/{budget} trials, {evaluated} evaluated by this "
                  f"worker); another worker writes the run's results")
            return self.result(final=False)
        return self.result()

    def _propose(self, budget: int) -> tuple[list[tuple[optuna.Trial, Any]] | None, int]:
        """The next batch for this worker and the study's completed trials: the batch is
        ``None`` once the budget is complete, ``[]`` while the rest of it is running
        elsewhere.  Counting and creating the trials happen under the study's proposal
        lock, so the workers together ask for exactly the budget."""
        with proposal_lock(self.storage_url, self.recipe.name):
            if self.shared and time.monotonic() - self._stale_checked > self.recipe.search.heartbeat.interval_s:
                fail_stale_trials(self.study)
                self._stale_checked = time.monotonic()
            states = Counter(t.state for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)))
            done = states[TrialState.COMPLETE]
            if done >= budget:
                return None, done
            room = budget - done - states[TrialState.RUNNING]
            if room <= 0:
                return [], done
            size = min(self.recipe.search.batch_size, room)
            # only creating the trials is serialised: that is what the budget counts, and the
            # controller sees every earlier proposal; suggesting their parameters (a write per
            # decision) and screening run outside the lock
            trials = self._ask(size * self.screen_factor, waiting=states[TrialState.WAITING])
        # after the lock: a trial without any heartbeat yet is never taken for a dead worker's
        self.heartbeats.add([t._trial_id for t in trials])
        batch = self._ask_batch(trials, size)
        kept = {t._trial_id for t, _ in batch}
        self.heartbeats.remove([t._trial_id for t in trials if t._trial_id not in kept])
        return batch, done

    def _elected_to_finish(self) -> bool:
        """Whether this worker writes the run's results (the first to see the budget done)."""
        with proposal_lock(self.storage_url, self.recipe.name):
            if FINISHED_BY_ATTR in self.study.user_attrs:
                return False
            self.study.set_user_attr(FINISHED_BY_ATTR, self.store.owner)
            return True

    def _ask_batch(self, trials: list[optuna.Trial], size: int) -> list[tuple[optuna.Trial, Any]]:
        """Suggest the architectures of freshly asked ``trials`` and, with screening, keep
        the ``size`` most promising; the rest are told (PRUNED, or FAIL when illegal)."""
        batch = self._suggest(trials)
        if self.screen_factor == 1:
            return batch
        # warm-start trials are known to be good, retries were sent on before: never screened out
        fixed = [i for i, (t, _) in enumerate(batch)
                 if WARM_START_ATTR in t.user_attrs or retried_from(t) is not None]
        rest = [i for i in range(len(batch)) if i not in fixed]
        known = self.latency.evaluate([batch[i][1] for i in rest])
        bounds = {m: b for m, b in self.recipe.search.constraints.items() if m in self.latency.metrics}
        excess = [{m: metrics[m] - b for m, b in bounds.items()} for metrics in known]
        history = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        order = screen(self.space, [batch[i][1] for i in rest], known,
                       [sum(max(0.0, v) for v in e.values()) for e in excess], history, self.objectives,
                       self.directions, max(0, size - len(fixed)))
        kept = set(fixed) | {rest[j] for j in order}
        for j, i in enumerate(rest):
            if i in kept:
                continue
            trial = batch[i][0]
            for key, value in known[j].items():
                trial.set_user_attr(key, value)
            trial.set_user_attr(SCREENED_ATTR, True)
            record_constraints(trial, excess[j])
            self.study.tell(trial, state=TrialState.PRUNED)
        return [b for i, b in enumerate(batch) if i in kept]

    def _ask(self, count: int, waiting: int) -> list[optuna.Trial]:
        """``count`` new trials, each proposed by the controller as it is created (Optuna
        samples a trial's relative parameters lazily, at its first suggestion; reading them
        here makes every proposal see the ones before it, in this batch and other workers').

        The first ``waiting`` come from ``Study.ask``, which pops enqueued trials (warm
        start, retries); the rest are created directly: ``ask`` reads the queue of waiting
        trials once per trial, a whole query per proposal (under the proposal lock, with
        several workers) that finds nothing when nothing was enqueued."""
        trials = []
        with warnings.catch_warnings():
            # Optuna expects heartbeats from Study.optimize; nas.workers.TrialHeartbeats records them
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            for i in range(count):
                if i < waiting:
                    trial = self.study.ask()
                else:
                    trial = optuna.trial.Trial(self.study, self._storage.create_new_trial(self._study_id))
                trial.relative_params  # noqa: B018 - the proposal, made now (see above)
                trials.append(trial)
        return trials

    def _suggest(self, trials: list[optuna.Trial]) -> list[tuple[optuna.Trial, Any]]:
        """Each trial's architecture; an illegal proposal is told FAIL (and not replaced:
        the loop asks again within the budget)."""
        def suggest(trial: optuna.Trial) -> Any:
            try:
                arch = suggest_arch(trial, self.space)
            except ValueError as exc:
                trial.set_user_attr("illegal", str(exc))
                self.study.tell(trial, state=TrialState.FAIL)
                return None
            trial.set_user_attr(ARCH_ATTR, str(arch))
            return arch

        batch = []
        for trial, arch in zip(trials, self._each(suggest, trials)):
            if arch is None:
                self._illegal_streak += 1
                if self._illegal_streak > ILLEGAL_LIMIT:
                    raise RuntimeError(f"controller {self.recipe.search.controller!r} keeps proposing "
                                       f"illegal architectures for {self.space.name}")
                continue
            self._illegal_streak = 0
            batch.append((trial, arch))
        return batch

    def _analytic(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        """The analytic metrics of each arch: MACs, parameters and, with ``search.roofline``,
        the named analytic device's roofline latency at batch 1 (one layer table per batch)."""
        metrics = [{k: v for k, v in self.space.features(arch).items() if k in FEATURES} for arch in archs]
        if self.roofline is not None and archs:
            for row, ms in zip(metrics, self.roofline.latency_ms(layer_table(self.space, archs))):
                row[ROOFLINE] = float(ms)
        return metrics

    def _evaluate_and_tell(self, batch: list[tuple[optuna.Trial, Any]]) -> None:
        archs = [arch for _, arch in batch]
        # the cheap metrics first, analytic ones included: a candidate that breaks a bound on
        # any of them is never trained
        latencies = [{**analytic, **measured}
                     for analytic, measured in zip(self._analytic(archs), self.latency.evaluate(archs))]
        constraints = self.recipe.search.constraints
        violations = [{m: metrics[m] - bound for m, bound in constraints.items() if m in metrics}
                      for metrics in latencies]
        feasible = [i for i, v in enumerate(violations) if all(x <= 0 for x in v.values())]
        accuracies = dict(zip(feasible, self.accuracy.evaluate([archs[i] for i in feasible])))
        def tell(i: int) -> None:
            trial, arch = batch[i]
            metrics = {**latencies[i], **accuracies.get(i, {})}
            # constraints on accuracy-side metrics are checked once they exist
            violation = {**violations[i], **{m: metrics[m] - b for m, b in constraints.items()
                                             if m not in latencies[i] and m in metrics}}
            for key, value in metrics.items():
                trial.set_user_attr(key, value)
            record_constraints(trial, violation)
            values = [metrics.get(o, -math.inf if d == MAXIMIZE else math.inf)
                      for o, d in zip(self.objectives, self.directions)]
            self.study.tell(trial, values)

        self._each(tell, range(len(batch)))

    def _each(self, write: Callable[[Any], Any], items) -> list:
        """``write`` applied to every item: in parallel against a database server."""
        if self._writers is None:
            return [write(item) for item in items]
        return list(self._writers.map(write, items))

    # --- results ----------------------------------------------------------------------
    def trial_rows(self) -> list[dict[str, Any]]:
        rows = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            row = {"trial": t.number, "arch": t.user_attrs[ARCH_ATTR], "feasible": is_feasible(t)}
            row.update({k: v for k, v in t.user_attrs.items()
                        if k not in (ARCH_ATTR, CONSTRAINTS_ATTR) and isinstance(v, (int, float))})
            rows.append(row)
        return rows

    def result(self, final: bool = True) -> SearchResult:
        """The run's front; ``final``: also measure it again and write the run's files
        (one worker of a shared study does; the others only report)."""
        rows = self.trial_rows()
        usable = [r for r in rows if r["feasible"] and all(
            isinstance(r.get(o), (int, float)) and math.isfinite(r[o]) for o in self.objectives)]
        front = pareto_front(usable, self.objectives, self.directions)
        result = SearchResult(self.run_dir, self.objectives, self.directions, front, rows, self.latency.measured,
                              screened_out=self.screened_out())
        if not final:
            result.final = False
            return result
        if front:
            self._measure_front(result, usable)
        constraints = dict(self.recipe.search.constraints)
        if not result.front and constraints:
            measured = {r["arch"]: {k[len("measured_"):]: v for k, v in r.items() if k.startswith("measured_")}
                        for r in result.remeasured or []}
            result.nearest = nearest_misses([{**r, **measured.get(r["arch"], {})} for r in rows], constraints)
            log.warning("no trial met the constraints %s; nearest: %s", constraints,
                        "; ".join(f"{r['arch']} ({r['misses']})" for r in result.nearest[:3]))
        for metric, agreement in (result.agreement or {}).items():
            log.info("front re-measured: %s of %d candidates, search vs measured: Spearman %s, MAPE %.1f%%",
                     metric, agreement["count"], agreement["spearman"], agreement["mape"])
        _write_csv(self.run_dir / "trials.csv", rows)
        _write_csv(self.run_dir / "front.csv", result.front)
        saved = {"objectives": self.objectives, "directions": self.directions, "front": result.front}
        if result.remeasured is not None:
            saved.update(search_front=result.search_front, remeasured=result.remeasured,
                         agreement=result.agreement)
            _write_csv(self.run_dir / "front_remeasured.csv", result.remeasured)
        if result.nearest is not None:
            saved["nearest"] = result.nearest
        atomic_write_text(self.run_dir / "front.json", json.dumps(saved, indent=2))
        log.info("%s: %d trials, a front of %d", self.run_dir, len(rows), len(result.front))
        for row in result.front:  # the whole front in run.log (debug: the console gets the table)
            log.debug("front: %s", json.dumps(row))
        return result

    def _measure_front(self, result: SearchResult, usable: list[dict]) -> None:
        """Measured truth for the front: the front and the next candidates in line are
        measured again on the device, together in one interleaved batch (their values came
        from a predictor, or from batches timed at other moments), the front is recomputed
        from those values, and predicted-vs-measured agreement is kept.  Skipped when the
        latency source reaches no device (a shipped predictor, a table)."""
        front = result.front
        extra = max(4, len(front))  # the next ones in line: they may overtake the front when measured
        layers = pareto_layers(usable, self.objectives, self.directions, limit=len(front) + extra)
        candidates = [r for layer in layers for r in layer][:len(front) + extra]
        texts = [r["arch"] for r in candidates]
        previous = self._saved_remeasurement(texts)
        if previous is None:
            measured = self.latency.remeasure([self.space.parse(t) for t in texts])
            if measured is None:
                return
            # the source's metrics only (not e.g. a runner's spread): what is saved and compared
            previous = {t: {k: v for k, v in m.items() if k in self.latency.metrics}
                        for t, m in zip(texts, measured)}
        metrics = [k for k in self.latency.metrics
                   if all(isinstance(m.get(k), (int, float)) for m in previous.values())]
        on_front = {r["arch"] for r in front}
        result.remeasured = [{"arch": r["arch"], "on_search_front": r["arch"] in on_front,
                              **{f"predicted_{k}": r.get(k) for k in metrics},
                              **{f"measured_{k}": previous[r["arch"]][k] for k in metrics}}
                             for r in candidates]
        result.agreement = {k: _agreement([r[k] for r in candidates], [previous[r["arch"]][k] for r in candidates])
                            for k in metrics if all(isinstance(r.get(k), (int, float)) for r in candidates)}
        constraints = dict(self.recipe.search.constraints)
        truth = [{**r, **previous[r["arch"]]} for r in candidates]
        result.search_front = front
        result.front = pareto_front([r for r in truth if not constraint_misses(r, constraints)],
                                    self.objectives, self.directions)

    def _saved_remeasurement(self, texts: list[str]) -> dict[str, dict[str, float]] | None:
        """The measured values of an earlier ``result()`` of this run (a re-run of a finished
        search) when it measured the same candidates: nothing is measured twice."""
        try:
            saved = json.loads((self.run_dir / "front.json").read_text())
            rows = {r["arch"]: r for r in saved["remeasured"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if sorted(rows) != sorted(texts):
            return None
        return {t: {k[len("measured_"):]: v for k, v in rows[t].items() if k.startswith("measured_")} for t in texts}

    def close(self) -> None:
        for source in (self.latency, self.accuracy):
            source.close()
        self.store.close()
        if self._writers is not None:
            self._writers.shutdown()
        self._release_run_lock()

    def _release_run_lock(self) -> None:
        if self.run_lock is not None:
            self.run_lock.release()


def _agreement(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rank = spearman(p, m)  # undefined (NaN) for under 3 points or constant values: saved as null
    return {"spearman": None if math.isnan(rank) else round(rank, 4), "mape": round(mape(p, m), 2),
            "count": int(len(m))}


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys or ["arch"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def run_search(recipe: str | Path | dict | Recipe, overrides: Sequence[str] = (),
               progress: bool = True, force: bool = False) -> SearchResult:
    search = Search(load_recipe(recipe, overrides), progress=progress, force=force)
    try:
        return search.run()
    finally:
        search.close()
