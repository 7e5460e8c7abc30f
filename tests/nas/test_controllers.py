import numpy as np
import optuna
import pytest

from optuna.trial import create_trial

from nas.controllers import (ARCH_ATTR, CONSTRAINTS_ATTR, AgingEvolutionSampler, GPSurrogate, crowding_distances,
                             expected_hypervolume_improvement, make_controller, pareto_ranks, record_constraints,
                             screen, selection_keys, suggest_arch)
from search_spaces import SPACES, make_space
from search_spaces.nb201 import NB201Space


def space():
    return make_space("mbv3", resolutions=[32], widths=[0.5], num_classes=10)


def drive(study, s, n, fitness, objectives=1):
    """Ask/tell ``n`` trials as the search loop does: values ``fitness(arch)[:objectives]``,
    the last element of ``fitness(arch)`` recorded as a constraint value."""
    for _ in range(n):
        trial = study.ask()
        arch = suggest_arch(trial, s)
        trial.set_user_attr("arch", str(arch))
        values = fitness(arch)
        record_constraints(trial, {"latency": values[-1]})
        study.tell(trial, [float(v) for v in values[:objectives]])
    return study


def run_study(sampler, s, n, fitness):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return drive(optuna.create_study(directions=["maximize"], sampler=sampler), s, n, fitness)


def toy_fitness(arch):
    # reward big kernels; the "latency" constraint allows at most 2 layers of expansion 6
    kernels = sum(layer.kernel for stage in arch.stages for layer in stage)
    wide = sum(layer.expand == 6 for stage in arch.stages for layer in stage)
    return float(kernels), float(wide - 2)


def test_evolution_improves_and_respects_constraint():
    s = space()
    sampler = AgingEvolutionSampler(s, seed=0, primary=(0, "maximize"), population=10, sample_size=3)
    study = run_study(sampler, s, 80, toy_fitness)
    values = [t.value for t in study.trials]
    early, late = np.mean(values[:10]), np.mean(values[-20:])
    assert late > early
    def feasible(trials):
        return sum(t.user_attrs[CONSTRAINTS_ATTR][0] <= 0 for t in trials)

    # parents are feasible, so children mostly stay under the constraint
    assert feasible(study.trials[-20:]) > feasible(study.trials[:20])
    assert feasible(study.trials[-20:]) >= 18


def test_evolution_is_reproducible_from_seed():
    s = space()
    runs = []
    for _ in range(2):
        sampler = AgingEvolutionSampler(s, seed=3, primary=(0, "maximize"), population=5, sample_size=2)
        runs.append([t.user_attrs["arch"] for t in run_study(sampler, s, 15, toy_fitness).trials])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", ["random", "evolution", "tpe", "nsga2"])
def test_every_controller_proposes_valid_archs(name):
    s = space()
    sampler = make_controller(name, s, {}, seed=0, primary=(0, "maximize"))
    study = run_study(sampler, s, 6, toy_fitness)
    assert all(s.contains(s.parse(t.user_attrs["arch"])) for t in study.trials)


def test_unknown_controller_option_is_named():
    with pytest.raises(ValueError, match="populaton"):
        make_controller("evolution", space(), {"populaton": 4}, 0, (0, "maximize"))


# --- multi-objective, constraint-aware evolution ---------------------------------------


def frozen(number, values, violation=0.0, arch="a"):
    t = create_trial(values=values, user_attrs={CONSTRAINTS_ATTR: [violation], ARCH_ATTR: arch},
                     params={}, distributions={})
    t.number = number
    return t


def test_pareto_ranks_and_crowding():
    # maximise both: (3,1) and (1,3) and (2,2) are non-dominated, (1,1) is dominated by all
    points = [[3, 1], [1, 1], [1, 3], [2, 2], [0.5, 0.5]]
    assert pareto_ranks(points) == [0, 1, 0, 0, 2]
    crowd = crowding_distances(points, pareto_ranks(points))
    assert crowd[0] == crowd[2] == float("inf") and 0 < crowd[3] < float("inf")


