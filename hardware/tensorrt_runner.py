"""GPU runners that consume the exported ONNX: TensorRT and ONNX Runtime's GPU providers.

Both runners time the network a deployment would ship: the ONNX file that
``hwnas export`` writes.  Each has two entry points:

* ``prepare(model, example)`` exports with ``hardware.onnx_io.export_onnx``
  (needs torch) and hands the bytes to
* ``prepare_onnx(onnx_bytes, input_array)``, which needs only the runtime,
  numpy and, for TensorRT, ``cuda-python``; ``hwnas serve-device`` uses this
  path so a Jetson or GPU server does not need torch to serve measurements.

TensorRT, cuda-python and onnxruntime-gpu are optional and imported lazily;
without them the runner raises :class:`BackendUnavailable` saying what to
install.  Precision: ``float16`` is exported as an fp16 ONNX (TensorRT 11 has
only strongly typed networks, so the graph itself must be fp16), and on
TensorRT 10 the FP16 builder flag is set as well.  ``int8`` uses implicit
quantization with a random-data calibrator (timing only: the engine's accuracy
is meaningless), which exists only up to TensorRT 10; on 11+ the runner says so.
A candidate whose arch runs some layers in int8 (a space's precision axis) is
quantized explicitly instead: those layers' nodes get Q/DQ pairs
(:func:`hardware.quantize.quantize_int8` with symmetric int8 activations, the
form TensorRT accepts; seeded synthetic calibration, as kernel speed does not
depend on the scales), and TensorRT builds int8 kernels exactly there, in a
strongly typed network where the version has them (10+).
"""
from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import numpy as np

from dataclasses import dataclass

from hardware.base import Fingerprint, RunnerOptions, TimedRunner
from hardware.cuda_runner import BackendUnavailable, canonical_dtype
from hardware.quantize import export_quantized, synthetic_calibration

TENSORRT_HINT = "pip install hwnas[tensorrt]  (installs tensorrt and cuda-python)"
ORT_GPU_HINT = ("pip install onnxruntime-gpu  (it replaces the CPU-only onnxruntime package; "
                "the TensorRT provider also needs TensorRT: pip install hwnas[tensorrt])")


