"""hardware.remote.wire: request bodies, limits, fingerprints, tokens (no server needed)."""
from __future__ import annotations

import json
import os

import pytest

from hardware.base import Fingerprint
from hardware.protocol import Protocol
from hardware.remote.wire import (HEADER, TOKEN_ENV, Limits, RequestError, decode_measure, element_count,
                                  encode_measure, fingerprint_from_dict, fingerprint_json, read_token_file,
                                  resolve_token)

SHAPE = (1, 3, 32, 32)


def raw_body(models: list[dict], blobs: bytes = b"", **header) -> bytes:
    blob = json.dumps({"protocol": {}, "seed": 0, "models": models, **header}).encode()
    return HEADER.pack(len(blob)) + blob + blobs


def test_encode_decode_round_trip():
    models = [("a", b"\x01\x02", SHAPE), ("b", b"\x03", SHAPE)]
    protocol, seed, decoded = decode_measure(encode_measure(models, Protocol(rounds=4), 7), Limits())
    assert protocol == Protocol(rounds=4) and seed == 7
    assert decoded == models


@pytest.mark.parametrize("shape", [[2 ** 62, 2 ** 62, 1, 1], [2 ** 31] * 4, [2 ** 63, 2, 1, 1], [10 ** 100, 1]])
def test_overflowing_input_shapes_are_413(shape):
    """int64 arithmetic once wrapped [2**62, 2**62, 1, 1] to 0 elements; Python ints cannot."""
    body = raw_body([{"key": "x", "size": 1, "input_shape": shape}], b"\x00")
    with pytest.raises(RequestError) as info:
        decode_measure(body, Limits())
    assert info.value.status == 413 and "exceeds the limit" in info.value.reason


@pytest.mark.parametrize("shape", [[0, 3], [-1, 3], [], [1.5], [True, 2], [1] * 9, "1,3"])
def test_malformed_input_shapes_are_400(shape):
    with pytest.raises(RequestError) as info:
        element_count("x", shape, 1 << 20)
    assert info.value.status == 400


def test_element_count_stops_early_and_is_exact():
    assert element_count("x", [1, 3, 224, 224], 64 << 20) == 3 * 224 * 224
    assert element_count("x", [64 << 20], 64 << 20) == 64 << 20
    with pytest.raises(RequestError):
        element_count("x", [(64 << 20) + 1], 64 << 20)


@pytest.mark.parametrize("header", [b'{"models": [' * 100000, b'{"seed": ' + b"9" * 5000 + b"}", b"\xff\xfe"])
def test_hostile_json_headers_are_400(header):
    with pytest.raises(RequestError) as info:
        decode_measure(HEADER.pack(len(header)) + header, Limits())
    assert info.value.status == 400


@pytest.mark.parametrize("value", ["Infinity", "NaN", "-Infinity"])
def test_non_finite_protocol_numbers_are_400(value):
    blob = ('{"protocol": {"target_ms": %s}, "models": [{"key": "x", "size": 1, "input_shape": [1]}]}'
            % value).encode()
    with pytest.raises(RequestError) as info:
        decode_measure(HEADER.pack(len(blob)) + blob + b"\x00", Limits())
    assert info.value.status == 400


def test_limits_validate_and_derive_the_cpu_budget():
    assert Limits(max_measure_s=10).cpu_seconds(2) == 50.0
    assert Limits(max_cpu_s=7).cpu_seconds(4) == 7
    for bad in ({"max_models": 0}, {"max_measure_s": float("inf")}, {"max_cpu_s": -1}, {"max_connections": True}):
        with pytest.raises(ValueError):
            Limits(**bad)


def test_fingerprint_round_trip():
    fp = Fingerprint("onnxruntime", "cpu", "onnxruntime 1", 2, 1, "float32", (("opset", 17),))
    assert fingerprint_from_dict(fingerprint_json(fp)["fingerprint"]) == fp


def test_token_file_must_be_private(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret-token-value\n")
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        read_token_file(path)
    os.chmod(path, 0o640)
    with pytest.raises(ValueError, match="group or others"):
        read_token_file(path)
    os.chmod(path, 0o600)
    assert read_token_file(path) == "s3cret-token-value"
    with pytest.raises(ValueError, match="cannot|No such"):
        read_token_file(tmp_path / "missing")


def test_token_sources_in_order(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-the-file-123")
    os.chmod(path, 0o600)
    env = {TOKEN_ENV: "from-the-environment"}
    assert resolve_token("from-the-argument", None, env) == ("from-the-argument", "argument")
    assert resolve_token(None, path, env) == ("from-the-file-123", "file")
    assert resolve_token(None, None, env) == ("from-the-environment", "environment")
    token, source = resolve_token(None, None, {})
    assert source == "generated" and len(token) >= 24
    with pytest.raises(ValueError, match="not both"):
        resolve_token("a-token-value", path, env)