def test_parent_selection_prefers_feasible_non_dominated_parents():
    # (accuracy max, latency min): a and d on the front, b dominated, c better but infeasible
    trials = [frozen(0, [90, 5]), frozen(1, [80, 6]), frozen(2, [99, 1], violation=0.5), frozen(3, [70, 2]),
              frozen(4, [99, 1], violation=2.0)]
    keys = selection_keys(trials, [1.0, -1.0])
    order = sorted(range(len(trials)), key=lambda i: keys[i])
    assert set(order[:2]) == {0, 3} and order[2] == 1 and order[3:] == [2, 4]
    # single objective (accuracy under the constraint): rank by accuracy alone
    keys = selection_keys(trials, [1.0, -1.0], objectives=[0])
    assert sorted(range(len(trials)), key=lambda i: keys[i])[:3] == [0, 1, 3]


def _hv(points, ref):
    pts = sorted(points, key=lambda p: (p[1], -p[0]))
    area, best = 0.0, ref[0]
    front = []
    for a, l in pts:
        if a > best and l < ref[1]:
            front.append((a, l))
            best = a
    for i, (a, l) in enumerate(front):
        nxt = front[i + 1][1] if i + 1 < len(front) else ref[1]
        area += (nxt - l) * (a - ref[0])
    return area


SCORE = {"none": 0, "skip_connect": 1, "avg_pool_3x3": 0.5, "nor_conv_1x1": 2, "nor_conv_3x3": 3}
COST = {"none": 0, "skip_connect": 0.2, "avg_pool_3x3": 1, "nor_conv_1x1": 1.5, "nor_conv_3x3": 4}


def nb201_toy(arch):
    """A two-objective NAS-Bench-201 stand-in: 'accuracy' from the ops (later edges weigh
    more, plus a fixed pseudo-random term), 'latency' additive in the ops."""
    import hashlib

    acc = sum(SCORE[op] * (1 + i / 3) for i, op in enumerate(arch.ops))
    acc += int(hashlib.sha1(str(arch).encode()).hexdigest()[:2], 16) / 128
    return acc, sum(COST[op] for op in arch.ops)


def test_multi_objective_evolution_covers_the_front_better_than_random():
    s = make_space("nb201")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in (0, 1):
        hv = {}
        for name in ("random", "evolution"):
            study = optuna.create_study(directions=["maximize", "minimize"],
                                        sampler=make_controller(name, s, {}, seed, (0, "maximize")))
            drive(study, s, 60, lambda a: (*nb201_toy(a), 0.0), 2)
            hv[name] = _hv([tuple(t.values) for t in study.trials], (0.0, 25.0))
            if name == "evolution":  # never proposes a repeat
                assert len({t.user_attrs["arch"] for t in study.trials}) == 60
        assert hv["evolution"] > 1.05 * hv["random"]


def test_resumed_search_makes_the_same_proposals():
    s = space()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def sampler():
        return make_controller("evolution", s, {"population": 6}, 5, (0, "maximize"))

    whole = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler())
    drive(whole, s, 24, toy_fitness, 2)
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"],
                                sampler=sampler())
    drive(first, s, 11, toy_fitness, 2)
    # a new process: a fresh sampler object, the study loaded from storage
    resumed = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"],
                                  sampler=sampler(), load_if_exists=True)
    drive(resumed, s, 13, toy_fitness, 2)
    assert [t.user_attrs["arch"] for t in resumed.trials] == [t.user_attrs["arch"] for t in whole.trials]


@pytest.mark.parametrize("name", SPACES.names())
def test_crossover_and_mutation_produce_only_legal_architectures(name):
    s = SPACES.get(name)()
    rng = np.random.default_rng(0)
    for _ in range(10):
        a, b = s.sample(rng), s.sample(rng)
        child = s.crossover(a, b, rng)
        assert s.contains(child) and s.parse(str(child)) == child
        assert s.contains(s.mutate(child, rng, AgingEvolutionSampler.default_mutation_rate(s)))


