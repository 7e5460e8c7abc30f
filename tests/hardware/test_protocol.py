import numpy as np
import pytest

from hardware import make_runner
from hardware.protocol import Candidate, Protocol, measure
from search_spaces import make_space


@pytest.fixture(scope="module")
def archs():
    space = make_space("mbv3", resolutions=[32, 64], widths=[0.5, 1.0], num_classes=10)
    rng = np.random.default_rng(0)
    picked = [space.sample(rng) for _ in range(3)]
    return space, picked


@pytest.mark.parametrize("runner_name", ["onnxruntime", "torch_cpu"])
def test_measures_every_candidate_with_round_statistics(archs, runner_name):
    space, picked = archs
    runner = make_runner(runner_name, threads=1)
    cands = [Candidate(str(a), lambda a=a: (space.build(a), space.example_input(a))) for a in picked]
    results = measure(runner, cands, Protocol(rounds=3, repeats=1, target_ms=2), np.random.default_rng(0))
    assert set(results) == {str(a) for a in picked}
    for m in results.values():
        assert m.latency_ms > 0 and len(m.round_medians) == 3 and m.spread >= 0
        assert m.latency_ms == pytest.approx(float(np.median(m.round_medians)))


def test_bigger_network_is_slower(archs):
    space, _ = archs
    small = space.parse("r32_w0.5:ir_k3_e3-ir_k3_e3:ir_k3_e3-ir_k3_e3:ir_k3_e3-ir_k3_e3:"
                        "ir_k3_e3-ir_k3_e3:ir_k3_e3-ir_k3_e3")
    big = space.parse("r64_w1:" + ":".join(["-".join(["ir_k7_e6"] * 4)] * 5))
    runner = make_runner("onnxruntime", threads=1)
    cands = [Candidate(str(a), lambda a=a: (space.build(a), space.example_input(a))) for a in (small, big)]
    res = measure(runner, cands, Protocol(rounds=3, repeats=2, target_ms=5), np.random.default_rng(0))
    assert res[str(big)].latency_ms > 2 * res[str(small)].latency_ms


def test_runner_options_are_validated():
    with pytest.raises(ValueError, match="threads"):
        make_runner("onnxruntime", threads=0)
    with pytest.raises(ValueError, match="bad options for runner 'onnxruntime'"):
        make_runner("onnxruntime", warp_speed=3)
    with pytest.raises(KeyError, match="valid names"):
        make_runner("abacus")


def test_fingerprint_names_the_conditions():
    fp = make_runner("onnxruntime", threads=2, batch_size=4).fingerprint()
    assert fp.threads == 2 and fp.batch_size == 4 and fp.runtime.startswith("onnxruntime")
    assert fp.key != make_runner("onnxruntime", threads=1, batch_size=4).fingerprint().key


class _DriftingRunner:
    """A runner whose clock slows down 3x after a while: stands in for load
    that changes between groups (timings are synthetic; the protocol is real)."""

    name = "drifting"
    max_prepared = 4

    def __init__(self):
        self.calls = 0

    def prepare(self, model, example):
        return model  # the "model" is its true cost in ms

    def time(self, handle, iterations):
        self.calls += 1
        return handle * (3.0 if self.calls > 12 else 1.0)  # group 1 = 12 calls

    def release(self, handle):
        pass


def test_groups_are_linked_by_an_anchor_so_drift_between_groups_cancels():
    costs = {f"a{i}": float(i + 1) for i in range(10)}
    cands = [Candidate(k, lambda v=v: (v, None)) for k, v in costs.items()]
    runner = _DriftingRunner()
    res = measure(runner, cands, Protocol(rounds=2, repeats=1, warmup=1), np.random.default_rng(0))
    assert set(res) == set(costs)
    ratios = [res[k].latency_ms / costs[k] for k in costs]
    # every estimate is on one scale despite the 3x slowdown part-way through
    assert max(ratios) / min(ratios) < 1.01
