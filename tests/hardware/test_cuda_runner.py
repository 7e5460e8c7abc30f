"""``torch_cuda`` runner.  GPU tests carry the ``gpu`` marker and skip without CUDA."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hardware import make_runner
from hardware.cuda_runner import BackendUnavailable
from hardware.protocol import Candidate, Protocol, measure

HAS_CUDA = torch.cuda.is_available()
needs_gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")]
FAST = Protocol(rounds=3, repeats=2, target_ms=5.0, warmup=2)


def net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1, groups=width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def candidates(widths=(8, 256)):
    return [Candidate(f"w{w}", lambda w=w: (net(w), torch.randn(1, 3, 64, 64))) for w in widths]


def test_bad_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        make_runner("torch_cuda", dtype="int4")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message shown where CUDA is missing")
def test_without_cuda_the_runner_says_so():
    runner = make_runner("torch_cuda")  # constructing needs no GPU (recipes validate on CPU)
    with pytest.raises(BackendUnavailable, match="needs a CUDA device"):
        runner.fingerprint()


@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_measures_eager_and_cuda_graphs(graphs, dtype):
    runner = make_runner("torch_cuda", dtype=dtype, cuda_graphs=graphs)
    fp = runner.fingerprint()
    assert fp.device == torch.cuda.get_device_name(0)
    assert dict(fp.extra)["cuda_graphs"] is graphs and fp.dtype in ("float32", "float16", "bfloat16")
    got = measure(runner, candidates(), FAST, np.random.default_rng(0))
    assert set(got) == {"w8", "w256"} and all(m.latency_ms > 0 for m in got.values())


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_graph_replay_computes_the_same_output_as_eager():
    runner = make_runner("torch_cuda", cuda_graphs=True)
    model, example = net(16).eval(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(example)
    handle = runner.prepare(model, example)
    runner.time(handle, 3)
    torch.testing.assert_close(handle["output"].cpu(), expected, rtol=1e-3, atol=1e-3)
    runner.release(handle)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_compiled_model_is_measured():
    runner = make_runner("torch_cuda", compile=True, cuda_graphs=True)
    assert dict(runner.fingerprint().extra)["compile"] == "default"
    got = measure(runner, candidates((16,)), FAST, np.random.default_rng(0))
    assert got["w16"].latency_ms > 0