def test_population_and_mutation_rate_adapt_to_the_space():
    small, large = make_space("nb201"), make_space("fbnet")
    assert AgingEvolutionSampler.default_population(small) < AgingEvolutionSampler.default_population(large)
    # per child: ~no extra change besides the forced one in 6 edges, ~2 in FBNet's 22 layers
    assert AgingEvolutionSampler.default_mutation_rate(small) * 6 < 0.2
    assert 1.5 < AgingEvolutionSampler.default_mutation_rate(large) * 22 < 2.5


def test_candidates_predicted_infeasible_are_not_proposed():
    # latency is additive in the expansions; the bound admits few archs: with the constraint
    # surrogate, far more children are feasible than with plain evolution (one candidate)
    s = space()

    def fitness(arch):
        layers = [layer for stage in arch.stages for layer in stage]
        return float(sum(layer.kernel for layer in layers)), float(sum(layer.expand for layer in layers) - 50)

    feasible = {}
    for candidates in (1, 8):
        sampler = AgingEvolutionSampler(s, seed=1, primary=(0, "maximize"), population=10, candidates=candidates)
        study = run_study(sampler, s, 50, fitness)
        feasible[candidates] = sum(t.user_attrs[CONSTRAINTS_ATTR][0] <= 0 for t in study.trials[10:])
    assert feasible[8] > feasible[1]


@pytest.mark.parametrize("options, message", [
    ({"selection": "best"}, "selection must be 'pareto' or 'primary'"),
    ({"candidates": 0}, "candidates must be an integer >= 1"),
    ({"pool": 1}, "pool must be an integer >= 2"),
    ({"crossover_prob": 1.5}, r"crossover_prob must be in \[0, 1\]"),
    ({"population": 4, "sample_size": 5}, "population >= 2"),
    ({"mutaton_rate": 0.1}, r"unknown key\(s\) \['mutaton_rate'\]"),
])
def test_evolution_options_are_validated(options, message):
    with pytest.raises(ValueError, match=message):
        make_controller("evolution", space(), options, 0, (0, "maximize"))


def test_screen_keeps_feasible_candidates_that_may_extend_the_front():
    s = make_space("nb201")
    rng = np.random.default_rng(0)
    archs = [s.sample(rng) for _ in range(40)]
    # 'accuracy' is the number of conv edges (additive: the ridge surrogate fits it exactly)
    def acc(a):
        return float(sum(op.startswith("nor_conv") for op in a.ops))

    def lat(a):
        return float(sum(op != "none" for op in a.ops)) + 0.1 * acc(a)

    history = [create_trial(values=[acc(a), lat(a)], params={}, distributions={},
                            user_attrs={ARCH_ATTR: str(a), "accuracy": acc(a), "latency_ms": lat(a),
                                        CONSTRAINTS_ATTR: [0.0]}) for a in archs[:30]]
    fresh = archs[30:]
    known = [{"latency_ms": lat(a)} for a in fresh]
    violations = [max(0.0, lat(a) - 4.0) for a in fresh]
    keep = screen(s, fresh, known, violations, history, ["accuracy", "latency_ms"], ["maximize", "minimize"], 3)
    assert len(keep) == 3
    feasible = [i for i, v in enumerate(violations) if v == 0]
    assert set(keep) <= set(feasible) or len(feasible) < 3
    # a dominated candidate (no better accuracy at no lower latency than a front point) ranks last
    order = screen(s, fresh, known, [0.0] * len(fresh), history, ["accuracy", "latency_ms"],
                   ["maximize", "minimize"], len(fresh))
    front = [(acc(a), lat(a)) for a in archs[:30]]
    dominated = [i for i, a in enumerate(fresh)
                 if any(fa >= acc(a) + 1 and fl <= lat(a) - 1 for fa, fl in front)]
    promising = [i for i in range(len(fresh)) if i not in dominated]
    if dominated and promising:
        assert max(order.index(i) for i in promising) < min(order.index(i) for i in dominated)


