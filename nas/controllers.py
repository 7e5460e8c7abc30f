"""Search controllers: Optuna samplers behind the study's ask/tell interface.

Every controller is an ``optuna.samplers.BaseSampler`` over the space's
categorical decisions, so study state (trials, parameters, objective values,
constraint values) lives in Optuna storage and a killed search resumes from
it.  ``CONTROLLERS`` maps a recipe name to a factory
``factory(space, options, seed, primary) -> sampler`` where ``primary`` is the
``(metric index, direction)`` that single-fitness controllers optimise.

Constraint values are stored per trial in the user attribute
``"constraints"`` (a list, feasible when every value is <= 0), which is what
``constraints_func`` below reads for the samplers that support it.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
from scipy.stats import norm, rankdata
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.registry import Registry
from nas.options import reject_unknown

CONTROLLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("controller")

CONSTRAINTS_ATTR = "constraints"
ARCH_ATTR = "arch"


#: Optuna >= 5 reads per-trial constraints set with ``Trial.set_constraint``;
#: older releases need ``constraints_func`` passed to the sampler instead
NATIVE_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


def _constraint_kwargs() -> dict[str, Any]:
    return {} if NATIVE_CONSTRAINTS else {"constraints_func": constraints_func}


def record_constraints(trial: optuna.Trial, violations: Mapping[str, float]) -> None:
    """Store constraint values (feasible when <= 0) where every sampler can read them;
    nothing for an unconstrained trial (:func:`constraints_func` reads that as feasible,
    and every write is a round trip to a shared study's database)."""
    if not violations:
        return
    trial.set_user_attr(CONSTRAINTS_ATTR, list(violations.values()))
    if NATIVE_CONSTRAINTS:
        for name, value in violations.items():
            trial.set_constraint(name, float(value))


def constraints_func(trial: FrozenTrial) -> list[float]:
    return list(trial.user_attrs.get(CONSTRAINTS_ATTR, [0.0]))


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in constraints_func(trial))


def distributions(space) -> dict[str, CategoricalDistribution]:
    return {name: CategoricalDistribution(list(choices)) for name, choices in space.decisions().items()}


def suggest_arch(trial: optuna.Trial, space):
    """Ask the trial for every decision of ``space`` and decode them (``ValueError`` if illegal)."""
    decisions = {name: trial.suggest_categorical(name, list(choices))
                 for name, choices in space.decisions().items()}
    return space.decode(decisions)


def _signed(values: Sequence[float], signs: Sequence[float]) -> list[float]:
    """Objective values as "larger is better" (NaN, which Optuna allows, counts as worst)."""
    return [s * v if v == v else -math.inf for v, s in zip(values, signs)]


