import numpy as np
import optuna
import pytest

from nas.controllers import (CONSTRAINTS_ATTR, AgingEvolutionSampler, make_controller, record_constraints,
                             suggest_arch)
from search_spaces import make_space


def space():
    return make_space("mbv3", resolutions=[32], widths=[0.5], num_classes=10)


def run_study(sampler, s, n, fitness):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize"], sampler=sampler)
    for _ in range(n):
        trial = study.ask()
        arch = suggest_arch(trial, s)
        trial.set_user_attr("arch", str(arch))
        value, violation = fitness(arch)
        record_constraints(trial, {"latency": violation})
        study.tell(trial, value)
    return study


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
    assert feasible(study.trials[-20:]) > 2 * feasible(study.trials[:20])


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
