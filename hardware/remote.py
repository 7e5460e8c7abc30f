"""Measure on another machine: ``hwnas serve-device`` and the ``remote`` runner.

The device (a Jetson, a Raspberry Pi, a GPU server) runs :class:`DeviceServer`,
which needs only the ONNX runtime it times with, ``onnx`` and numpy: this
module never imports torch on the server path.  The search machine uses
:class:`RemoteRunner`, which exports each candidate to ONNX and sends batches
of them; the device runs the same interleaved-rounds protocol
(:func:`hardware.protocol.measure`) on the batch, so timing noise is handled
exactly as for local runners, and returns latency statistics together with its
fingerprint.  Several servers of one device kind form a measurement farm: the
client spreads batches across them and refuses servers whose fingerprints
differ.

Wire format (HTTP/1.0, JSON answers)::

    GET  /info?batch_size=N   -> {"fingerprint": {...}, "fingerprint_key": "...", "limits": {...}, ...}
    POST /measure             body: uint32 big-endian header length, JSON header, model bytes
         header = {"protocol": {rounds, repeats, ...}, "seed": int,
                   "models": [{"key": str, "size": bytes, "input_shape": [b, c, h, w]}, ...]}
                              -> {"results": {key: {"latency_ms", "spread", "round_medians"}},
                                  "fingerprint": {...}, "fingerprint_key": "...", "elapsed_s": ...}

Security: every request carries ``Authorization: Bearer <token>`` (compared in
constant time; missing -> 401, wrong -> 403).  Only ONNX is accepted: each model
is parsed as an ONNX protobuf and passed through ``onnx.checker``; models that
reference external data files (a way to make the server read its own disk) are
refused; nothing is ever unpickled or executed as code.  Request size (413),
model count and input size are capped, protocol options are bounded, and a
measurement that outlives the time cap is abandoned (422).  One lock makes the
device time one request at a time, so concurrent clients queue (503 after the
wait cap) instead of disturbing each other's timings.  Every bad request gets a
4xx answer with a reason and the server keeps serving.  The token travels in
clear over plain HTTP: use TLS (``--certfile/--keyfile``) or an SSH tunnel off
a trusted network.
"""
from __future__ import annotations

import hmac
import json
import os
import queue
import secrets
import ssl
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hardware.base import Fingerprint, Runner
from hardware.protocol import Candidate, Measurement, Protocol, measure

TOKEN_ENV = "HWNAS_DEVICE_TOKEN"
WIRE_VERSION = 1
_HEADER = struct.Struct(">I")
#: ONNX TensorProto element types the server accepts as network input
_INPUT_DTYPES = {1: np.float32, 10: np.float16}
_EXPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the device."""

    max_request_bytes: int = 256 << 20
    max_models: int = 16
    max_input_elements: int = 64 << 20
    max_measure_s: float = 600.0
    #: how long a request waits for the device lock before a 503
    max_wait_s: float = 900.0
    #: request bodies held in memory at once (each up to max_request_bytes); more get a 503
    max_pending: int = 4
    max_rounds: int = 50
    max_repeats: int = 20
    max_warmup: int = 20
    max_target_ms: float = 1000.0
    max_iterations: int = 10000

    def __post_init__(self):
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"serve-device limit {f.name} must be > 0")


class RequestError(Exception):
    """A bad request: becomes an HTTP 4xx answer whose body names the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RemoteError(ValueError):
    """The device answered with an error (or could not be reached)."""


# --------------------------------------------------------------------------------------
# device side
# --------------------------------------------------------------------------------------
def _make_backend(name: str, options: Mapping[str, Any]):
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
        raise ValueError(f"serve-device: runner {name!r} cannot serve ONNX; "
                         f"valid: onnxruntime, onnxruntime_gpu, tensorrt")
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"serve-device: bad options for runner {name!r}: {exc}") from None