def pareto_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-domination rank of each point (0 = non-dominated), every objective maximised."""
    if len(points) == 0:
        return []
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    n = len(pts)
    ge = (pts[:, None, :] >= pts[None, :, :]).all(-1)
    gt = (pts[:, None, :] > pts[None, :, :]).any(-1)
    dominates = ge & gt                       # dominates[i, j]: i dominates j
    count = dominates.sum(0)                  # how many points dominate j
    ranks = np.full(n, -1)
    rank, current = 0, np.flatnonzero(count == 0)
    while current.size:
        ranks[current] = rank
        count = count - dominates[current].sum(0)
        count[ranks >= 0] = -1
        rank, current = rank + 1, np.flatnonzero(count == 0)
    return ranks.tolist()


def crowding_distances(points: Sequence[Sequence[float]], ranks: Sequence[int]) -> list[float]:
    """NSGA-II crowding distance of each point within its rank (extremes: infinite)."""
    if len(points) == 0:
        return []
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    ranks = np.asarray(ranks)
    out = np.zeros(len(pts))
    for r in np.unique(ranks):
        idx = np.flatnonzero(ranks == r)
        for k in range(pts.shape[1]):
            order = idx[np.argsort(pts[idx, k], kind="stable")]
            span = pts[order[-1], k] - pts[order[0], k]
            out[order[0]] = out[order[-1]] = math.inf
            if len(order) > 2 and span > 0 and math.isfinite(span):
                out[order[1:-1]] += (pts[order[2:], k] - pts[order[:-2], k]) / span
    return out.tolist()


def violation(trial: FrozenTrial) -> float:
    """Total constraint violation (0 when feasible)."""
    return float(sum(max(0.0, v) for v in constraints_func(trial)))


def selection_keys(trials: Sequence[FrozenTrial], signs: Sequence[float],
                   objectives: Sequence[int] | None = None) -> list[tuple]:
    """Sort keys, smaller is better, ranking ``trials`` as parents: feasible before
    infeasible (Deb's rule), infeasible by total violation; feasible ones by Pareto rank
    over ``objectives`` (indices; default all), then by crowding distance (sparse
    regions of the front first), then newer first."""
    objectives = list(range(len(signs))) if objectives is None else list(objectives)
    keys: list[tuple] = [()] * len(trials)
    feasible = [i for i, t in enumerate(trials) if is_feasible(t)]
    points = [_signed([trials[i].values[k] for k in objectives], [signs[k] for k in objectives])
              for i in feasible]
    ranks = pareto_ranks(points)
    crowd = crowding_distances(points, ranks) if len(objectives) > 1 else [0.0] * len(points)
    for i, rank, c in zip(feasible, ranks, crowd):
        keys[i] = (0, 0.0, rank, -c, -trials[i].number)
    for i, t in enumerate(trials):
        if not keys[i]:
            keys[i] = (1, violation(t), 0, 0.0, -t.number)
    return keys


class RidgeSurrogate:
    """Ridge regression on the one-hot encoding of a space's decisions (plus, when
    ``pairs``, of every pair of decisions): microseconds to fit on a few hundred trials,
    and a fair ranker of additive quantities such as latency and MACs."""

    def __init__(self, space, pairs: bool = False, alpha: float = 1.0):
        self.names = list(space.decisions())
        self.index = [{v: i for i, v in enumerate(c)} for c in space.decisions().values()]
        self.space, self.pairs, self.alpha = space, pairs, alpha
        self._codes: dict[str, list[int]] = {}

    def _code(self, text: str) -> list[int]:
        code = self._codes.get(text)
        if code is None:
            decisions = self.space.encode(self.space.parse(text))
            code = self._codes[text] = [idx[decisions[n]] for n, idx in zip(self.names, self.index)]
        return code

    def encode(self, archs: Sequence[Any]) -> np.ndarray:
        """Design matrix of ``archs`` (architectures or their canonical strings)."""
        cols = []
        codes = np.array([self._code(str(a)) for a in archs], dtype=int).reshape(len(archs), -1)
        for j, idx in enumerate(self.index):
            cols.append(np.eye(len(idx))[codes[:, j]])
        if self.pairs:
            for j in range(len(self.index)):
                for k in range(j + 1, len(self.index)):
                    n = len(self.index[k])
                    cols.append(np.eye(len(self.index[j]) * n)[codes[:, j] * n + codes[:, k]])
        return np.hstack(cols + [np.ones((len(archs), 1))])

    def fit_predict(self, x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
        return self.fit_predict_error(x, y, x_new)[0]

    def fit_predict_error(self, x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> tuple[np.ndarray, float]:
        """Predictions for ``x_new`` and the fit's root-mean-square residual on ``x``."""
        mean, scale = float(y.mean()), float(y.std()) or 1.0
        a = x.T @ x + self.alpha * np.eye(x.shape[1])
        w = np.linalg.solve(a, x.T @ ((y - mean) / scale))
        rmse = float(np.sqrt(np.mean((x @ w * scale + mean - y) ** 2)))
        return x_new @ w * scale + mean, rmse


