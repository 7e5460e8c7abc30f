"""CPU runners: PyTorch eager and ONNX Runtime (CPU execution provider)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from hardware.base import Fingerprint, RunnerOptions, TimedRunner, cpu_model
from hardware.quantize import check_weight_granularity, export_quantized, synthetic_calibration


@dataclass(frozen=True)
class OnnxRuntimeCPUOptions(RunnerOptions):
    opset: int = 17
    #: int8 weight scales: ``per_channel`` or ``per_tensor`` (a target whose int8 kernels
    #: take one scale per tensor)
    int8_weights: str = "per_channel"


class TorchCPURunner(TimedRunner):
    """PyTorch eager on the CPU under ``torch.inference_mode``."""

    name = "torch_cpu"

    def fingerprint(self) -> Fingerprint:
        import torch

        return Fingerprint(self.name, cpu_model(), f"torch {torch.__version__}", self.threads,
                           self.batch_size, self.dtype)

    def prepare(self, model, example):
        import torch

        dtype = getattr(torch, self.dtype)
        # token ids (language models) stay integers; only float inputs follow dtype
        return model.eval().to(dtype), (example.to(dtype) if example.is_floating_point() else example)

    def time(self, handle, iterations: int) -> float:
        import torch

        model, example = handle
        # thread count is process-global in torch; set it for every sample
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                start = time.perf_counter()
                for _ in range(iterations):
                    model(example)
                elapsed = time.perf_counter() - start
        finally:
            torch.set_num_threads(previous)
        return elapsed * 1e3 / iterations


class OnnxRuntimeCPURunner(TimedRunner):
    """Exports with ``torch.onnx`` and times an ONNX Runtime CPU session.

    ``dtype: int8`` quantizes every network before timing; with ``float32``,
    a candidate whose arch runs some layers in int8 (a space's precision axis)
    has exactly those quantized.  Both use :func:`hardware.quantize.int8_scheme` of
    ``int8_weights`` with seeded synthetic calibration: int8 kernel speed does not depend on the
    scales, so the accuracy source's real calibration is not needed here.
    """

    name = "onnxruntime"
    Options = OnnxRuntimeCPUOptions
    # sessions of mobile-sized nets take tens of MB; 32 keeps groups large
    max_prepared = 32
    supports_int8 = True
    DTYPES = ("float32", "int8")

    def __init__(self, threads: int = 1, batch_size: int = 1, dtype: str = "float32",
                 opset: int = 17, int8_weights: str = "per_channel"):
        if dtype not in self.DTYPES:
            raise ValueError(f"runner 'onnxruntime' (CPU) measures {' or '.join(self.DTYPES)}, not {dtype!r}")
        super().__init__(threads, batch_size, dtype)
        self.opset = int(opset)
        self.int8_weights = check_weight_granularity(int8_weights, "runner 'onnxruntime' option 'int8_weights'")

    def fingerprint(self) -> Fingerprint:
        import onnxruntime

        extra: tuple = (("opset", self.opset),)
        if self.dtype == "int8":
            extra += (("int8", self.int8_scheme()),)
        elif self.int8_weights != "per_channel":
            # int8 candidates of a float32 runner: the default keeps the identity rows were stored under
            extra += (("int8_weights", self.int8_weights),)
        return Fingerprint(self.name, cpu_model(), f"onnxruntime {onnxruntime.__version__}",
                           self.threads, self.batch_size, self.dtype, extra)

    def prepare(self, model, example):
        return self._session(model, example, None if self.dtype == "int8" else ())

    def prepare_int8(self, model, example, int8_modules):
        return self._session(model, example, None if self.dtype == "int8" else tuple(int8_modules))

    def _session(self, model, example, int8_modules):
        """``int8_modules``: ``()`` float, ``None`` the whole network in int8."""
        from hardware.onnx_io import export_onnx, ort_session

        if int8_modules == ():
            data = export_onnx(model, example, opset=self.opset)
        else:
            data = export_quantized(model, example, synthetic_calibration(example.numpy()), int8_modules,
                                    self.int8_weights, opset=self.opset)
        session = ort_session(data, threads=self.threads)
        feed = {session.get_inputs()[0].name: example.numpy()}
        return session, feed

    def time(self, handle, iterations: int) -> float:
        session, feed = handle
        start = time.perf_counter()
        for _ in range(iterations):
            session.run(None, feed)
        return (time.perf_counter() - start) * 1e3 / iterations
