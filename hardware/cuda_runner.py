"""PyTorch on a CUDA device: CUDA-event timing, optional CUDA graphs and ``torch.compile``.

Timing uses CUDA events recorded on the runner's stream around ``iterations``
back-to-back forwards, so the number is device time per forward including
whatever the CPU cannot hide (launch overhead in eager mode).  With
``cuda_graphs: true`` the forward is captured once and replayed, which removes
per-kernel launch cost, as a latency-critical deployment would; comparing
the two modes shows how launch-bound a candidate is.

``torch.cuda`` is touched only when a runner is used, so this module imports on
CPU-only machines; without a device the runner raises :class:`BackendUnavailable`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hardware.base import Fingerprint, RunnerOptions, TimedRunner

#: accepted spellings of the measurement dtype -> torch attribute name
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


class BackendUnavailable(ValueError):
    """A runner's backend (CUDA device, TensorRT, an execution provider) is missing here.

    A ``ValueError`` so the CLI prints its message as one line instead of a traceback.
    """


def canonical_dtype(runner: str, dtype: str, allowed=tuple(DTYPES)) -> str:
    if dtype not in allowed:
        raise ValueError(f"runner {runner!r}: unknown dtype {dtype!r}; valid: {', '.join(allowed)}")
    return DTYPES.get(dtype, dtype)


def require_cuda(runner: str, index: int):
    """Return ``torch`` after checking that CUDA device ``index`` exists."""
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (CPU-only build)"
        raise BackendUnavailable(
            f"runner {runner!r} needs a CUDA device, but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build: {built})")
    if not 0 <= index < torch.cuda.device_count():
        raise BackendUnavailable(f"runner {runner!r}: no CUDA device {index} "
                                 f"({torch.cuda.device_count()} visible)")
    return torch


@dataclass(frozen=True)
class TorchCUDAOptions(RunnerOptions):
    cuda_graphs: bool = False
    compile: bool = False
    compile_mode: str = "default"
    channels_last: bool = False
    device_index: int = 0


class TorchCUDARunner(TimedRunner):
    """PyTorch inference on one CUDA device."""

    name = "torch_cuda"
    Options = TorchCUDAOptions
    max_prepared = 16

    def __init__(self, threads: int = 1, batch_size: int = 1, dtype: str = "float32",
                 cuda_graphs: bool = False, compile: bool = False, compile_mode: str = "default",
                 channels_last: bool = False, device_index: int = 0):
        super().__init__(threads, batch_size, canonical_dtype(self.name, dtype))
        self.cuda_graphs = bool(cuda_graphs)
        self.compile = bool(compile)
        self.compile_mode = str(compile_mode)
        self.channels_last = bool(channels_last)
        self.device_index = int(device_index)
        self._torch = None
        self._stream = None

    # lazily, so constructing a runner (e.g. while validating a recipe) needs no GPU
    def _cuda(self):
        if self._torch is None:
            torch = require_cuda(self.name, self.device_index)
            self._stream = torch.cuda.Stream(device=self.device_index)
            self._torch = torch
        return self._torch

    def fingerprint(self) -> Fingerprint:
        torch = self._cuda()
        props = torch.cuda.get_device_properties(self.device_index)
        extra = (("capability", f"{props.major}.{props.minor}"),
                 ("channels_last", self.channels_last),
                 ("compile", self.compile_mode if self.compile else False),
                 ("cuda_graphs", self.cuda_graphs),
                 ("cudnn", torch.backends.cudnn.version()))
        return Fingerprint(self.name, props.name, f"torch {torch.__version__} cuda {torch.version.cuda}",
                           self.threads, self.batch_size, self.dtype, extra)

    def prepare(self, model, example) -> dict[str, Any]:
        torch = self._cuda()
        device = torch.device("cuda", self.device_index)
        dtype = getattr(torch, self.dtype)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        model = model.eval().to(device=device, dtype=dtype, memory_format=fmt)
        static_input = example.to(device=device, dtype=dtype).contiguous(memory_format=fmt)
        forward = torch.compile(model, mode=self.compile_mode) if self.compile else model
        handle: dict[str, Any] = {"model": model, "forward": forward, "input": static_input, "graph": None}
        with torch.inference_mode(), torch.cuda.device(self.device_index):
            # warm-up on the side stream: cuDNN autotuning, compile, lazy allocations;
            # graph capture requires that these have already happened
            self._stream.wait_stream(torch.cuda.current_stream(self.device_index))
            with torch.cuda.stream(self._stream):
                for _ in range(3):
                    forward(static_input)
            self._stream.synchronize()
            if self.cuda_graphs:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self._stream):
                    handle["output"] = forward(static_input)
                handle["graph"] = graph
        return handle

    def time(self, handle: dict[str, Any], iterations: int) -> float:
        torch = self._cuda()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        graph, forward, static_input = handle["graph"], handle["forward"], handle["input"]
        with torch.inference_mode(), torch.cuda.device(self.device_index), torch.cuda.stream(self._stream):
            start.record(self._stream)
            if graph is not None:
                for _ in range(iterations):
                    graph.replay()
            else:
                for _ in range(iterations):
                    forward(static_input)
            end.record(self._stream)
        end.synchronize()
        return start.elapsed_time(end) / iterations

    def release(self, handle: dict[str, Any]) -> None:
        handle.clear()
        if self._torch is not None:
            self._torch.cuda.empty_cache()
