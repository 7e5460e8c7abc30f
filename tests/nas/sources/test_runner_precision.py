"""The ``runner`` source with a precision axis: int8 layers are measured on int8 kernels,
and a float latency never answers for an int8 arch (nor the other way round)."""
import numpy as np
import pytest

from hardware import make_runner
from hardware.protocol import Candidate, Protocol
from hardware.quantize import INT8_SCHEME
from hardware.store import MeasurementStore, space_key
from nas.sources import LATENCY_SOURCES, RunContext, make_source
from search_spaces import make_space

SPACE = {"resolutions": [48], "widths": [1.0], "depths": [2], "kernels": [3], "expansions": [4, 6],
         "num_classes": 10, "precisions": ["fp32", "int8"]}
FAST = {"runner": "onnxruntime", "threads": 1, "rounds": 3, "repeats": 1, "target_ms": 2.0, "anchors": 0}


@pytest.fixture
def ctx(tmp_path):
    with MeasurementStore(tmp_path / "m.db") as store:
        yield RunContext(make_space("mbv3", **SPACE), store, tmp_path, progress=False)


def test_the_store_keeps_int8_and_fp32_latencies_apart(ctx):
    space = ctx.space
    arch = space.float_arch(space.sample(np.random.default_rng(0)))
    int8 = space.with_precisions(arch, {u: "int8" for u in space.precision_units(arch)})
    source = make_source(FAST, LATENCY_SOURCES, ctx, "latency")
    (fp32_row,) = source.evaluate([arch])
    assert source.measured == [str(arch)]
    (int8_row,) = source.evaluate([int8])
    # the int8 request was measured, not answered from the float row
    assert str(int8) in source.measured and fp32_row["latency_ms"] != int8_row["latency_ms"]
    stored = ctx.store.get_many(source.key, space_key(space), [str(arch), str(int8)])
    assert set(stored) == {str(arch), str(int8)}
    assert stored[str(int8)]["latency_ms"] == int8_row["latency_ms"]
    # the scheme that made the int8 rows is part of their key; float-only spaces keep theirs
    assert source.fingerprint()["int8_scheme"] == INT8_SCHEME
    float_space = make_space("mbv3", **{k: v for k, v in SPACE.items() if k != "precisions"})
    float_ctx = RunContext(float_space, ctx.store, ctx.run_dir, progress=False)
    assert "int8_scheme" not in make_source(FAST, LATENCY_SOURCES, float_ctx, "latency").fingerprint()
    # a whole-network int8 runner is other measurement conditions: another key
    int8_runner = make_source({**FAST, "dtype": "int8"}, LATENCY_SOURCES, ctx, "latency")
    assert int8_runner.key != source.key
    assert ("int8", INT8_SCHEME) in int8_runner.runner.fingerprint().extra
    # per-tensor int8 weights are another scheme: another key and another scheme name
    per_tensor = make_source({**FAST, "int8_weights": "per_tensor"}, LATENCY_SOURCES, ctx, "latency")
    assert per_tensor.key != source.key and per_tensor.fingerprint()["int8_scheme"] != INT8_SCHEME
    assert "per-tensor" in per_tensor.fingerprint()["int8_scheme"]
    with pytest.raises(ValueError, match="int8_weights"):
        make_source({**FAST, "int8_weights": "per_row"}, LATENCY_SOURCES, ctx, "latency")


def test_runners_without_an_int8_path_refuse_int8_candidates_before_preparing():
    space = make_space("mbv3", **SPACE)
    arch = space.with_precisions(space.float_arch(space.sample(np.random.default_rng(1))), {"head": "int8"})
    built = []
    candidate = Candidate(str(arch), lambda: built.append(1) or (space.build(arch), space.example_input(arch)),
                          space.int8_modules(arch))
    with pytest.raises(ValueError, match="runner 'torch_cpu' has no int8 path"):
        make_runner("torch_cpu").measure_batch([candidate], Protocol(rounds=1), np.random.default_rng(0))
    assert built == []
    with pytest.raises(ValueError, match="float32 or int8"):
        make_runner("onnxruntime", dtype="float16")
