"""What travels between the ``remote`` runner and ``serve-device``: request encoding and
decoding, the server's limits, fingerprints as JSON, tokens, and the errors both sides raise.

Wire format (HTTP/1.0, JSON answers)::

    GET  /info?batch_size=N   -> {"fingerprint": {...}, "fingerprint_key": "...", "limits": {...}, ...}
    POST /measure             body: uint32 big-endian header length, JSON header, model bytes
         header = {"protocol": {rounds, repeats, ...}, "seed": int,
                   "models": [{"key": str, "size": bytes, "input_shape": [b, c, h, w]}, ...]}
                              -> {"results": {key: {"latency_ms", "spread", "round_medians"}},
                                  "fingerprint": {...}, "fingerprint_key": "...", "elapsed_s": ...}

Every request carries ``Authorization: Bearer <token>``.  Errors are
``{"error": reason}`` with a 4xx/5xx status; the reason is always the server's
own sentence, never a runtime's message.

This module needs only the standard library and ``hardware.base``/``hardware.protocol``.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import stat
import struct
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from hardware.base import Fingerprint
from hardware.protocol import Protocol

TOKEN_ENV = "HWNAS_DEVICE_TOKEN"
WIRE_VERSION = 1
HEADER = struct.Struct(">I")
#: longest model key accepted
MAX_KEY_CHARS = 512
#: most dimensions an input shape may have
MAX_INPUT_RANK = 8


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the device (and how many clients it serves at once)."""

    max_request_bytes: int = 256 << 20
    max_models: int = 16
    max_input_elements: int = 64 << 20
    #: wall-clock seconds one request may measure; past it the measuring process is killed
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
    #: memory of the measuring process: its address space (CPU runner) and resident size
    max_memory_mb: int = 4096
    #: CPU seconds one request may use; 0 = max_measure_s x the runner's threads + 30 s
    max_cpu_s: float = 0.0
    #: open connections served at once; more get a 503
    max_connections: int = 64
    #: seconds a client has to complete the TLS handshake
    max_handshake_s: float = 10.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"serve-device limit {f.name} must be a finite number")
            if not (value >= 0 if f.name == "max_cpu_s" else value > 0):
                raise ValueError(f"serve-device limit {f.name} must be > 0")

    def cpu_seconds(self, threads: int) -> float:
        """CPU-time budget of one request for a runner timing with ``threads`` threads."""
        return self.max_cpu_s or self.max_measure_s * max(1, int(threads)) + 30.0


class RequestError(Exception):
    """A bad request: becomes an HTTP 4xx answer whose body names the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RemoteError(ValueError):
    """The device answered with an error (or could not be reached).

    ``status`` is the HTTP status, or None when no answer came (refused, reset,
    timed out); ``url`` is the server that failed."""

    def __init__(self, message: str, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.status = status
        self.url = url


# --- request body -----------------------------------------------------------------------
def encode_measure(models: Sequence[tuple[str, bytes, Sequence[int]]], protocol: Protocol, seed: int) -> bytes:
    """The body of ``POST /measure``: ``models`` are ``(key, onnx bytes, input shape)``."""
    from dataclasses import asdict

    header = json.dumps({"protocol": asdict(protocol), "seed": int(seed),
                         "models": [{"key": k, "size": len(d), "input_shape": list(s)} for k, d, s in models]})
    blob = header.encode()
    return b"".join([HEADER.pack(len(blob)), blob, *(d for _, d, _ in models)])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def element_count(key: str, shape: Any, cap: int) -> int:
    """Elements of ``shape`` (1-8 positive ints), in Python ints: 400 if malformed, 413 past ``cap``."""
    if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_INPUT_RANK or not all(_is_int(d) for d in shape):
        raise RequestError(400, f"model {key!r}: input_shape must be 1-{MAX_INPUT_RANK} positive integers")
    count = 1
    for d in shape:
        if d < 1:
            raise RequestError(400, f"model {key!r}: input_shape must be 1-{MAX_INPUT_RANK} positive integers")
        count *= d
        if count > cap:  # stop early: never build a giant number from a hostile header
            raise RequestError(413, f"model {key!r}: input_shape exceeds the limit of {cap} elements")
    return count


def decode_measure(body: bytes, limits: Limits) -> tuple[Protocol, int, list[tuple[str, bytes, tuple[int, ...]]]]:
    """Parse and bound-check a ``POST /measure`` body (the models' bytes are not looked at)."""
    if len(body) < HEADER.size:
        raise RequestError(400, "body too short: expected a 4-byte header length")
    (header_len,) = HEADER.unpack_from(body)
    if header_len > len(body) - HEADER.size:
        raise RequestError(400, f"header length {header_len} exceeds the body")
    try:
        header = json.loads(body[HEADER.size:HEADER.size + header_len])
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, over-long integers
        raise RequestError(400, "header is not JSON (or holds numbers or nesting beyond Python's limits)") from None
    if not isinstance(header, dict):
        raise RequestError(400, "header must be a JSON object")
    unknown = set(header) - {"protocol", "seed", "models"}
    if unknown:
        raise RequestError(400, f"unknown header key(s) {sorted(unknown)[:8]}")
    protocol = parse_protocol(header.get("protocol", {}), limits)
    seed = header.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed < 2 ** 63:
        raise RequestError(400, "seed must be a non-negative integer")
    entries = header.get("models")
    if not isinstance(entries, list) or not entries:
        raise RequestError(400, "models must be a non-empty list")
    if len(entries) > limits.max_models:
        raise RequestError(413, f"{len(entries)} models in one request; the limit is {limits.max_models}")
    models = []
    offset = HEADER.size + header_len
    seen = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"key", "size", "input_shape"}:
            raise RequestError(400, f"models[{i}] must have exactly the keys key, size, input_shape")
        key, size, shape = entry["key"], entry["size"], entry["input_shape"]
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS or key in seen:
            raise RequestError(400, f"models[{i}].key must be a unique string of 1-{MAX_KEY_CHARS} characters")
        seen.add(key)
        if not _is_int(size) or size < 1:
            raise RequestError(400, f"model {key!r}: size must be a positive integer")
        element_count(key, shape, limits.max_input_elements)
        if offset + size > len(body):
            raise RequestError(400, f"model {key!r}: declared size {size} runs past the body")
        models.append((key, body[offset:offset + size], tuple(shape)))
        offset += size
    if offset != len(body):
        raise RequestError(400, f"{len(body) - offset} trailing bytes after the last model")
    if len({shape[0] for _, _, shape in models}) != 1:
        raise RequestError(400, "all models of one request must share the batch size (input_shape[0])")
    return protocol, seed, models