def _tensors(graph):
    """Every TensorProto of a graph, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def validate_onnx(key: str, data: bytes, input_shape: Sequence[int]) -> np.dtype:
    """Check ``data`` is a self-contained ONNX model whose one input has ``input_shape``.

    Returns the input's numpy dtype; raises :class:`RequestError` (400) naming the model."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise RequestError(400, f"model {key!r} is not an ONNX model: {exc}") from None
    if not model.graph.node:
        raise RequestError(400, f"model {key!r} is not an ONNX model: it has no graph nodes")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RequestError(400, f"model {key!r} failed onnx.checker: {first}") from None
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise RequestError(400, f"model {key!r} references external data files; "
                                    f"send a self-contained model")
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise RequestError(400, f"model {key!r} must have exactly one input, has {len(inputs)}")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type not in _INPUT_DTYPES:
        raise RequestError(400, f"model {key!r}: input element type {tensor_type.elem_type} "
                                f"is not float32 or float16")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if len(dims) != len(input_shape) or any(d is not None and d != s for d, s in zip(dims, input_shape)):
        raise RequestError(400, f"model {key!r}: input shape {list(input_shape)} does not match "
                                f"the model's {['?' if d is None else d for d in dims]}")
    return np.dtype(_INPUT_DTYPES[tensor_type.elem_type])


class _Deadline(Exception):
    pass


