"""Loopback tests of ``serve-device`` and the ``remote`` runner (127.0.0.1, free ports only)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from torch import nn

from hardware import make_runner
from hardware.onnx_io import export_onnx
from hardware.protocol import Candidate, Protocol, measure
from hardware.remote import DeviceServer, Limits, RemoteError, RemoteRunner, encode_measure

TOKEN = "test-token-0123456789"
SHAPE = (1, 3, 32, 32)
FAST = Protocol(rounds=3, repeats=2, target_ms=5.0, warmup=2)


def net(width: int) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()


def onnx_bytes(width: int) -> bytes:
    return export_onnx(net(width), torch.randn(SHAPE))


def candidates(widths) -> list[Candidate]:
    return [Candidate(f"w{w}", lambda w=w: (net(w), torch.randn(SHAPE))) for w in widths]


@pytest.fixture(scope="module")
def server():
    limits = Limits(max_request_bytes=2 << 20, max_models=4, max_measure_s=60, max_wait_s=30)
    with DeviceServer(TOKEN, "onnxruntime", {"threads": 1}, host="127.0.0.1", port=0, limits=limits) as srv:
        yield srv


def call(url: str, body: bytes | None = None, token: str | None = TOKEN, path: str = "/measure"
         ) -> tuple[int, dict]:
    """POST ``body`` (or GET when None) to the server; (HTTP status, decoded JSON answer)."""
    request = urllib.request.Request(url + path, data=body, method="POST" if body is not None else "GET")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post(url: str, body: bytes, token: str | None = TOKEN, path: str = "/measure") -> tuple[int, dict]:
    return call(url, body, token, path)


def get(url: str, token: str | None = TOKEN, path: str = "/info") -> tuple[int, dict]:
    return call(url, None, token, path)


def good_body(seed: int = 0) -> bytes:
    return encode_measure([("ok", onnx_bytes(8), SHAPE)], FAST, seed)


def assert_serves(server) -> None:
    status, answer = post(server.url, good_body())
    assert status == 200, answer
    assert answer["results"]["ok"]["latency_ms"] > 0


def test_remote_agrees_with_local(server):
    widths = (16, 64, 160)  # latencies about an order of magnitude apart
    remote = RemoteRunner(server.url, token=TOKEN)
    local = make_runner("onnxruntime", threads=1)
    assert remote.fingerprint() == local.fingerprint()  # same machine, same conditions
    # alternate remote and local passes so load from other processes hits both alike, and
    # keep each candidate's fastest pass: the least disturbed estimate on a shared machine
    passes = {"remote": [], "local": []}
    for i in range(3):
        for label, runner in (("remote", remote), ("local", local)):
            got = measure(runner, candidates(widths), FAST, np.random.default_rng(i))
            assert all(len(got[f"w{w}"].round_medians) == FAST.rounds for w in widths)
            passes[label].append([got[f"w{w}"].latency_ms for w in widths])
    r, loc = (np.min(passes[k], axis=0) for k in ("remote", "local"))
    assert list(np.argsort(r)) == list(np.argsort(loc)) == [0, 1, 2]
    # the same protocol on the same CPU must agree within the run-to-run noise of a
    # shared 2-core machine (the reliability benchmark reports it; a factor 2 is far outside)
    assert np.all(np.abs(np.log(r / loc)) < np.log(2.0)), (r, loc)


def test_missing_token_is_401_and_wrong_token_403(server):
    assert get(server.url, token=None)[0] == 401
    status, answer = get(server.url, token="not-the-token")
    assert status == 403 and "wrong token" in answer["error"]
    assert post(server.url, good_body(), token=None)[0] == 401
    assert post(server.url, good_body(), token="not-the-token")[0] == 403
    with pytest.raises(RemoteError, match="HTTP 403"):
        RemoteRunner(server.url, token="not-the-token").fingerprint()
    assert_serves(server)


def test_oversized_request_is_413_and_server_keeps_serving(server):
    big = export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 512)), torch.randn(SHAPE))
    assert len(big) > server.limits.max_request_bytes
    status, answer = post(server.url, encode_measure([("big", big, SHAPE)], FAST, 0))
    assert status == 413 and "exceeds the limit" in answer["error"]
    assert_serves(server)
    too_many = [(f"m{i}", onnx_bytes(4), SHAPE) for i in range(server.limits.max_models + 1)]
    status, answer = post(server.url, encode_measure(too_many, FAST, 0))
    assert status == 413 and "models in one request" in answer["error"]
    assert_serves(server)


@pytest.mark.parametrize("case", ["random", "pickle", "truncated", "shape", "header", "external", "protocol",
                                  "two_inputs"])
def test_malformed_requests_are_400_and_server_keeps_serving(server, case):
    rng = np.random.default_rng(0)
    good = onnx_bytes(8)
    if case == "random":
        body = encode_measure([("x", rng.bytes(5000), SHAPE)], FAST, 0)
        reason = "not an ONNX model"
    elif case == "pickle":
        body = encode_measure([("x", pickle.dumps({"weights": [1, 2, 3]}), SHAPE)], FAST, 0)
        reason = "x"
    elif case == "truncated":
        body = encode_measure([("x", good[: len(good) // 2], SHAPE)], FAST, 0)
        reason = "x"
    elif case == "shape":
        body = encode_measure([("x", good, (1, 3, 64, 64))], FAST, 0)
        reason = "does not match"
    elif case == "header":
        body = (5).to_bytes(4, "big") + b"{nope" + good
        reason = "not JSON"
    elif case == "external":
        import onnx

        model = onnx.load_model_from_string(good)
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "../../etc/passwd"
        body = encode_measure([("x", model.SerializeToString(), SHAPE)], FAST, 0)
        reason = "x"
    elif case == "protocol":
        body = encode_measure([("x", good, SHAPE)], Protocol(rounds=server.limits.max_rounds + 1), 0)
        reason = "exceeds the server's limit"
    else:
        body = encode_measure([("x", two_input_model(), SHAPE)], FAST, 0)
        reason = "exactly one input"
    status, answer = post(server.url, body)
    assert 400 <= status < 500, answer
    assert reason in answer["error"]
    assert_serves(server)


def two_input_model() -> bytes:
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(SHAPE)) for n in ("a", "b")]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(SHAPE))
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two", inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_unknown_route_and_bad_batch_size(server):
    assert get(server.url, path="/nothing")[0] == 404
    assert get(server.url, path="/info?batch_size=zero")[0] == 400
    assert_serves(server)


def test_measurement_time_cap_is_422(server):
    capped = DeviceServer(TOKEN, "onnxruntime", {}, limits=Limits(max_measure_s=0.01))
    with capped:
        status, answer = post(capped.url, encode_measure([("slow", onnx_bytes(64), SHAPE)],
                                                         Protocol(rounds=20, target_ms=50.0), 0))
        assert status == 422 and "cap" in answer["error"]
        status, _ = get(capped.url)
        assert status == 200


def test_busy_device_answers_503_after_the_wait_cap():
    srv = DeviceServer(TOKEN, "onnxruntime", {}, limits=Limits(max_wait_s=0.2, max_pending=1))
    with srv:
        with srv.lock:  # another request is being timed
            status, answer = post(srv.url, good_body())
        assert status == 503 and "busy" in answer["error"]
        assert_serves(srv)
        with srv.pending:  # bodies held in memory are capped too
            status, answer = post(srv.url, good_body())
        assert status == 503 and "already queued" in answer["error"]
        assert_serves(srv)


def test_two_concurrent_clients_both_get_results(server):
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            runner = RemoteRunner([server.url], token=TOKEN)
            results[i] = measure(runner, candidates((8 + i, 16 + i)), FAST, np.random.default_rng(i))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert set(results[0]) == {"w8", "w16"} and set(results[1]) == {"w9", "w17"}
    assert all(m.latency_ms > 0 for r in results.values() for m in r.values())


def test_farm_spreads_candidates_across_servers(monkeypatch):
    logs: list[list[str]] = [[], []]
    limits = Limits(max_models=1)
    a = DeviceServer(TOKEN, "onnxruntime", {}, limits=limits, log=logs[0].append)
    b = DeviceServer(TOKEN, "onnxruntime", {}, limits=limits, log=logs[1].append)
    with a, b:
        monkeypatch.setenv("HWNAS_DEVICE_TOKEN", TOKEN)  # the token need not be in the recipe
        runner = make_runner("remote", servers=f"{a.url},{b.url}")
        got = measure(runner, candidates((4, 8, 12, 16)), FAST, np.random.default_rng(0))
    assert set(got) == {"w4", "w8", "w12", "w16"}
    served = [sum("measured" in line for line in log) for log in logs]
    assert sum(served) == 4 and min(served) >= 1, served


def test_farm_refuses_servers_of_different_devices():
    with DeviceServer(TOKEN, "onnxruntime", {"threads": 1}) as a, \
            DeviceServer(TOKEN, "onnxruntime", {"threads": 2}) as b:
        runner = RemoteRunner([a.url, b.url], token=TOKEN)
        with pytest.raises(ValueError, match="different devices"):
            runner.fingerprint()
        with pytest.raises(ValueError, match="threads=2 requested"):
            RemoteRunner(a.url, token=TOKEN, threads=2).fingerprint()


def test_client_refuses_missing_token_and_bad_urls(monkeypatch):
    monkeypatch.delenv("HWNAS_DEVICE_TOKEN", raising=False)
    with pytest.raises(ValueError, match="HWNAS_DEVICE_TOKEN"):
        RemoteRunner("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="bad server URL"):
        RemoteRunner("ftp://device", token=TOKEN)
    with pytest.raises(ValueError, match="at least 8"):
        DeviceServer("short")


def test_unreachable_server_is_a_clear_error():
    with DeviceServer(TOKEN, "onnxruntime", {}) as srv:
        url = srv.url
    with pytest.raises(RemoteError, match="cannot reach the device"):
        RemoteRunner(url, token=TOKEN).fingerprint()


def test_serve_path_never_imports_torch():
    code = ("import sys\n"
            "from nas.cli import build_parser\n"
            "build_parser()\n"
            "from hardware.remote import DeviceServer, encode_measure\n"
            "srv = DeviceServer('x' * 12, 'onnxruntime', {}).start()\n"
            "srv.close()\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