def parse_protocol(raw: Any, limits: Limits) -> Protocol:
    if not isinstance(raw, dict):
        raise RequestError(400, "protocol must be a JSON object")
    names = {f.name for f in fields(Protocol)}
    unknown = set(raw) - names
    if unknown:
        raise RequestError(400, f"unknown protocol key(s) {sorted(unknown)[:8]}; allowed: {sorted(names)}")
    bounds = {"rounds": limits.max_rounds, "repeats": limits.max_repeats, "warmup": limits.max_warmup,
              "target_ms": limits.max_target_ms, "max_iterations": limits.max_iterations}
    for key, value in raw.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise RequestError(400, f"protocol.{key} must be a finite number")
        if value > bounds[key]:
            raise RequestError(400, f"protocol.{key}={value} exceeds the server's limit {bounds[key]}")
    try:
        return Protocol(**{k: (float(v) if k == "target_ms" else int(v)) for k, v in raw.items()})
    except ValueError as exc:
        raise RequestError(400, f"protocol: {exc}") from None


# --- fingerprints -----------------------------------------------------------------------
def fingerprint_json(fp: Fingerprint) -> dict[str, Any]:
    return {"fingerprint": fp.to_dict(), "fingerprint_key": fp.key}


def fingerprint_from_dict(d: Mapping[str, Any]) -> Fingerprint:
    d = dict(d)
    extra = d.pop("extra", {}) or {}
    return Fingerprint(**d, extra=tuple(sorted(extra.items())))


# --- tokens -----------------------------------------------------------------------------
MIN_TOKEN_CHARS = 8


def new_token() -> str:
    return secrets.token_urlsafe(24)


def read_token_file(path: str | os.PathLike) -> str:
    """The token stored in ``path``; refused unless only its owner can read or write it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(f"token file {os.fspath(path)!r}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"token file {os.fspath(path)!r} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise ValueError(f"token file {os.fspath(path)!r} is accessible to group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {os.fspath(path)}")
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token or len(token.split()) != 1:
        raise ValueError(f"token file {os.fspath(path)!r} must hold one token (no spaces)")
    return token


def resolve_token(token: str | None = None, token_file: str | os.PathLike | None = None,
                  environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """``(token, source)``: ``--token``, else ``--token-file``, else ``$HWNAS_DEVICE_TOKEN``, else a
    new one.  ``source`` is "argument", "file", "environment" or "generated"."""
    if token is not None and token_file is not None:
        raise ValueError("give either --token or --token-file, not both")
    if token is not None:
        return token, "argument"
    if token_file is not None:
        return read_token_file(token_file), "file"
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV], "environment"
    return new_token(), "generated"