class _OnnxTimer(Runner):
    """Adapts a backend to :func:`measure`: 'models' are ``(key, onnx bytes)`` pairs, and
    every prepare/time checks the request's deadline."""

    name = "serve-device"

    def __init__(self, backend, deadline: float, count: int):
        self.backend = backend
        self.deadline = deadline
        self.max_prepared = count  # a request is one interleaved set

    def fingerprint(self) -> Fingerprint:
        return self.backend.fingerprint()

    def _check_time(self):
        if time.monotonic() > self.deadline:
            raise _Deadline()

    def prepare(self, model, example):
        key, data = model
        self._check_time()
        try:
            return self.backend.prepare_onnx(data, example)
        except (ValueError, RuntimeError, TypeError) as exc:
            # ONNX Runtime raises its own exception types; all are the model's fault here
            raise RequestError(400, f"the runtime rejected model {key!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - ORT's Fail/InvalidGraph are not ValueErrors
            if type(exc).__module__.startswith("onnxruntime"):
                raise RequestError(400, f"the runtime rejected model {key!r}: {exc}") from None
            raise

    def time(self, handle, iterations: int) -> float:
        self._check_time()
        return self.backend.time(handle, iterations)

    def release(self, handle) -> None:
        self.backend.release(handle)


def _fingerprint_json(fp: Fingerprint) -> dict[str, Any]:
    return {"fingerprint": fp.to_dict(), "fingerprint_key": fp.key}


def fingerprint_from_dict(d: Mapping[str, Any]) -> Fingerprint:
    d = dict(d)
    extra = d.pop("extra", {}) or {}
    return Fingerprint(**d, extra=tuple(sorted(extra.items())))


class DeviceServer:
    """The measurement service; ``serve_forever()`` or ``start()`` (background thread)."""

    def __init__(self, token: str, runner: str = "onnxruntime", runner_options: Mapping[str, Any] | None = None,
                 host: str = "127.0.0.1", port: int = 0, limits: Limits = Limits(),
                 certfile: str | None = None, keyfile: str | None = None, log: Callable[[str], None] | None = None):
        if not token or len(token) < 8:
            raise ValueError("serve-device: the token must be at least 8 characters")
        self.token = token.encode()
        self.limits = limits
        self.runner_name = runner
        self.backend = _make_backend(runner, runner_options or {})
        self.lock = threading.Lock()
        self.pending = threading.BoundedSemaphore(limits.max_pending)
        self.log = log or (lambda message: None)
        self.base_fingerprint = self.backend.fingerprint()  # fail at start, not on the first request
        handler = type("Handler", (_Handler,), {"device": self})
        self.httpd = ThreadingHTTPServer((host, int(port)), handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        bound_host, bound_port = self.httpd.server_address[:2]
        self.url = f"{scheme}://{bound_host}:{bound_port}"
        self._thread: threading.Thread | None = None

    def fingerprint(self, batch_size: int) -> Fingerprint:
        return replace(self.base_fingerprint, batch_size=int(batch_size))

    def info(self, batch_size: int) -> dict[str, Any]:
        return {"version": WIRE_VERSION, "runner": self.runner_name, **_fingerprint_json(self.fingerprint(batch_size)),
                "limits": asdict(self.limits)}

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> "DeviceServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hwnas-serve-device", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "DeviceServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # request handling -------------------------------------------------------------------
    def parse_measure(self, body: bytes) -> tuple[Protocol, int, list[tuple[str, bytes, tuple[int, ...]]]]:
        limits = self.limits
        if len(body) < _HEADER.size:
            raise RequestError(400, "body too short: expected a 4-byte header length")
        (header_len,) = _HEADER.unpack_from(body)
        if header_len > len(body) - _HEADER.size:
            raise RequestError(400, f"header length {header_len} exceeds the body")
        try:
            header = json.loads(body[_HEADER.size:_HEADER.size + header_len])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(400, f"header is not JSON: {exc}") from None
        if not isinstance(header, dict):
            raise RequestError(400, "header must be a JSON object")
        unknown = set(header) - {"protocol", "seed", "models"}
        if unknown:
            raise RequestError(400, f"unknown header key(s) {sorted(unknown)}")
        protocol = self._parse_protocol(header.get("protocol", {}))
        seed = header.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
            raise RequestError(400, "seed must be a non-negative integer")
        entries = header.get("models")
        if not isinstance(entries, list) or not entries:
            raise RequestError(400, "models must be a non-empty list")
        if len(entries) > limits.max_models:
            raise RequestError(413, f"{len(entries)} models in one request; the limit is {limits.max_models}")
        models = []
        offset = _HEADER.size + header_len
        seen = set()
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or set(entry) != {"key", "size", "input_shape"}:
                raise RequestError(400, f"models[{i}] must have exactly the keys key, size, input_shape")
            key, size, shape = entry["key"], entry["size"], entry["input_shape"]
            if not isinstance(key, str) or not 0 < len(key) <= 512 or key in seen:
                raise RequestError(400, f"models[{i}].key must be a unique string of 1-512 characters")
            seen.add(key)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise RequestError(400, f"model {key!r}: size must be a positive integer")
            if (not isinstance(shape, list) or not 1 <= len(shape) <= 8
                    or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
                raise RequestError(400, f"model {key!r}: input_shape must be 1-8 positive integers")
            if int(np.prod(shape, dtype=np.int64)) > limits.max_input_elements:
                raise RequestError(413, f"model {key!r}: input of {int(np.prod(shape))} elements exceeds "
                                        f"the limit of {limits.max_input_elements}")
            if offset + size > len(body):
                raise RequestError(400, f"model {key!r}: declared size {size} runs past the body")
            models.append((key, body[offset:offset + size], tuple(shape)))
            offset += size
        if offset != len(body):
            raise RequestError(400, f"{len(body) - offset} trailing bytes after the last model")
        if len({shape[0] for _, _, shape in models}) != 1:
            raise RequestError(400, "all models of one request must share the batch size (input_shape[0])")
        return protocol, seed, models

    def _parse_protocol(self, raw: Any) -> Protocol:
        limits = self.limits
        if not isinstance(raw, dict):
            raise RequestError(400, "protocol must be a JSON object")
        names = {f.name for f in fields(Protocol)}
        unknown = set(raw) - names
        if unknown:
            raise RequestError(400, f"unknown protocol key(s) {sorted(unknown)}; allowed: {sorted(names)}")
        bounds = {"rounds": limits.max_rounds, "repeats": limits.max_repeats, "warmup": limits.max_warmup,
                  "target_ms": limits.max_target_ms, "max_iterations": limits.max_iterations}
        for key, value in raw.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise RequestError(400, f"protocol.{key} must be a number")
            if value > bounds[key]:
                raise RequestError(400, f"protocol.{key}={value} exceeds the server's limit {bounds[key]}")
        try:
            return Protocol(**{k: (float(v) if k == "target_ms" else int(v)) for k, v in raw.items()})
        except ValueError as exc:
            raise RequestError(400, f"protocol: {exc}") from None

    def run_measure(self, body: bytes) -> dict[str, Any]:
        protocol, seed, models = self.parse_measure(body)
        if not self.lock.acquire(timeout=self.limits.max_wait_s):
            raise RequestError(503, f"device busy for more than {self.limits.max_wait_s:g} s; retry later")
        try:
            # validation too runs under the lock: parsing a large model next to someone
            # else's timing loop would disturb it on a small device
            started = time.monotonic()
            rng = np.random.default_rng(seed)
            candidates = []
            for key, data, shape in models:
                dtype = validate_onnx(key, data, shape)
                array = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
                candidates.append(Candidate(key, lambda key=key, data=data, array=array: ((key, data), array)))
            timer = _OnnxTimer(self.backend, started + self.limits.max_measure_s, len(candidates))
            try:
                results = measure(timer, candidates, protocol, rng)
            except _Deadline:
                raise RequestError(422, f"measurement exceeded the server's cap of "
                                        f"{self.limits.max_measure_s:g} s; send fewer models or "
                                        f"lower protocol rounds") from None
            elapsed = time.monotonic() - started
        finally:
            self.lock.release()
        self.log(f"measured {len(models)} model(s) in {elapsed:.1f} s")
        batch = models[0][2][0]
        return {"results": {k: {"latency_ms": m.latency_ms, "spread": m.spread,
                                "round_medians": m.round_medians} for k, m in results.items()},
                **_fingerprint_json(self.fingerprint(batch)), "elapsed_s": elapsed}


class _Handler(BaseHTTPRequestHandler):
    device: DeviceServer  # set on the per-server subclass
    server_version = "hwnas-serve-device"
    protocol_version = "HTTP/1.0"
    #: seconds a client may stall mid-request before its connection is dropped
    timeout = 120

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        self.device.log(f"{self.address_string()} {format % args}")

    def _reply(self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] = {}) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _drain(self, limit: int) -> None:
        """Read and drop up to ``limit`` body bytes so the client can read our answer."""
        try:
            left = min(int(self.headers.get("Content-Length") or 0), limit)
        except ValueError:
            return
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def _authorize(self) -> None:
        header = self.headers.get("Authorization")
        if not header:
            raise RequestError(401, "missing token: send 'Authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.device.token):
            raise RequestError(403, "wrong token")

    def _handle(self, method: str) -> None:
        limits = self.device.limits
        body_read = False
        try:
            try:
                url = urllib.parse.urlsplit(self.path)
                routes = {("GET", "/info"), ("POST", "/measure")}
                if (method, url.path) not in routes:
                    known = any(path == url.path for _, path in routes)
                    raise RequestError(405 if known else 404, f"no route {method} {url.path}; "
                                       f"use GET /info or POST /measure")
                self._authorize()
                if method == "GET":
                    query = urllib.parse.parse_qs(url.query)
                    try:
                        batch = int(query.get("batch_size", ["1"])[0])
                    except ValueError:
                        raise RequestError(400, "batch_size must be an integer") from None
                    if batch < 1:
                        raise RequestError(400, "batch_size must be >= 1")
                    self._reply(200, self.device.info(batch))
                    return
                length = self.headers.get("Content-Length")
                if length is None:
                    raise RequestError(411, "Content-Length is required")
                try:
                    size = int(length)
                except ValueError:
                    raise RequestError(400, f"bad Content-Length {length!r}") from None
                if size < 0:
                    raise RequestError(400, f"bad Content-Length {length!r}")
                if size > limits.max_request_bytes:
                    raise RequestError(413, f"request of {size} bytes exceeds the limit of "
                                            f"{limits.max_request_bytes} bytes")
                if not self.device.pending.acquire(blocking=False):
                    raise RequestError(503, f"{limits.max_pending} requests already queued; retry later")
                try:
                    body = self.rfile.read(size)
                    body_read = True
                    if len(body) != size:
                        raise RequestError(400, f"body ended after {len(body)} of {size} bytes")
                    answer = self.device.run_measure(body)
                finally:
                    self.device.pending.release()
                self._reply(200, answer)
            except RequestError as exc:
                if not body_read:
                    # an unread body would make the client see a reset instead of the answer;
                    # dropping (never storing) a bounded amount of it keeps that cheap
                    self._drain(limits.max_request_bytes * (4 if exc.status == 413 else 1))
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
                if exc.status == 503:
                    headers = {"Retry-After": "5"}
                self._reply(exc.status, {"error": exc.reason}, headers)
        except (ConnectionError, TimeoutError, OSError) as exc:
            self.device.log(f"connection dropped: {exc}")
        except Exception as exc:  # noqa: BLE001 - one bad request must never stop the service
            self.device.log(f"internal error: {type(exc).__name__}: {exc}")
            try:
                self._reply(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})
            except OSError:
                pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


def new_token() -> str:
    return secrets.token_urlsafe(24)


# --------------------------------------------------------------------------------------
# client side
# --------------------------------------------------------------------------------------
def encode_measure(models: Sequence[tuple[str, bytes, Sequence[int]]], protocol: Protocol, seed: int) -> bytes:
    header = json.dumps({"protocol": asdict(protocol), "seed": int(seed),
                         "models": [{"key": k, "size": len(d), "input_shape": list(s)} for k, d, s in models]})
    blob = header.encode()
    return b"".join([_HEADER.pack(len(blob)), blob, *(d for _, d, _ in models)])


class DeviceClient:
    """HTTP calls to one ``serve-device`` URL."""

    def __init__(self, url: str, token: str, timeout_s: float = 900.0, cafile: str | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"remote runner: bad server URL {url!r}; expected http://HOST:PORT")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = float(timeout_s)
        self.context = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None

    def _call(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Authorization": f"Bearer {self.token}"})
        if body is not None:
            request.add_header("Content-Type", "application/octet-stream")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                reason = exc.reason
            error = RemoteError(f"{self.url}: HTTP {exc.code}: {reason}")
            error.status = exc.code
            raise error from None
        except (urllib.error.URLError, OSError) as exc:
            error = RemoteError(f"{self.url}: cannot reach the device: {getattr(exc, 'reason', exc)}")
            error.status = None
            raise error from None

    def info(self, batch_size: int = 1) -> dict[str, Any]:
        return self._call("GET", f"/info?batch_size={int(batch_size)}")

    def measure(self, models: Sequence[tuple[str, bytes, Sequence[int]]], protocol: Protocol, seed: int
                ) -> dict[str, Any]:
        return self._call("POST", "/measure", encode_measure(models, protocol, seed))


class RemoteRunner(Runner):
    """Client runner: measurements happen on ``serve-device`` servers.

    ``servers`` is one URL or several (a list or a comma-separated string) of
    the same device kind.  The token comes from ``token`` or the environment
    variable named by ``token_env`` (default ``HWNAS_DEVICE_TOKEN``), so it
    need not be written into recipes.  ``threads`` and ``dtype`` are the
    server's; if given here they are checked against it.
    """

    name = "remote"

    def __init__(self, servers: str | Sequence[str] = (), token: str | None = None,
                 token_env: str = TOKEN_ENV, threads: int | None = None, batch_size: int = 1,
                 dtype: str | None = None, opset: int = 17, timeout_s: float = 900.0,
                 retries: int = 3, cafile: str | None = None):
        super().__init__(1, batch_size, dtype or "float32")
        urls = [u.strip() for u in servers.split(",")] if isinstance(servers, str) else [str(u) for u in servers]
        urls = [u for u in urls if u]
        if not urls:
            raise ValueError("runner 'remote' needs servers: a URL or a list of URLs of hwnas serve-device")
        token = token if token is not None else os.environ.get(token_env)
        if not token:
            raise ValueError(f"runner 'remote' needs the device token: set {token_env} or pass token")
        if int(retries) < 0:
            raise ValueError("runner 'remote': retries must be >= 0")
        self.clients = [DeviceClient(u, token, timeout_s, cafile) for u in urls]
        self.requested_threads = None if threads is None else int(threads)
        self.requested_dtype = dtype
        self.opset = int(opset)
        self.retries = int(retries)
        self._info: dict[str, Any] | None = None

    def _server_info(self) -> dict[str, Any]:
        if self._info is None:
            infos = [c.info(self.batch_size) for c in self.clients]
            keys = {i["fingerprint_key"] for i in infos}
            if len(keys) > 1:
                described = "; ".join(f"{c.url}: {fingerprint_from_dict(i['fingerprint']).describe()}"
                                      for c, i in zip(self.clients, infos))
                raise ValueError(f"runner 'remote': the servers are different devices and cannot "
                                 f"share one measurement set ({described})")
            info = infos[0]
            fp = info["fingerprint"]
            if self.requested_threads is not None and fp["threads"] != self.requested_threads:
                raise ValueError(f"runner 'remote': threads={self.requested_threads} requested but the "
                                 f"server measures with {fp['threads']}; restart serve-device with --threads")
            if self.requested_dtype is not None and fp["dtype"] != self.requested_dtype:
                raise ValueError(f"runner 'remote': dtype={self.requested_dtype!r} requested but the "
                                 f"server measures {fp['dtype']!r}")
            info["limits_min"] = {k: min(i["limits"][k] for i in infos) for k in info["limits"]}
            self._info = info
        return self._info

    def fingerprint(self) -> Fingerprint:
        info = self._server_info()
        fp = dict(info["fingerprint"])
        # the client exports, so the opset is the client's; the rest is the device's
        extra = dict(fp.get("extra") or {})
        if "opset" in extra:
            extra["opset"] = self.opset
        fp["extra"] = extra
        return fingerprint_from_dict(fp)

    # the protocol delegates here (see hardware.protocol.measure)
    def prepare(self, model, example):
        raise TypeError("runner 'remote' times on the device: measure it through "
                        "hardware.protocol.measure, which sends whole batches")

    def time(self, handle, iterations: int) -> float:
        raise TypeError("runner 'remote' times on the device: measure it through "
                        "hardware.protocol.measure, which sends whole batches")

    def _export(self, candidate: Candidate) -> tuple[str, bytes, tuple[int, ...]]:
        from hardware.onnx_io import export_onnx

        model, example = candidate.build()
        if self._server_info()["fingerprint"]["dtype"] == "float16":
            model, example = model.half(), example.half()
        # torch.onnx.export keeps process-global state: one export at a time, in any thread
        with _EXPORT_LOCK:
            data = export_onnx(model, example, opset=self.opset)
        return candidate.key, data, tuple(example.shape)

    def measure_candidates(self, candidates: Sequence[Candidate], protocol: Protocol,
                           rng: np.random.Generator, progress: Callable[[int], None] | None = None
                           ) -> dict[str, Measurement]:
        info = self._server_info()
        limits = info["limits_min"]
        per_request = max(1, int(limits["max_models"]))
        chunks = [list(candidates[i:i + per_request]) for i in range(0, len(candidates), per_request)]
        seeds = [int(s) for s in rng.integers(0, 2 ** 62, size=len(chunks))]
        work: queue.Queue = queue.Queue()
        for item in zip(seeds, chunks):
            work.put(item)
        results: dict[str, Measurement] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()

        def send(client: DeviceClient, models, seed: int) -> dict[str, Any]:
            for attempt in range(self.retries + 1):
                try:
                    return client.measure(models, protocol, seed)
                except RemoteError as exc:
                    if getattr(exc, "status", None) != 503 or attempt == self.retries:
                        raise
                    time.sleep(min(30.0, 2.0 ** attempt))
            raise AssertionError("unreachable")

        alive = list(self.clients)
        unreachable: list[RemoteError] = []

        def worker(client: DeviceClient) -> None:
            while not errors:
                try:
                    seed, chunk = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    models = [self._export(c) for c in chunk]
                    for group in _split_by_bytes(models, int(limits["max_request_bytes"])):
                        answer = send(client, group, seed)
                        if answer.get("fingerprint_key") != info["fingerprint_key"]:
                            raise RemoteError(f"{client.url}: the device's fingerprint changed during the "
                                              f"search (now {answer.get('fingerprint')})")
                        with lock:
                            for key, m in answer["results"].items():
                                results[key] = Measurement(float(m["latency_ms"]), float(m["spread"]),
                                                           [float(x) for x in m["round_medians"]])
                            if progress is not None:
                                progress(len(group))
                except RemoteError as exc:
                    with lock:
                        if getattr(exc, "status", 0) is None:
                            # a farm member went away: hand its batch to the others
                            work.put((seed, chunk))
                            alive.remove(client)
                            unreachable.append(exc)
                        else:
                            errors.append(exc)
                    return
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    with lock:
                        errors.append(exc)
                    return

        # each pass either empties the queue or loses a server, so this ends
        while not errors and not work.empty() and alive:
            threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in list(alive)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        if not work.empty():
            raise RemoteError("no device server reachable: " + "; ".join(str(e) for e in unreachable))
        missing = [c.key for c in candidates if c.key not in results]
        if missing:
            raise RemoteError(f"the device returned no result for {missing[:3]}")
        return results


def _split_by_bytes(models: list, max_bytes: int) -> list[list]:
    """Group models so that each request stays under the server's size cap."""
    budget = max_bytes - 64 * 1024  # room for the JSON header
    groups: list[list] = [[]]
    used = 0
    for key, data, shape in models:
        if len(data) > budget:
            raise RemoteError(f"model {key!r} is {len(data)} bytes as ONNX; the device accepts at most "
                              f"{max_bytes} bytes per request (serve-device --max-request-mb)")
        if groups[-1] and used + len(data) > budget:
            groups.append([])
            used = 0
        groups[-1].append((key, data, shape))
        used += len(data)
    return groups


def serve_main(token: str | None, runner: str, runner_options: Mapping[str, Any], host: str, port: int,
               limits: Limits, certfile: str | None = None, keyfile: str | None = None) -> int:
    """Run ``hwnas serve-device`` in the foreground until interrupted."""
    generated = token is None
    token = token or new_token()

    def log(message: str) -> None:
        print(f"[serve-device {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    server = DeviceServer(token, runner, runner_options, host, port, limits, certfile, keyfile, log)
    print(f"serving {server.base_fingerprint.describe()} at {server.url}", flush=True)
    if generated:
        print(f"token (pass it to the client as {TOKEN_ENV}): {token}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0
