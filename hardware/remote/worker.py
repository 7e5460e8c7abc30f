"""The measuring child process of ``serve-device``.

Started by :class:`hardware.remote.sandbox.Sandbox` as a fresh interpreter
(``python -c 'from hardware.remote.worker import main; main()'``) in an empty
scratch folder, it builds the runtime backend once, then serves jobs over a
pair of pipes until its input closes.  A job is a ``POST /measure`` body the
server has already bound-checked; the child validates every model
(:mod:`hardware.remote.validation`), and times them with
:func:`hardware.protocol.measure` exactly as a local runner would.

Limits: before each job the CPU-time limit (``RLIMIT_CPU``) is set to the
time used so far plus the request's budget, so a runaway job dies of
``SIGXCPU`` (what every job needs, validation's ``onnx`` included, is imported
before that, at start-up, so no job is charged for it); for the CPU runner the
address space (``RLIMIT_AS``) is capped at ``Limits.max_memory_mb``, so a
model that builds huge tensors gets an allocation failure instead of the
device's memory.  (GPU runtimes reserve large virtual ranges, so for them the
server watches the resident size instead.)  The serving process kills the
child past the wall-clock cap.  A child that leaves on its own (its input
closed, or its answer could not be written because the serving process is
gone) removes its scratch folder itself.

Frames on both pipes: 8-byte big-endian length, then the payload (the job
body going in, JSON coming out).  Answers are ``{"results": ...}`` or
``{"status": int, "reason": str, "log": str}``: ``reason`` goes to the client,
``log`` (a runtime's own message) only to the server's log.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import struct
import sys
import time
from typing import Any, Mapping

import numpy as np

from hardware.base import TimedRunner
from hardware.protocol import Candidate, measure
from hardware.remote.validation import preload, validate_onnx
from hardware.remote.wire import Limits, RequestError, decode_measure

FRAME = struct.Struct(">Q")
#: runners whose runtime works under an address-space limit
AS_LIMITED_RUNNERS = ("onnxruntime",)
SERVABLE = ("onnxruntime", "onnxruntime_gpu", "tensorrt")


def make_backend(name: str, options: Mapping[str, Any]):
    """A runner that can ``prepare_onnx(bytes, array)``; constructed without torch."""
    options = dict(options)
    if name == "onnxruntime":
        from hardware.cpu_runners import OnnxRuntimeCPURunner
        from hardware.onnx_io import ort_session

        class OrtCPUBackend(OnnxRuntimeCPURunner):
            def prepare_onnx(self, data: bytes, array: np.ndarray):
                session = ort_session(data, threads=self.threads)
                return session, {session.get_inputs()[0].name: array}

        cls = OrtCPUBackend
    elif name == "onnxruntime_gpu":
        from hardware.tensorrt_runner import OnnxRuntimeGPURunner as cls
    elif name == "tensorrt":
        from hardware.tensorrt_runner import TensorRTRunner as cls
    else:
        raise ValueError(f"serve-device: runner {name!r} cannot serve ONNX; valid: {', '.join(SERVABLE)}")
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"serve-device: bad options for runner {name!r}: {exc}") from None


class Deadline(Exception):
    """The request's wall-clock budget ran out between two timing samples."""


def _memory_words(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, MemoryError) or "alloc" in text or "out of memory" in text


class OnnxTimer(TimedRunner):
    """Adapts a backend to :func:`measure`: 'models' are ``(key, onnx bytes)`` pairs, and every
    prepare/time first checks the request's deadline.  A runtime error becomes a
    :class:`RequestError` in the server's words; the runtime's text goes to ``log``."""

    name = "serve-device"

    def __init__(self, backend, deadline: float, count: int, batch_size: int, memory_mb: int, log: list[str]):
        super().__init__(backend.threads, batch_size, backend.dtype)
        self.backend = backend
        self.deadline = deadline
        self.max_prepared = max(2, count)  # a request is one interleaved set
        self.memory_mb = memory_mb
        self.log = log

    def fingerprint(self):
        return self.backend.fingerprint()

    def _check_time(self):
        if time.monotonic() > self.deadline:
            raise Deadline()

    def _failed(self, key: str, exc: BaseException, stage: str) -> RequestError:
        self.log.append(f"model {key!r} {stage}: {type(exc).__name__}: {exc}")
        if _memory_words(exc):
            return RequestError(422, f"model {key!r} needs more memory than the server's limit of "
                                     f"{self.memory_mb} MB")
        if stage == "prepare":
            return RequestError(400, f"the runtime rejected model {key!r} (details are in the server's log)")
        return RequestError(422, f"the runtime failed while running model {key!r} (details are in the "
                                 f"server's log)")

    def prepare(self, model, example):
        key, data = model
        self._check_time()
        try:
            return key, self.backend.prepare_onnx(data, example)
        except Exception as exc:  # noqa: BLE001 - ORT's Fail/InvalidGraph/RuntimeException: the model's fault
            raise self._failed(key, exc, "prepare") from None

    def time(self, handle, iterations: int) -> float:
        key, inner = handle
        self._check_time()
        try:
            return self.backend.time(inner, iterations)
        except Exception as exc:  # noqa: BLE001
            raise self._failed(key, exc, "run") from None

    def release(self, handle) -> None:
        self.backend.release(handle[1])


