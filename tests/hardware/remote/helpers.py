"""Shared helpers of the serve-device / remote runner tests (loopback only, free ports only)."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch
from torch import nn

from hardware.onnx_io import export_onnx
from hardware.protocol import Candidate, Protocol
from hardware.remote import encode_measure

TOKEN = "test-token-0123456789"
SHAPE = (1, 3, 32, 32)
FAST = Protocol(rounds=3, repeats=2, target_ms=5.0, warmup=2)
#: the device kind the farm tests' agents serve
AGENT_KIND = "pixel-test"


REPO = Path(__file__).resolve().parents[3]


def pythonpath_without(module: str, folder: Path) -> str:
    """A ``PYTHONPATH`` (``folder``, then the repository) under which ``module`` and its
    submodules cannot be imported, as ``torch`` cannot on a device with the light distribution;
    ``folder`` gets the sitecustomize.py that blocks it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys

        class _Blocked:
            def find_spec(self, name, path=None, target=None):
                if name == {module!r} or name.startswith({module + "."!r}):
                    raise ImportError(f"{module} is not installed on this device ({{name}})")
                return None

        sys.meta_path.insert(0, _Blocked())
    """))
    return os.pathsep.join([str(folder), str(REPO)])


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started that are still its children (Linux ``/proc``; any thread's)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(child) for child in f.read().split()]
    return found


def net(width: int) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()


def onnx_bytes(width: int) -> bytes:
    return export_onnx(net(width), torch.randn(SHAPE))


def candidates(widths) -> list[Candidate]:
    return [Candidate(f"w{w}", lambda w=w: (net(w), torch.randn(SHAPE))) for w in widths]


def call(url: str, body: bytes | None = None, token: str | None = TOKEN, path: str = "/measure",
         context=None, timeout: float = 60) -> tuple[int, dict]:
    """POST ``body`` (or GET when None) to the server; (HTTP status, decoded JSON answer)."""
    request = urllib.request.Request(url + path, data=body, method="POST" if body is not None else "GET")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post(url: str, body: bytes, token: str | None = TOKEN, path: str = "/measure") -> tuple[int, dict]:
    return call(url, body, token, path)


def get(url: str, token: str | None = TOKEN, path: str = "/info", context=None) -> tuple[int, dict]:
    return call(url, None, token, path, context=context)


_GOOD = {}


def good_body(seed: int = 0) -> bytes:
    if "model" not in _GOOD:
        _GOOD["model"] = onnx_bytes(8)
    return encode_measure([("ok", _GOOD["model"], SHAPE)], FAST, seed)


def assert_serves(server) -> None:
    status, answer = post(server.url, good_body())
    assert status == 200, answer
    assert answer["results"]["ok"]["latency_ms"] > 0


def read_lines_until(proc: subprocess.Popen, marker: str, timeout: float = 90.0) -> list[str]:
    """stdout lines of ``proc`` up to the first one containing ``marker`` (bounded wait)."""
    lines, buffer = [], b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            lines.append(line.decode())
            if marker in lines[-1]:
                return lines
    raise AssertionError(f"no line with {marker!r} from pid {proc.pid}: {lines}; "
                         f"stderr: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else '(running)'}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started by a test: SIGTERM (it stops its measuring child), then SIGKILL by pid."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
