"""``tensorrt`` and ``onnxruntime_gpu`` runners.  Backend tests carry markers and skip cleanly."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from hardware import make_runner
from hardware.cuda_runner import BackendUnavailable
from hardware.protocol import Candidate, Protocol, measure

HAS_CUDA = torch.cuda.is_available()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _ort_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


HAS_ORT_CUDA = "CUDAExecutionProvider" in _ort_providers()
FAST = Protocol(rounds=3, repeats=2, target_ms=5.0, warmup=2)


def candidates(widths=(8, 128)):
    def net(w):
        return nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, 10))

    return [Candidate(f"w{w}", lambda w=w: (net(w), torch.randn(1, 3, 64, 64))) for w in widths]


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where TensorRT is missing")
def test_without_tensorrt_the_runner_says_what_to_install():
    runner = make_runner("tensorrt")
    with pytest.raises(BackendUnavailable, match=r"pip install hwnas\[tensorrt\]"):
        runner.fingerprint()


@pytest.mark.skipif(HAS_ORT_CUDA, reason="checks the message shown where onnxruntime-gpu is missing")
def test_without_onnxruntime_gpu_the_runner_says_what_to_install():
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime-gpu"):
        make_runner("onnxruntime_gpu").fingerprint()


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown provider 'rocm'"):
        make_runner("onnxruntime_gpu", provider="rocm")
    with pytest.raises(ValueError, match="float16 needs provider: tensorrt"):
        make_runner("onnxruntime_gpu", dtype="fp16")
    with pytest.raises(ValueError, match="unknown dtype 'bf16'"):
        make_runner("tensorrt", dtype="bf16")


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA), reason="needs TensorRT and a CUDA device")
def test_tensorrt_engine_is_built_and_timed(dtype):
    runner = make_runner("tensorrt", dtype=dtype)
    fp = runner.fingerprint()
    assert fp.runtime.startswith("tensorrt ") and fp.dtype in ("float32", "float16")
    got = measure(runner, candidates(), FAST, np.random.default_rng(0))
    assert set(got) == {"w8", "w128"} and all(m.latency_ms > 0 for m in got.values())


def test_a_float16_tensorrt_runner_refuses_int8_layers_before_building():
    # int8 layers are timed beside fp32 ones; refused before TensorRT is even imported
    runner = make_runner("tensorrt", dtype="fp16")
    assert runner.supports_int8
    model, example = candidates()[0].build()
    with pytest.raises(ValueError, match="needs dtype float32"):
        runner.prepare_int8(model, example, ("2",))


@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA), reason="needs TensorRT and a CUDA device")
def test_tensorrt_times_layers_quantized_by_q_dq_nodes():
    # the second convolution and the classifier in int8 (explicit quantization), the first in fp32
    mixed = [Candidate(c.key + "_int8", c.build, ("2", "5")) for c in candidates()]
    runner = make_runner("tensorrt")
    assert runner.int8_scheme().startswith("onnxruntime-qdq-s8s8-symmetric")
    got = measure(runner, candidates() + mixed, FAST, np.random.default_rng(0))
    assert set(got) == {"w8", "w128", "w8_int8", "w128_int8"} and all(m.latency_ms > 0 for m in got.values())


@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA), reason="needs TensorRT and a CUDA device")
def test_tensorrt_rejects_an_unparsable_model():
    runner = make_runner("tensorrt")
    with pytest.raises(ValueError, match="could not parse"):
        runner.prepare_onnx(b"not an onnx model", np.zeros((1, 3, 8, 8), np.float32))


@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_ORT_CUDA, reason="needs onnxruntime-gpu with a CUDA device")
def test_onnxruntime_cuda_provider_is_timed(graphs):
    runner = make_runner("onnxruntime_gpu", provider="cuda", cuda_graphs=graphs)
    assert dict(runner.fingerprint().extra)["provider"] == "cuda"
    got = measure(runner, candidates(), FAST, np.random.default_rng(0))
    assert all(m.latency_ms > 0 for m in got.values())