def gpu_name(index: int = 0) -> str:
    """Accelerator name without importing torch (nvidia-smi, then the CUDA runtime)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader", "-i", str(index)],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        cudart = _cudart()
        props = _check(cudart, cudart.cudaGetDeviceProperties(index))
        name = props.name
        return (name.decode() if isinstance(name, bytes) else str(name)).strip("\x00 ")
    except (BackendUnavailable, RuntimeError):
        return f"cuda:{index} (name unknown)"


# --- CUDA runtime through cuda-python (thread-safe: the runtime API binds the primary context) ---
def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendUnavailable(f"runner 'tensorrt' needs cuda-python: {TENSORRT_HINT}") from None
    return cudart


def _check(cudart, result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        raise RuntimeError(f"CUDA runtime error {err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"runner 'tensorrt' needs TensorRT: {TENSORRT_HINT}") from None
    return trt


def _export_for(dtype: str, model, example, opset: int) -> tuple[bytes, np.ndarray]:
    """Export in the measurement dtype (fp16 as an fp16 graph) and return the input array."""
    from hardware.onnx_io import export_onnx

    if dtype == "float16":
        model, example = model.half(), example.half()
    return export_onnx(model, example, opset=opset), example.numpy()


@dataclass(frozen=True)
class TensorRTOptions(RunnerOptions):
    workspace_mb: int = 1024
    opset: int = 17
    device_index: int = 0
    optimization_level: int | None = None


class TensorRTRunner(TimedRunner):
    """Builds a TensorRT engine from the exported ONNX and times ``execute_async_v3``."""

    name = "tensorrt"
    Options = TensorRTOptions
    supports_int8 = True
    int8_activations = "s8_symmetric"
    # engines hold workspace and activations on the GPU; keep the interleaved set modest
    max_prepared = 8

    def __init__(self, threads: int = 1, batch_size: int = 1, dtype: str = "float32",
                 workspace_mb: int = 1024, opset: int = 17, device_index: int = 0,
                 optimization_level: int | None = None):
        dtype = canonical_dtype(self.name, dtype, ("float32", "fp32", "float16", "fp16", "int8"))
        super().__init__(threads, batch_size, dtype)
        self.workspace_mb = int(workspace_mb)
        self.opset = int(opset)
        self.device_index = int(device_index)
        self.optimization_level = None if optimization_level is None else int(optimization_level)
        self._trt = None
        self._runtime = None
        self._stream = None

    def _setup(self):
        if self._trt is None:
            trt = _tensorrt()
            cudart = _cudart()
            _check(cudart, cudart.cudaSetDevice(self.device_index))
            if self.dtype == "int8" and not hasattr(trt.BuilderFlag, "INT8"):
                raise BackendUnavailable(
                    f"runner 'tensorrt': dtype int8 needs implicit quantization, which TensorRT "
                    f"{trt.__version__} removed; quantize the ONNX with Q/DQ nodes instead")
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._stream = _check(cudart, cudart.cudaStreamCreate())
            self._cudart, self._trt = cudart, trt
        return self._trt, self._cudart

    def fingerprint(self) -> Fingerprint:
        trt, _ = self._setup()
        extra = (("opset", self.opset), ("optimization_level", self.optimization_level),
                 ("workspace_mb", self.workspace_mb))
        return Fingerprint(self.name, gpu_name(self.device_index), f"tensorrt {trt.__version__}",
                           self.threads, self.batch_size, self.dtype, extra)

    def prepare(self, model, example):
        data, array = _export_for(self.dtype, model, example, self.opset)
        return self.prepare_onnx(data, array)

    def prepare_int8(self, model, example, int8_modules):
        """An engine of the float32 export with ``int8_modules`` under Q/DQ pairs (explicit
        quantization; the rest in fp32, so a float16 runner refuses)."""
        if self.dtype == "int8":
            return self.prepare(model, example)
        if self.dtype == "float16":
            raise ValueError("runner 'tensorrt': int8 layers are timed beside fp32 ones; a candidate with int8 "
                             "layers needs dtype float32")
        array = example.numpy()
        data = export_quantized(model, example, synthetic_calibration(array), tuple(int8_modules),
                                activations="s8_symmetric", opset=self.opset)
        return self.prepare_onnx(data, array, explicit_int8=True)

    def _build_engine(self, data: bytes, explicit_int8: bool = False):
        trt, _ = self._setup()
        builder = trt.Builder(self._logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and trt.__version__.startswith("8."):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        # Q/DQ graphs build strongly typed where TensorRT can (10+: the recommended form; each
        # tensor keeps the graph's type, so no precision flag may be set); before that, weakly
        # typed with the INT8 flag
        strongly_typed = explicit_int8 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        if strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(data):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"TensorRT could not parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        if self.optimization_level is not None:
            config.builder_optimization_level = self.optimization_level
        if self.dtype in ("float16", "int8") and hasattr(trt.BuilderFlag, "FP16") and not strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
        if self.dtype == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            shape = tuple(network.get_input(0).shape)
            config.int8_calibrator = _random_calibrator(trt, self._cudart, network.get_input(0).name, shape)
        elif explicit_int8 and not strongly_typed:
            # Q/DQ scales are in the graph: no calibrator
            config.set_flag(trt.BuilderFlag.INT8)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT failed to build an engine (see the TensorRT log above)")
        engine = self._runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine it just built")
        return engine

    def prepare_onnx(self, data: bytes, array: np.ndarray, explicit_int8: bool = False) -> dict[str, Any]:
        trt, cudart = self._setup()
        engine = self._build_engine(data, explicit_int8)
        context = engine.create_execution_context()
        buffers = []
        try:
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                shape = tuple(engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise ValueError(f"tensor {name!r} has a dynamic shape {shape}; export with a fixed batch")
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                nbytes = int(np.prod(shape)) * dtype.itemsize
                pointer = _check(cudart, cudart.cudaMalloc(max(nbytes, 1)))
                buffers.append(pointer)
                context.set_tensor_address(name, int(pointer))
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    host = np.ascontiguousarray(array.astype(dtype, copy=False))
                    if host.nbytes != nbytes:
                        raise ValueError(f"input {name!r}: engine expects shape {shape}, got {array.shape}")
                    _check(cudart, cudart.cudaMemcpy(pointer, host.ctypes.data, nbytes,
                                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
        except Exception:
            for pointer in buffers:
                cudart.cudaFree(pointer)
            raise
        start = _check(cudart, cudart.cudaEventCreate())
        end = _check(cudart, cudart.cudaEventCreate())
        return {"engine": engine, "context": context, "buffers": buffers, "events": (start, end)}

    def time(self, handle: dict[str, Any], iterations: int) -> float:
        cudart = self._cudart
        context, (start, end) = handle["context"], handle["events"]
        stream = int(self._stream)
        _check(cudart, cudart.cudaEventRecord(start, self._stream))
        for _ in range(iterations):
            if not context.execute_async_v3(stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
        _check(cudart, cudart.cudaEventRecord(end, self._stream))
        _check(cudart, cudart.cudaEventSynchronize(end))
        # CUDA 12.8+ bindings add a _v2 with the same contract; older ones have only the first
        elapsed = getattr(cudart, "cudaEventElapsedTime", None) or cudart.cudaEventElapsedTime_v2
        return float(_check(cudart, elapsed(start, end))) / iterations

    def release(self, handle: dict[str, Any]) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None or not handle:
            return
        for event in handle.get("events", ()):
            cudart.cudaEventDestroy(event)
        # the context must go before the engine, and both before their memory
        handle.pop("context", None)
        handle.pop("engine", None)
        for pointer in handle.get("buffers", ()):
            cudart.cudaFree(pointer)
        handle.clear()


def _random_calibrator(trt, cudart, input_name: str, shape: tuple[int, ...], batches: int = 4, seed: int = 0):
    """Entropy calibrator over seeded random inputs: int8 *timing* needs ranges, not good ones."""

    class RandomCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.left = batches
            self.host = np.empty(shape, dtype=np.float32)
            self.device = _check(cudart, cudart.cudaMalloc(self.host.nbytes))

        def get_batch_size(self):
            return int(shape[0])

        def get_batch(self, names):
            if self.left <= 0:
                cudart.cudaFree(self.device)
                return None
            self.left -= 1
            self.host[...] = self.rng.standard_normal(shape, dtype=np.float32)
            _check(cudart, cudart.cudaMemcpy(self.device, self.host.ctypes.data, self.host.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self.device)]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            return None

    return RandomCalibrator()


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


@dataclass(frozen=True)
class OnnxRuntimeGPUOptions(RunnerOptions):
    provider: str = "cuda"
    cuda_graphs: bool = False
    opset: int = 17
    device_index: int = 0


class OnnxRuntimeGPURunner(TimedRunner):
    """ONNX Runtime with the CUDA or TensorRT execution provider, inputs/outputs bound on the GPU."""

    name = "onnxruntime_gpu"
    Options = OnnxRuntimeGPUOptions
    max_prepared = 8
    PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}

    def __init__(self, threads: int = 1, batch_size: int = 1, dtype: str = "float32",
                 provider: str = "cuda", cuda_graphs: bool = False, opset: int = 17, device_index: int = 0):
        dtype = canonical_dtype(self.name, dtype, ("float32", "fp32", "float16", "fp16"))
        super().__init__(threads, batch_size, dtype)
        if provider not in self.PROVIDERS:
            raise ValueError(f"runner 'onnxruntime_gpu': unknown provider {provider!r}; "
                             f"valid: {', '.join(self.PROVIDERS)}")
        if dtype == "float16" and provider != "tensorrt":
            raise ValueError("runner 'onnxruntime_gpu': dtype float16 needs provider: tensorrt "
                             "(the CUDA provider runs the graph's own precision)")
        self.provider = provider
        self.cuda_graphs = bool(cuda_graphs)
        self.opset = int(opset)
        self.device_index = int(device_index)

    def _ort(self):
        import onnxruntime as ort

        wanted = self.PROVIDERS[self.provider]
        if wanted not in ort.get_available_providers():
            raise BackendUnavailable(
                f"runner 'onnxruntime_gpu' with provider {self.provider!r} needs {wanted}, which this "
                f"onnxruntime {ort.__version__} lacks (available: {', '.join(ort.get_available_providers())}): "
                f"{ORT_GPU_HINT}")
        return ort

    def _providers(self) -> list:
        cuda = ("CUDAExecutionProvider", {"device_id": self.device_index,
                                          "enable_cuda_graph": "1" if self.cuda_graphs else "0"})
        if self.provider == "cuda":
            return [cuda]
        trt = ("TensorrtExecutionProvider", {"device_id": self.device_index,
                                             "trt_fp16_enable": self.dtype == "float16",
                                             "trt_cuda_graph_enable": self.cuda_graphs})
        # ops TensorRT rejects fall back to CUDA, never silently to the CPU
        return [trt, ("CUDAExecutionProvider", {"device_id": self.device_index})]

    def fingerprint(self) -> Fingerprint:
        ort = self._ort()
        extra = (("cuda_graphs", self.cuda_graphs), ("opset", self.opset), ("provider", self.provider))
        return Fingerprint(self.name, gpu_name(self.device_index), f"onnxruntime {ort.__version__}",
                           self.threads, self.batch_size, self.dtype, extra)

    def prepare(self, model, example):
        # the TensorRT provider lowers fp32 graphs itself when trt_fp16_enable is set
        data, array = _export_for("float32", model, example, self.opset)
        return self.prepare_onnx(data, array)

    def prepare_onnx(self, data: bytes, array: np.ndarray):
        from hardware.onnx_io import ort_session

        ort = self._ort()
        session = ort_session(data, threads=self.threads, providers=self._providers())
        wanted = self.PROVIDERS[self.provider]
        if wanted not in session.get_providers():
            raise BackendUnavailable(f"runner 'onnxruntime_gpu': onnxruntime could not load {wanted} "
                                     f"(CUDA/cuDNN/TensorRT libraries missing?); got {session.get_providers()}")
        binding = session.io_binding()
        inp = session.get_inputs()[0]
        x = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", self.device_index)
        binding.bind_ortvalue_input(inp.name, x)
        outputs = []
        for out in session.get_outputs():
            if not all(isinstance(d, int) for d in out.shape):
                raise ValueError(f"output {out.name!r} has a dynamic shape {out.shape}; export with a fixed batch")
            # CUDA graphs replay fixed addresses, so outputs are preallocated, not bound by device
            dtype = _ORT_TYPES.get(out.type)
            if dtype is None:
                raise ValueError(f"output {out.name!r} has unsupported type {out.type}")
            value = ort.OrtValue.ortvalue_from_shape_and_type(out.shape, dtype, "cuda", self.device_index)
            binding.bind_ortvalue_output(out.name, value)
            outputs.append(value)
        session.run_with_iobinding(binding)  # first run: allocations, graph capture
        return {"session": session, "binding": binding, "keep": (x, outputs)}

    def time(self, handle, iterations: int) -> float:
        session, binding = handle["session"], handle["binding"]
        # run_with_iobinding synchronizes the provider's stream, so wall time is device time
        start = time.perf_counter()
        for _ in range(iterations):
            session.run_with_iobinding(binding)
        return (time.perf_counter() - start) * 1e3 / iterations