def test_gp_surrogate_ranks_unseen_cells_and_knows_where_it_has_not_looked():
    s = make_space("nb201")
    rng = np.random.default_rng(0)
    texts = sorted({str(s.sample(rng)) for _ in range(120)})

    def truth(text):  # accuracy-like: live 3x3 convolutions help most, position matters a little
        arch = s.parse(text)
        live = [op for op, on in zip(arch.ops, arch.live_edges()) if on]
        return 3.0 * live.count("nor_conv_3x3") + 1.0 * live.count("nor_conv_1x1") + 0.2 * arch.live_edges()[3]

    seen, unseen = texts[:80], texts[80:]
    y = np.array([truth(t) for t in seen])
    no_trend = np.zeros((len(seen), 0)), np.zeros((len(unseen), 0))
    gp = GPSurrogate(s)
    mean, sd = gp.fit_predict(seen, no_trend[0], y, unseen, no_trend[1])
    assert np.corrcoef(mean, [truth(t) for t in unseen])[0, 1] > 0.7  # measured 0.79
    # it models the normal scores of the targets: a long tail of bad values sets no scale
    scores = gp.scores(y)
    assert np.array_equal(np.argsort(scores, kind="stable"), np.argsort(y, kind="stable"))
    tail = y.copy()
    tail[0] = y.min() - 1000.0  # a chance-level outlier: only its own score moves
    moved = gp.scores(tail)
    assert np.allclose(np.delete(moved, 0), np.delete(gp.scores(np.where(np.arange(len(y)) == 0, y.min() - 1, y)), 0))
    at_data = gp.fit_predict(seen, no_trend[0], y, seen[:20], np.zeros((20, 0)))
    assert np.allclose(at_data[0], scores[:20], atol=0.3) and at_data[1].mean() < sd.mean()
    # the trend carries a cheap metric beyond the data: cost 10x any seen one predicts more
    cost = y[:, None] + 1.0
    far = gp.fit_predict(seen, np.log(cost), y, unseen[:1], np.log([[10.0 * cost.max()]]))[0]
    assert far[0] > scores.max()


def test_gp_surrogate_trend_reads_the_space_live_macs():
    """NAS-Bench-201 under raspi4's tight latency budget: the best cell is the one live 3x3
    convolution, more compute than any cell evaluated; only the space's live MACs tell."""
    s = make_space("nb201")
    rng = np.random.default_rng(0)
    seen = sorted({str(a) for a in (s.sample(rng) for _ in range(200)) if "nor_conv_3x3" not in str(a)})[:60]
    y = np.array([np.log(s.live_macs(s.parse(t))) for t in seen])  # accuracy rises with live compute
    best = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"
    assert s.live_macs(s.parse(best)) > max(s.live_macs(s.parse(t)) for t in seen)
    no_trend = np.zeros((len(seen), 0)), np.zeros((1, 0))
    mean, _ = GPSurrogate(s).fit_predict(seen, no_trend[0], y, [best], no_trend[1])
    assert mean[0] > GPSurrogate.scores(y).max()

    class Uncounted(NB201Space):  # a space that cannot count it: no trend, the mean stays inside
        def live_macs(self, arch):
            return None

    u = Uncounted()
    assert GPSurrogate(u).size_trend(seen).shape == (len(seen), 0)
    mean, _ = GPSurrogate(u).fit_predict(seen, no_trend[0], y, [best], no_trend[1])
    assert mean[0] < GPSurrogate.scores(y).max()

    class Partly(NB201Space):  # counted for some archs only: the trend goes without it for all
        def live_macs(self, arch):
            return None if "nor_conv_3x3" in str(arch) else super().live_macs(arch)

    partly, _ = GPSurrogate(Partly()).fit_predict(seen, no_trend[0], y, [best], no_trend[1])
    assert partly[0] == pytest.approx(mean[0])


