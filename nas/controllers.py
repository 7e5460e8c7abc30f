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

from typing import Any, Callable, Mapping

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.registry import Registry
from nas.sources import reject_unknown

CONTROLLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("controller")

CONSTRAINTS_ATTR = "constraints"
ARCH_ATTR = "arch"


#: Optuna >= 5 reads per-trial constraints set with ``Trial.set_constraint``;
#: older releases need ``constraints_func`` passed to the sampler instead
NATIVE_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


def _constraint_kwargs() -> dict[str, Any]:
    return {} if NATIVE_CONSTRAINTS else {"constraints_func": constraints_func}


def record_constraints(trial: optuna.Trial, violations: Mapping[str, float]) -> None:
    """Store constraint values (feasible when <= 0) where every sampler can read them."""
    trial.set_user_attr(CONSTRAINTS_ATTR, list(violations.values()) or [0.0])
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


class AgingEvolutionSampler(optuna.samplers.BaseSampler):
    """Regularized (aging) evolution, Real et al. 2019, with a hard constraint.

    The population is the ``population`` most recent completed trials (older
    ones age out); a parent is the fittest *feasible* member of a random
    ``sample_size`` subset, and the child is ``space.mutate(parent)``.  Until
    the population is full, children are random samples.  Each trial draws
    from a generator seeded by ``(seed, trial.number)``, so a resumed search
    makes the same choices as an uninterrupted one given the same history.
    """

    def __init__(self, space, seed: int, primary: tuple[int, str], population: int = 16,
                 sample_size: int = 4, mutation_rate: float | None = None):
        if population < 2 or not 1 <= sample_size <= population:
            raise ValueError("evolution needs population >= 2 and 1 <= sample_size <= population")
        self.space = space
        self.seed = int(seed)
        self.objective_index, self.direction = primary
        self.population = int(population)
        self.sample_size = int(sample_size)
        self.mutation_rate = mutation_rate

    def infer_relative_search_space(self, study, trial) -> dict[str, Any]:
        return distributions(self.space)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, trial.number])
        history = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if len(history) < self.population:
            return self.space.encode(self.space.sample(rng))
        population = history[-self.population:]
        picks = [population[i] for i in rng.choice(len(population), self.sample_size, replace=False)]
        feasible = [t for t in picks if is_feasible(t)] or picks
        sign = 1.0 if self.direction == "maximize" else -1.0
        parent = max(feasible, key=lambda t: sign * t.values[self.objective_index])
        child = self.space.mutate(self.space.parse(parent.user_attrs[ARCH_ATTR]), rng, self.mutation_rate)
        return self.space.encode(child)

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        # only reached for parameters outside the space's decisions
        rng = np.random.default_rng([self.seed, trial.number, len(param_name)])
        return param_distribution.choices[int(rng.integers(len(param_distribution.choices)))]


def _random(space, options: Mapping[str, Any], seed: int, primary):
    reject_unknown(options, [], "search.options")
    return optuna.samplers.RandomSampler(seed=seed)


def _evolution(space, options: Mapping[str, Any], seed: int, primary):
    reject_unknown(options, ["population", "sample_size", "mutation_rate"], "search.options")
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