def run_job(backend, body: bytes, limits: Limits, log: list[str]) -> dict[str, Any]:
    """Validate and measure one request body; the measurement dict or raises RequestError."""
    started = time.monotonic()
    protocol, seed, models = decode_measure(body, limits)
    # the same order of random draws as the former in-process server: one input per model, then the protocol
    rng = np.random.default_rng(seed)
    candidates = []
    for key, data, shape in models:
        dtype = validate_onnx(key, data, shape)
        # token ids are zeros: 0 exists in every vocabulary (cost does not depend on the ids), where
        # a random id could index past the embedding and fail the model for no fault of its own
        array = (np.zeros(shape, dtype=dtype) if dtype.kind == "i"
                 else rng.standard_normal(shape, dtype=np.float32).astype(dtype))
        candidates.append(Candidate(key, lambda key=key, data=data, array=array: ((key, data), array)))
    timer = OnnxTimer(backend, started + limits.max_measure_s, len(candidates), models[0][2][0],
                      limits.max_memory_mb, log)
    try:
        results = measure(timer, candidates, protocol, rng)
    except Deadline:
        raise RequestError(422, f"measurement exceeded the server's cap of {limits.max_measure_s:g} s; "
                                f"send fewer models or lower protocol rounds") from None
    return {k: {"latency_ms": m.latency_ms, "spread": m.spread, "round_medians": m.round_medians}
            for k, m in results.items()}


# --- process limits ---------------------------------------------------------------------------
def _cpu_used() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def set_cpu_budget(seconds: float) -> None:
    """Let this process use ``seconds`` more CPU time; past it the kernel sends SIGXCPU."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(_cpu_used() + seconds)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def set_address_space(megabytes: int) -> None:
    import resource

    limit = int(megabytes) << 20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _no_core_dumps() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass


# --- frames ------------------------------------------------------------------------------------
def read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``, or None at end of file."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> bytes | None:
    head = read_exact(fd, FRAME.size)
    if head is None:
        return None
    return read_exact(fd, FRAME.unpack(head)[0])


def write_frame(fd: int, payload: bytes) -> None:
    view = memoryview(FRAME.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def _send(fd: int, answer: Mapping[str, Any]) -> None:
    write_frame(fd, json.dumps(answer).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hwnas-device-worker")
    parser.add_argument("--runner", required=True)
    parser.add_argument("--options", required=True, help="runner options as JSON")
    parser.add_argument("--limits", required=True, help="Limits as JSON")
    parser.add_argument("--in-fd", type=int, required=True)
    parser.add_argument("--out-fd", type=int, required=True)
    parser.add_argument("--scratch", default=None,
                        help="the child's scratch folder, removed when it leaves (the serving process "
                             "removes it too, but cannot once it has been SIGKILLed)")
    args = parser.parse_args(argv)
    try:
        return _serve(args)
    finally:
        # the serving process may be gone (SIGKILLed: its input pipe closed, or the answer's
        # write failed with EPIPE), so the folder it made for this child is this child's to remove
        if args.scratch is not None:
            shutil.rmtree(args.scratch, ignore_errors=True)


def _serve(args: argparse.Namespace) -> int:
    _no_core_dumps()
    limits = Limits(**json.loads(args.limits))
    try:
        backend = make_backend(args.runner, json.loads(args.options))
        fingerprint = backend.fingerprint()
        preload()
    except Exception as exc:  # noqa: BLE001 - reported to the server, which refuses to start
        _send(args.out_fd, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 2
    address_space = args.runner in AS_LIMITED_RUNNERS
    if address_space:
        try:
            set_address_space(limits.max_memory_mb)
        except (ImportError, ValueError, OSError):  # no resource module, or a kernel that refuses it
            address_space = False
    cpu_budget = limits.cpu_seconds(backend.threads)
    try:
        set_cpu_budget(cpu_budget)
        cpu_limited = True
    except (ImportError, ValueError, OSError):
        cpu_limited = False
    _send(args.out_fd, {"ready": True, "fingerprint": fingerprint.to_dict(), "pid": os.getpid(),
                        "address_space_limited": address_space, "cpu_limited": cpu_limited,
                        "cpu_budget_s": cpu_budget})
    while True:
        body = read_frame(args.in_fd)
        if body is None:
            return 0
        log: list[str] = []
        started = time.monotonic()
        try:
            if cpu_limited:
                set_cpu_budget(cpu_budget)
            results = run_job(backend, body, limits, log)
            answer: dict[str, Any] = {"results": results}
        except RequestError as exc:
            answer = {"status": exc.status, "reason": exc.reason}
        except MemoryError:
            answer = {"status": 422, "reason": f"the request needs more memory than the server's limit "
                                               f"of {limits.max_memory_mb} MB"}
        except Exception as exc:  # noqa: BLE001 - the serving process logs it and answers 500
            log.append(f"{type(exc).__name__}: {exc}")
            answer = {"status": 500, "reason": "internal error while measuring (details are in the "
                                               "server's log)"}
        answer["log"] = "\n".join(log)
        answer["elapsed_s"] = time.monotonic() - started
        del body
        gc.collect()
        _send(args.out_fd, answer)


if __name__ == "__main__":
    sys.exit(main())