def test_expected_hypervolume_improvement_matches_monte_carlo():
    front = np.array([[1.0, 0.0], [2.0, 1.0], [4.0, 1.5]])  # (cost, value): cost minimised
    ref = (5.0, -1.0)
    cost = np.array([0.5, 1.5, 3.0, 4.5, 6.0])
    mean = np.array([-0.5, 1.2, 1.0, 2.0, 3.0])
    sd = np.array([0.3, 0.5, 1.0, 0.2, 1.0])
    exact = expected_hypervolume_improvement(cost, mean, sd, front, ref)
    values = np.random.default_rng(0).normal(mean, sd, size=(200_000, len(cost)))
    # improvement of one point: area between it and the staircase, up to the reference cost
    xs = np.linspace(0.0, ref[0], 5001)[:-1] + ref[0] / 10000
    level = np.array([max([ref[1]] + [v for c, v in front if c <= x]) for x in xs])
    width = ref[0] / 5000
    mc = [np.mean(np.maximum(0.0, values[:, [i]] - level[None, xs >= cost[i]]).sum(1) * width)
          for i in range(len(cost))]
    assert np.allclose(exact, mc, rtol=0.02, atol=1e-3)
    assert exact[-1] == 0.0  # beyond the reference cost: nothing to gain
    # a sure point on the front adds nothing; one above it adds the step's area
    on = expected_hypervolume_improvement(np.array([2.0]), np.array([1.0]), np.array([1e-9]), front, ref)
    above = expected_hypervolume_improvement(np.array([2.0]), np.array([1.5]), np.array([1e-9]), front, ref)
    assert on[0] == pytest.approx(0.0, abs=1e-9) and above[0] == pytest.approx(0.5 * 2.0)


def test_screening_evolution_proposes_only_feasible_unseen_archs():
    s = make_space("nb201")
    cost = {"none": 0.0, "skip_connect": 0.1, "avg_pool_3x3": 0.5, "nor_conv_1x1": 1.0, "nor_conv_3x3": 3.0}
    latency = lambda arch: 1.0 + sum(cost[op] for op in arch.ops)  # noqa: E731
    calls = []

    def evaluate(archs):
        calls.append(len(archs))
        return [{"latency_ms": latency(a)} for a in archs]

    sampler = AgingEvolutionSampler(s, seed=0, primary=(0, "maximize"), population=8, pool=64)
    assert sampler.screen_with(evaluate, ["latency_ms"], {"latency_ms": 6.0}, ["accuracy"])
    study = optuna.create_study(directions=["maximize"], sampler=sampler)
    for _ in range(40):
        trial = study.ask()
        arch = suggest_arch(trial, s)
        trial.set_user_attr(ARCH_ATTR, str(arch))
        trial.set_user_attr("latency_ms", latency(arch))
        study.tell(trial, sum(op.startswith("nor_conv") for op in arch.ops) + 0.01 * trial.number)
    archs = [t.user_attrs[ARCH_ATTR] for t in study.trials]
    assert len(set(archs)) == 40  # never a repeat
    assert all(latency(s.parse(a)) <= 6.0 for a in archs)
    assert sampler.cheap_evaluations == sum(calls) > 40 * 8
    # one expensive and one cheap objective: it screens by expected hypervolume improvement;
    # other sets of objectives without bounds: it leaves screening to the search loop
    assert AgingEvolutionSampler(s, 0, (0, "maximize")).screen_with(evaluate, ["latency_ms"], {},
                                                                    ["accuracy", "latency_ms"])
    for objectives in (["accuracy", "latency_ms", "macs"], ["accuracy", "params"]):
        other = AgingEvolutionSampler(s, seed=0, primary=(0, "maximize"))
        assert not other.screen_with(evaluate, ["latency_ms"], {}, objectives)
        assert other._cheap is None