class GPSurrogate:
    """Gaussian process for an expensive objective (accuracy) given cheap ones: a Tanimoto
    kernel on the space's :meth:`~search_spaces.base.SearchSpace.structure_encoding` (as in
    BANANAS and GP-NAS surrogates) around a linear trend in the cheap metrics' logarithms
    and in that of the space's :meth:`~search_spaces.base.SearchSpace.live_macs` where the
    space counts them (:meth:`size_trend`).

    The trend carries what the history cannot show: under a latency bound the best
    networks spend compute the evaluated ones did not, and accuracy rises with latency and
    MACs in every space.  The kernel then ranks candidates of equal cost by structure.
    Latency alone did not carry it: under raspi4's 25th-percentile budget the best cell of
    NAS-Bench-201 is the one feasible cell with a live 3x3 convolution, four of its edges
    ``none`` like many near-chance cells, and the GP without live MACs put it at the 20th-25th
    percentile of the trials; 4 of 10 seeds missed it (0.83 pt).  With them, none did,
    and over HELP's six test devices (``benchmarks/search_quality.py``, seeds 0-4 / 5-9)
    regret@p25 fell from 0.06 / 0.15 pt to 0 / 0 and the hypervolume ratio rose from
    0.9872 / 0.9908 to 0.9920 / 0.9943.

    It models the targets' normal scores (:meth:`scores`, a Gaussian copula), not the raw
    values: NAS-Bench-201's accuracies have a long tail of cells near chance (10%) that
    otherwise set the residual scale and drag the posterior mean of every good cell down.
    In a replay of the screened search on HELP's six test devices (5 seeds, batch 8),
    regret under the 25th-percentile latency budget fell from 0.16 pt to 0.03 pt with
    the scores and the NAS-Bench-201 encoding of paths and edges together."""

    def __init__(self, space, noise: float = 1e-2):
        self.space, self.noise = space, noise
        #: arch string -> (structure encoding, live MACs): each arch parsed once per sampler
        self._described: dict[str, tuple[np.ndarray, float | None]] = {}

    def _describe(self, text: str) -> tuple[np.ndarray, float | None]:
        described = self._described.get(text)
        if described is None:
            arch = self.space.parse(text)
            described = self._described[text] = (self.space.structure_encoding(arch), self.space.live_macs(arch))
        return described

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self._describe(text)[0] for text in texts])

    def size_trend(self, texts: Sequence[str]) -> np.ndarray:
        """The trend's column from the space: the logarithm of
        :meth:`~search_spaces.base.SearchSpace.live_macs`; no column where the space does
        not count it for every one of ``texts``."""
        sizes = [self._describe(text)[1] for text in texts]
        if any(v is None for v in sizes):
            return np.zeros((len(texts), 0))
        return np.log(np.maximum(np.array(sizes, dtype=float), 1.0)).reshape(len(texts), 1)

    @staticmethod
    def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ab = a @ b.T
        aa, bb = (a * a).sum(1)[:, None], (b * b).sum(1)[None, :]
        return ab / np.maximum(aa + bb - ab, 1e-12)

    @staticmethod
    def scores(y: np.ndarray) -> np.ndarray:
        """Normal scores of ``y`` (ties share their mean rank): the scale the GP models."""
        return norm.ppf(rankdata(y) / (len(y) + 1))

    def fit_predict(self, texts: Sequence[str], trend: np.ndarray, y: np.ndarray, new_texts: Sequence[str],
                    new_trend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at ``new_texts`` on the scale of
        :meth:`scores` of ``y``; ``trend`` rows are the cheap features of the observed
        ``texts`` (``new_trend`` of the new ones)."""
        y = self.scores(y)
        # one call over both sets: seen and new archs get the column alike or not at all
        sizes = self.size_trend([*texts, *new_texts])
        size, new_size = sizes[:len(texts)], sizes[len(texts):]
        f = np.hstack([trend, size, np.ones((len(y), 1))])
        f_new = np.hstack([new_trend, new_size, np.ones((len(new_texts), 1))])
        w = np.linalg.lstsq(f, y, rcond=None)[0]
        residual = y - f @ w
        scale = float(residual.std()) or 1.0
        x, x_new = self.encode(texts), self.encode(new_texts)
        chol = np.linalg.cholesky(self._kernel(x, x) + self.noise * np.eye(len(x)))
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, residual / scale))
        cross = self._kernel(x_new, x)
        v = np.linalg.solve(chol, cross.T)
        var = np.maximum(1.0 - (v * v).sum(0), 0.0)
        return f_new @ w + cross @ alpha * scale, np.sqrt(var) * scale


def front_gain(predicted: np.ndarray, front: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Additive epsilon indicator, larger is better: how far beyond every point of ``front``
    each row of ``predicted`` lies (every objective "larger is better", divided by
    ``scale``); positive when a row would extend the front."""
    if len(front) == 0:
        return (predicted / scale).sum(1)
    return -np.min(np.max((front[None, :, :] - predicted[:, None, :]) / scale, axis=2), axis=1)


def expected_hypervolume_improvement(cost: np.ndarray, mean: np.ndarray, sd: np.ndarray, front: np.ndarray,
                                     ref: tuple[float, float]) -> np.ndarray:
    """Expected two-objective hypervolume improvement, in closed form, of candidates whose
    ``cost`` (minimised) is known exactly and whose value (maximised) is believed
    normal(``mean``, ``sd``); ``front`` rows are the current ``(cost, value)`` points and
    ``ref`` the reference point.

    A candidate at cost c with value v adds the area between v and the front's staircase
    from c to the reference cost; the staircase is a step function of cost, so the
    expectation is a width-weighted sum of expected improvements over its steps."""
    front = np.asarray(front, dtype=float).reshape(-1, 2)
    front = front[np.argsort(front[:, 0], kind="stable")]
    levels = np.maximum(np.maximum.accumulate(np.append(ref[1], front[:, 1])), ref[1])
    starts = np.append(-np.inf, front[:, 0])
    ends = np.minimum(np.append(front[:, 0], ref[0]), ref[0])
    sd = np.maximum(sd, 1e-12)
    total = np.zeros(len(cost))
    for start, end, level in zip(starts, ends, levels):
        width = np.clip(end - np.maximum(start, cost), 0.0, None)
        z = (mean - level) / sd
        total += width * ((mean - level) * norm.cdf(z) + sd * norm.pdf(z))
    return total


def screen(space, archs: Sequence[Any], known: Sequence[Mapping[str, float]], violations: Sequence[float],
           history: Sequence[FrozenTrial], objectives: Sequence[str], directions: Sequence[str],
           keep: int) -> list[int]:
    """Indices of the ``keep`` most promising of ``archs``, best first, for cheap-objective
    screening.  ``known`` holds each candidate's cheap metrics (exact), ``violations`` its
    total violation of the constraints on them; ``history`` holds completed trials with
    every metric stored as a user attribute.

    Order: feasible candidates first (infeasible ones by violation); then those that may
    extend the current front: the objectives not known yet are estimated optimistically
    (a :class:`RidgeSurrogate` fit on ``history``, plus its residual error as the
    margin) and a candidate is promising when that estimate is not dominated by the
    front (:func:`front_gain` >= 0); promising candidates keep the controller's order,
    the rest follow by estimated gain.  Without enough history to estimate, every
    candidate is promising."""
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    n = len(archs)
    gain = np.zeros(n)
    done = [t for t in history if all(isinstance(t.user_attrs.get(o), (int, float)) and
                                      math.isfinite(t.user_attrs[o]) for o in objectives)]
    if len(done) >= 2 and any(not all(o in k for k in known) for o in objectives):
        fit = RidgeSurrogate(space)
        x_hist, x_new = fit.encode([t.user_attrs[ARCH_ATTR] for t in done]), fit.encode(archs)
        optimistic = np.zeros((n, len(objectives)))
        for j, o in enumerate(objectives):
            if all(o in k for k in known):
                optimistic[:, j] = [signs[j] * k[o] for k in known]
            else:
                y = np.array([signs[j] * t.user_attrs[o] for t in done])
                predicted, rmse = fit.fit_predict_error(x_hist, y, x_new)
                optimistic[:, j] = predicted + rmse
        all_points = np.array([[signs[j] * t.user_attrs[o] for j, o in enumerate(objectives)] for t in done])
        points = all_points[[is_feasible(t) for t in done]]
        front = points[[r == 0 for r in pareto_ranks(points.tolist())]] if len(points) else points
        scale = np.ptp(all_points, axis=0)
        gain = front_gain(optimistic, front, np.where(scale > 0, scale, 1.0))
    order = sorted(range(n), key=lambda i: (violations[i] > 0, violations[i], gain[i] < 0, -min(gain[i], 0.0), i))
    return order[:keep]


#: upper-confidence-bound weight of screened proposals: replaying the screened search on
#: NAS-Bench-201's six test devices (5 seeds, 4,096 feasible candidates per proposal, the
#: GP on normal scores), regret under the 10th/25th/50th-percentile latency budgets was
#: 0.01/0.02/0.03 pt at 2, 0.01/0.02/0.01 at 3 and 0.005/0.02/0.03 at 4; raspi4's unique
#: best cell under the 25th percentile was missed by 4 of 10 seeds at 2, 1 at 3, 0 at 4
UCB_KAPPA = 3.0

#: proposals for which a screened proposal's random candidates stay candidates: a GP picks
#: best from many candidates (replaying the screened search on NAS-Bench-201's six test
#: devices, regret under the 25th-percentile budget was 0.14 pt from 512 random candidates
#: per proposal, 0.02 from 4,096), and keeping each draw for 16 proposals gives 16 times
#: the candidates for the cost of one draw
POOL_MEMORY = 16

#: draws per random candidate kept under bounds on cheap metrics (:meth:`AgingEvolutionSampler._random_pool`)
REJECTION = 4


class AgingEvolutionSampler(optuna.samplers.BaseSampler):
    """Multi-objective, constraint-aware aging evolution (Real et al. 2019, with NSGA-II's
    ranking and a surrogate that picks among candidate children): the default controller.

    *Population*: the ``population`` most recent completed trials (older ones age out),
    plus the elite: the feasible non-dominated trials of the whole history, which never
    age out (on NAS-Bench-201, aging them out lost the front's extremes).
    *Parents*: tournaments of ``sample_size`` members drawn from the population, won by
    :func:`selection_keys`: feasible first (infeasible by violation), then Pareto rank over
    every objective of the study, then crowding distance, so the whole front (fast and
    accurate ends alike) keeps breeding.  ``selection: primary`` ranks by the first
    objective alone (accuracy under a constraint, the others only recorded).
    *Children*: with probability ``crossover_prob`` the space's ``crossover`` of two
    parents (legal by construction), then the space's ``mutate`` (always for a child equal
    to its parent or already proposed).  The mutation rate adapts to the space
    (:meth:`default_mutation_rate`: more decisions, more changes per child) and is raised
    step by step while children repeat an architecture already proposed: no
    architecture is proposed twice while unproposed ones are within reach (a repeat is a
    wasted trial).
    *Constraints*: once some trial was infeasible, ``candidates`` novel children are bred
    and the first one a ridge surrogate of the constraint values (fit on every trial
    whose constraints are known, screened-out ones included) predicts feasible is
    proposed; ``candidates: 1`` is plain aging evolution.
    Until the population is full, proposals are random samples (never repeats).
    *Screening* (:meth:`screen_with`, when the search has a cheap latency source): each
    proposal is the best of ``pool / 2`` bred candidates and the random candidates of the
    last ``POOL_MEMORY`` proposals (``pool / 2`` each) by their exact cheap metrics and a
    Gaussian-process estimate of the expensive objective.

    Every trial draws from a generator seeded by ``(seed, trial.number)`` and reads only
    the study's trials, so a resumed search makes the same proposals as an uninterrupted
    one given the same history.
    """

    def __init__(self, space, seed: int, primary: tuple[int, str], population: int | None = None,
                 sample_size: int | None = None, mutation_rate: float | None = None,
                 crossover_prob: float = 0.5, selection: str = "pareto", candidates: int = 8, pool: int = 512):
        population = self.default_population(space) if population is None else population
        sample_size = max(2, population // 4) if sample_size is None else sample_size
        if not isinstance(population, int) or population < 2 or not 1 <= sample_size <= population:
            raise ValueError("evolution needs population >= 2 and 1 <= sample_size <= population")
        if mutation_rate is not None and not 0 <= mutation_rate <= 1:
            raise ValueError(f"evolution mutation_rate must be in [0, 1], got {mutation_rate}")
        if not 0 <= crossover_prob <= 1:
            raise ValueError(f"evolution crossover_prob must be in [0, 1], got {crossover_prob}")
        if selection not in ("pareto", "primary"):
            raise ValueError(f"evolution selection must be 'pareto' or 'primary', got {selection!r}")
        if not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"evolution candidates must be an integer >= 1, got {candidates!r}")
        if not isinstance(pool, int) or pool < 2:
            raise ValueError(f"evolution pool must be an integer >= 2, got {pool!r}")
        self.space = space
        self.seed = int(seed)
        self.objective_index, self.direction = primary
        self.population = int(population)
        self.sample_size = int(sample_size)
        self.mutation_rate = mutation_rate
        self.crossover_prob = float(crossover_prob)
        self.selection = selection
        self.candidates = candidates
        self.pool = pool
        self.surrogate = RidgeSurrogate(space)
        #: the screening GP (one per sampler: its structure encodings are cached across proposals)
        self.gp = GPSurrogate(space)
        #: cheap-objective screening (:meth:`screen_with`); None: off
        self._cheap: Callable[[list], list[dict[str, float]]] | None = None
        self._bounds: dict[str, float] = {}
        self._cheap_metrics: list[str] = []
        self._cheap_known: dict[str, dict[str, float]] = {}
        self._objective_names: list[str] = []
        #: candidates whose cheap objectives this process evaluated (screening)
        self.cheap_evaluations = 0
        #: trial number -> the arch proposed for it (read while its parameters are not yet written)
        self._proposed: dict[int, str] = {}
        #: the study's trials as read at the first proposal since this process last told one
        self._snapshot: list[FrozenTrial] | None = None
        self._signs: list[float] | None = None
        #: trial number -> the random candidates drawn for its screened proposal
        self._random_pools: dict[int, dict[str, Any]] = {}

    def screen_with(self, evaluate: Callable[[list], list[dict[str, float]]], metrics: Sequence[str],
                    bounds: Mapping[str, float], objectives: Sequence[str]) -> bool:
        """Screen every proposal on cheap objectives (``search.screen`` with a cheap latency
        source): ``evaluate(archs)`` returns their ``metrics``, ``bounds`` are the recipe's
        constraints on them.  Each proposal is then picked from ``pool`` candidates (half
        bred from the population, half random, none proposed before), feasible ones only,
        by a :class:`GPSurrogate` of the expensive objective fit on the completed trials:
        for one objective (or ``selection: primary``) the highest upper confidence bound;
        for one expensive and one cheap objective (accuracy and latency) the largest
        :func:`expected_hypervolume_improvement` (hypervolume ratio 0.987 against the
        tournament's 0.978 on NAS-Bench-201's six test devices, ``benchmarks/search_quality.py``).

        Returns whether it screens: not for other sets of objectives without bounds, where
        the tournament's child is proposed and the search loop screens batches
        (:func:`screen`); with bounds, such sets take the first feasible candidate."""
        self._objective_names, self._cheap_metrics = list(objectives), list(metrics)
        if not bounds and len(objectives) > 1 and self.selection != "primary" and self._two_d() is None:
            return False
        self._cheap, self._bounds = evaluate, dict(bounds)
        return True

    def _two_d(self) -> tuple[int, int] | None:
        """``(expensive, cheap)`` objective indices when the study has exactly one of each
        (the case :func:`expected_hypervolume_improvement` scores), else None."""
        names = self._objective_names
        cheap = [i for i, o in enumerate(names) if o in self._cheap_metrics]
        if len(names) != 2 or len(cheap) != 1:
            return None
        return 1 - cheap[0], cheap[0]

    @staticmethod
    def default_population(space) -> int:
        """Grows with the log of the space's size: 32 for NAS-Bench-201's 15,625 cells."""
        bits = math.log2(max(2, space.size()))
        return int(np.clip(round(2.3 * bits), 8, 64))

    @staticmethod
    def default_mutation_rate(space) -> float:
        """Per-decision resampling rate on top of the one forced change: about
        ``log2(#decisions) - 2.5`` extra changes per child, none for NAS-Bench-201's 6
        edges (one-edge steps search its small space best), two for FBNet's 22 layers."""
        n = max(1, len(space.decisions()))
        return float(np.clip((math.log2(n) - 2.5) / n, 0.0, 1.0))

    def infer_relative_search_space(self, study, trial) -> dict[str, Any]:
        return distributions(self.space)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        arch = self._propose(study, trial)
        # a batch's trials are all created before their parameters are written (nas.search):
        # the next proposal must still see this one, so it is remembered until they are
        self._proposed[trial.number] = str(arch)
        return self.space.encode(arch)

    def after_trial(self, study, trial, state, values) -> None:
        self._snapshot = None  # something was told: the next proposal reads the study again

    def _trials(self, study) -> list[FrozenTrial]:
        """The study's trials, read once per batch: between two tells of this process only
        the batch's own new trials change, and :attr:`_proposed` knows their archs (with
        several workers, each read of a shared study costs round trips under the lock)."""
        if self._snapshot is None:
            self._snapshot = study.get_trials(deepcopy=False)
        return self._snapshot

    def _propose(self, study, trial):
        rng = np.random.default_rng([self.seed, trial.number])
        trials = self._trials(study)
        texts = {t.number: a for t in trials if t.number != trial.number and (a := self._arch_text(t)) is not None}
        newest = max((t.number for t in trials), default=-1)
        # trials created after the snapshot: this batch's earlier proposals
        texts.update({n: a for n, a in self._proposed.items() if newest < n < trial.number})
        seen = set(texts.values())
        history = [t for t in trials if t.state == TrialState.COMPLETE and t.number in texts]
        if len(history) < self.population:
            if self._cheap is not None and self._bounds:  # random, but feasible
                return self._screened(trial.number, {}, seen, history, texts, single=False, surrogate=False)
            return self._novel_sample(rng, seen)
        population = history[-self.population:]
        if self._signs is None:  # a study's directions never change; reading them is a round trip
            self._signs = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
        signs = self._signs
        objectives = [self.objective_index] if self.selection == "primary" else list(range(len(signs)))
        # the elite: feasible non-dominated trials that aged out still breed
        older = history[:-self.population]
        population += [t for t, k in zip(older, selection_keys(older, signs, objectives)) if k[:3] == (0, 0.0, 0)]
        keys = selection_keys(population, signs, objectives)

        def tournament():
            picks = rng.choice(len(population), self.sample_size, replace=False)
            return self.space.parse(texts[population[min(picks, key=lambda i: keys[i])].number])

        # breed several children only when some trial was infeasible: the surrogate then
        # picks one predicted feasible; otherwise the first child is the proposal
        wanted = self.candidates if any(not is_feasible(t) for t in history) else 1
        single = len(objectives) == 1
        screening = self._cheap is not None
        if screening:
            wanted = self.pool // 2
        children: dict[str, Any] = {}
        rate = self.default_mutation_rate(self.space) if self.mutation_rate is None else self.mutation_rate
        for _ in range(8 * wanted + 24):
            if len(children) >= wanted:
                break
            parent = tournament()
            child = parent
            if rng.random() < self.crossover_prob:
                child = self.space.crossover(parent, tournament(), rng)
            if child == parent or str(child) in seen:
                child = self.space.mutate(child, rng, rate)
            text = str(child)
            if text in seen or text in children:
                # the neighbourhood is used up: mutate further from the parents
                rate = min(1.0, max(rate, 0.5 / len(self.space.decisions())) * 1.25)
                continue
            children[text] = child
        if screening:
            return self._screened(trial.number, children, seen, history, texts, single)
        if not children:
            return self._novel_sample(rng, seen)
        pool = list(children.values())
        known = history + [t for t in trials if t.state == TrialState.PRUNED and t.number in texts
                           and CONSTRAINTS_ATTR in t.user_attrs]
        best = self._choose(pool, known, texts) if len(pool) > 1 else 0
        return pool[best]

    def _random_pool(self, number: int) -> dict[str, Any]:
        """The random candidates of trial ``number``'s screened proposal, ``pool / 2`` of
        them, from a generator of their own (a resumed search draws the same ones).  Under
        bounds on cheap metrics they are the feasible ones among ``REJECTION`` times as
        many draws (the least infeasible where too few are feasible): under a
        25th-percentile latency budget three of four plain draws would be candidates the
        proposal cannot pick."""
        drawn = self._random_pools.get(number)
        if drawn is None:
            rng = np.random.default_rng([self.seed, number, 1])
            quota = self.pool - self.pool // 2
            drawn = {}
            for _ in range(quota * (REJECTION if self._bounds else 1)):
                arch = self.space.sample(rng)
                drawn.setdefault(str(arch), arch)
            if self._bounds:
                excess = self._excess(self._cheap_values(list(drawn), drawn))
                drawn = {t: drawn[t] for t in sorted(drawn, key=excess.get)[:quota]}  # feasible first
            self._random_pools[number] = drawn
            for stale in [n for n in self._random_pools if n <= number - POOL_MEMORY]:
                del self._random_pools[stale]
        return drawn

    def _screened(self, number: int, children: dict[str, Any], seen: set[str],
                  history: list[FrozenTrial], texts: dict[int, str], single: bool, surrogate: bool = True):
        """The proposal for trial ``number`` among ``children`` and the random candidates of
        this and the previous ``POOL_MEMORY - 1`` proposals (see
        :meth:`screen_with`): for one objective (or ``selection: primary``), the feasible
        candidate with the highest upper confidence bound of a :class:`GPSurrogate` (the
        best value when the objective is itself cheap); for one expensive and one cheap
        objective, the largest expected hypervolume improvement; otherwise, or without
        ``surrogate`` (the random start) or history, the first feasible candidate,
        children first."""
        pool = dict(children)
        for past in range(max(0, number - POOL_MEMORY + 1), number + 1):
            pool.update((t, a) for t, a in self._random_pool(past).items() if t not in seen and t not in pool)
        if not pool:
            return self._novel_sample(np.random.default_rng([self.seed, number]), seen)
        order = list(pool)
        known = self._cheap_values(order, pool)
        excess = self._excess(known)
        feasible = [t for t in order if excess[t] <= 0]
        if not feasible:  # the least infeasible
            return pool[min(order, key=excess.get)]
        two_d = None if single else self._two_d()
        k = self.objective_index if two_d is None else two_d[0]
        train = [t for t in history if is_feasible(t) and math.isfinite(t.values[k])]
        if not surrogate or (not single and two_d is None) or len(train) < 2:
            return pool[feasible[0]]
        name = self._objective_names[k]
        if single and name in self._cheap_metrics:  # the objective itself is cheap: known exactly
            return pool[max(feasible, key=lambda t: self._signs[k] * known[t][name])]
        train_texts = [texts[t.number] for t in train]
        trained = self._cheap_values(train_texts, {})
        y = np.array([self._signs[k] * t.values[k] for t in train])
        mean, sd = self.gp.fit_predict(train_texts, self._trend([trained[t] for t in train_texts]), y,
                                       feasible, self._trend([known[t] for t in feasible]))
        if two_d is None:
            return pool[feasible[int(np.argmax(mean + UCB_KAPPA * sd))]]
        cheap = self._objective_names[two_d[1]]
        sign = self._signs[two_d[1]]
        # costs minimised, values on the GP's scale maximised
        points = np.column_stack([[-sign * trained[t][cheap] for t in train_texts], self.gp.scores(y)])
        front = points[[r == 0 for r in pareto_ranks(np.column_stack([-points[:, 0], points[:, 1]]).tolist())]]
        costs = np.array([-sign * known[t][cheap] for t in feasible])
        # the reference cost is the worst one known, candidates included: a candidate costlier
        # than every trial may still extend the front's accurate end
        ref = (float(max(points[:, 0].max(), costs.max())), float(points[:, 1].min()))
        gain = expected_hypervolume_improvement(costs, mean, sd, front, ref)
        return pool[feasible[int(np.argmax(gain))]]

    def _cheap_values(self, order: list[str], archs: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        """Cheap metrics of the archs ``order`` names (evaluated once per arch and process)."""
        todo = [t for t in order if t not in self._cheap_known]
        if todo:
            values = self._cheap([archs[t] if t in archs else self.space.parse(t) for t in todo])
            self._cheap_known.update(zip(todo, values))
            self.cheap_evaluations += len(todo)
        return {t: self._cheap_known[t] for t in order}

    def _excess(self, known: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """Total excess over their bounds of the cheap metrics ``known`` (arch string -> metrics)."""
        return {t: sum(max(0.0, metrics[m] - b) for m, b in self._bounds.items()) for t, metrics in known.items()}

    def _trend(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The GP's trend features: logarithms of the cheap metrics."""
        return np.array([[math.log(max(float(r[m]), 1e-9)) for m in self._cheap_metrics] for r in rows]
                        ).reshape(len(rows), len(self._cheap_metrics))

    def _choose(self, pool: list, history: list[FrozenTrial], texts: dict[int, str]) -> int:
        """Index of the first child the surrogate predicts feasible (else the least infeasible),
        the surrogate fit on the constraint values of ``history``.

        Only constraints are predicted: what bounds them (latency, memory) is close to
        additive over the decisions, so a ridge model ranks it well from a few dozen
        trials, while accuracy is not (a surrogate's pick by predicted accuracy did worse
        than the tournament's on NAS-Bench-201)."""
        cons = [constraints_func(t) for t in history]
        width = max(len(c) for c in cons) if cons else 0
        predicted = np.zeros(len(pool))
        x_hist = x_new = None
        for k in range(width):
            rows = [i for i, c in enumerate(cons) if len(c) == width and math.isfinite(c[k])]
            y = np.array([cons[i][k] for i in rows])
            if len(rows) < 2 or y.max() <= 0:
                continue
            if x_hist is None:
                x_hist = self.surrogate.encode([texts[t.number] for t in history])
                x_new = self.surrogate.encode([str(a) for a in pool])
            predicted += np.maximum(0.0, self.surrogate.fit_predict(x_hist[rows], y, x_new))
        return int(np.argmin(predicted))  # the first of the predicted-feasible ones

    def _novel_sample(self, rng: np.random.Generator, seen: set[str], tries: int = 100):
        for _ in range(tries):
            arch = self.space.sample(rng)
            if str(arch) not in seen:
                return arch
        return arch

    def _arch_text(self, trial: FrozenTrial) -> str | None:
        """The canonical arch string of a trial (``None`` for one without a full arch)."""
        if trial.state == TrialState.FAIL:
            return None
        text = trial.user_attrs.get(ARCH_ATTR)
        if text is not None:
            return text
        try:
            return str(self.space.decode(trial.params))
        except (KeyError, ValueError):
            return self._proposed.get(trial.number)

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        # only reached for parameters outside the space's decisions
        rng = np.random.default_rng([self.seed, trial.number, len(param_name)])
        return param_distribution.choices[int(rng.integers(len(param_distribution.choices)))]


def _random(space, options: Mapping[str, Any], seed: int, primary):
    reject_unknown(options, [], "search.options")
    return optuna.samplers.RandomSampler(seed=seed)


def _evolution(space, options: Mapping[str, Any], seed: int, primary):
    reject_unknown(options, ["population", "sample_size", "mutation_rate", "crossover_prob", "selection",
                             "candidates", "pool"],
                   "search.options")
    return AgingEvolutionSampler(space, seed, primary, **options)


def _tpe(space, options: Mapping[str, Any], seed: int, primary):
    reject_unknown(options, ["n_startup_trials", "multivariate", "group"], "search.options")
    return optuna.samplers.TPESampler(seed=seed, **_constraint_kwargs(),
                                      **{"multivariate": True, **options})


def _nsga2(space, options: Mapping[str, Any], seed: int, primary):
    reject_unknown(options, ["population_size", "mutation_prob", "crossover_prob"], "search.options")
    return optuna.samplers.NSGAIISampler(seed=seed, **_constraint_kwargs(), **options)


CONTROLLERS.register("random", _random)
CONTROLLERS.register("evolution", _evolution)
CONTROLLERS.register("tpe", _tpe)
CONTROLLERS.register("nsga2", _nsga2)


def make_controller(name: str, space, options: Mapping[str, Any], seed: int, primary):
    factory = CONTROLLERS.get(name)
    try:
        return factory(space, options, seed, primary)
    except TypeError as exc:
        raise ValueError(f"search.options for controller {name!r}: {exc}") from None
