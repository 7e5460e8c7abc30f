"""The device side without torch: the server path's imports, a server run with torch made
unimportable, the light distribution (device/), and the two command lines."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hardware.remote import DeviceClient
from tests.hardware.remote.helpers import FAST, SHAPE, onnx_bytes, pythonpath_without, read_lines_until, stop

REPO = Path(__file__).resolve().parents[3]

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


@pytest.fixture
def no_torch_env(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = pythonpath_without("torch", tmp_path / "blocker")
    env.pop("HWNAS_DEVICE_TOKEN", None)
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode != 0 and "not installed on this device" in check.stderr
    return env


def test_server_measures_with_torch_unimportable(tmp_path, no_torch_env):
    """hwnas-device (python -m hardware.remote) in a process, and its measuring child, where
    ``import torch`` fails; the token comes from a file and is never printed."""
    token = "file-token-0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    proc = subprocess.Popen([sys.executable, "-m", "hardware.remote", "--token-file", str(token_file), "--port", "0",
                             "--max-measure-s", "5", "--max-memory-mb", "2048"],
                            cwd=tmp_path, env=no_torch_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = read_lines_until(proc, "token:")
        url = lines[0].rsplit(" at ", 1)[1]
        assert url.startswith("http://127.0.0.1:")
        assert lines[-1] == f"token: from the file {token_file}" and all(token not in line for line in lines)
        answer = DeviceClient(url, token, retries=0).measure([("ok", onnx_bytes(8), SHAPE)], FAST, 0)
        assert answer["results"]["ok"]["latency_ms"] > 0
    finally:
        stop(proc)
    assert proc.returncode == 0


def test_hwnas_serve_device_takes_the_new_options_and_hides_an_environment_token(tmp_path):
    token = "env-token-0123456789"
    env = dict(os.environ, HWNAS_DEVICE_TOKEN=token)
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "serve-device", "--port", "0", "--max-measure-s", "5",
                             "--max-memory-mb", "2048", "--max-cpu-s", "20", "--max-connections", "8",
                             "--handshake-timeout-s", "3"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = read_lines_until(proc, "token:")
        assert lines[-1] == "token: from $HWNAS_DEVICE_TOKEN" and all(token not in line for line in lines)
        url = lines[0].rsplit(" at ", 1)[1]
        limits = DeviceClient(url, token, retries=0).info()["limits"]
        assert (limits["max_measure_s"], limits["max_memory_mb"], limits["max_cpu_s"], limits["max_connections"],
                limits["max_handshake_s"]) == (5, 2048, 20, 8, 3)
    finally:
        stop(proc)


def test_a_group_readable_token_file_is_refused(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789")
    os.chmod(token_file, 0o644)
    out = subprocess.run([sys.executable, "-m", "hardware.remote", "--token-file", str(token_file), "--port", "0"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2 and "chmod 600" in out.stderr and "file-token" not in out.stdout + out.stderr


def _options(parser: argparse.ArgumentParser) -> dict[str, object]:
    return {a.dest: a.default for a in parser._actions if a.dest != "help"}


def test_hwnas_serve_device_and_hwnas_device_have_the_same_options():
    from hardware.remote.server import add_serve_arguments
    from nas.cli import build_parser

    device = argparse.ArgumentParser()
    add_serve_arguments(device)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve-device"]
    assert {k: v for k, v in _options(serve).items() if k != "func"} == _options(device)


def test_light_distribution_needs_only_onnx_onnxruntime_numpy():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((REPO / "device" / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "hwnas-device"
    assert sorted(d.split(">")[0] for d in meta["dependencies"]) == ["numpy", "onnx", "onnxruntime"]
    assert meta["scripts"] == {"hwnas-device": "hardware.remote.server:main"}
    main = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert main["scripts"]["hwnas-device"] == "hardware.remote.server:main"


def test_light_distribution_builds_a_wheel_without_the_rest_of_hwnas(tmp_path):
    """Build hwnas-device from a copy of the sources (so nothing is written into the checkout)."""
    pytest.importorskip("setuptools")
    import shutil

    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(REPO / "hardware", src / "hardware", ignore=ignore)
    shutil.copytree(REPO / "device", src / "device", ignore=ignore)
    shutil.copytree(REPO / "nas", src / "nas", ignore=ignore)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                          "-w", str(tmp_path / "wheels"), str(src / "device")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("hwnas_device-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert {"hardware/remote/server.py", "hardware/remote/worker.py", "nas/registry.py"} <= names
    assert not any(n.startswith(("nas/commands", "nas/cli", "search_spaces", "predictors")) for n in names)
    requires = sorted(line.split(":", 1)[1].split(">")[0].strip() for line in metadata.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert requires == ["numpy", "onnx", "onnxruntime"]
