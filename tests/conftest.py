"""Shared fixtures. Every test gets its own HWNAS_HOME so stores never leak between tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.hardware.remote.helpers import AGENT_KIND, pythonpath_without

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests share 2 cores with each other's subprocesses; torch's default of one
    thread per core oversubscribes them and turns milliseconds into minutes.
    Runners under test set their own thread counts explicitly."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "hwnas_home"))


@pytest.fixture
def start_agent(tmp_path):
    """``start_agent(url, *options) -> Popen``: an agent as on a device, where ``import torch``
    fails (the light distribution has none); every agent started is killed by pid at the end."""
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "PYTHONPATH": pythonpath_without("torch", tmp_path / "no_torch")}

    def start(url: str, *options: str) -> subprocess.Popen:
        log = tmp_path / f"agent{len(procs)}"
        proc = subprocess.Popen([sys.executable, "-m", "hardware.remote.agent", "--store", url, "--device", AGENT_KIND,
                                 "--threads", "1", "--poll-s", "0.1", *options], cwd=tmp_path, env=env,
                                stdout=open(f"{log}.out", "wb"), stderr=open(f"{log}.err", "wb"))
        proc.out, proc.err = Path(f"{log}.out"), Path(f"{log}.err")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public latency tables not found at {SHARED_DATA}")
    return SHARED_DATA


def onboarded_home(tmp_path_factory, *commands):
    """Body of a module-scoped fixture: a fresh HWNAS_HOME in which every ``hwnas`` command of
    ``commands`` (e.g. ``device add ...``) succeeded, shared by the module's tests (which must
    also point HWNAS_HOME at it: the suite gives every test its own)."""
    from nas.cli import main

    home = tmp_path_factory.mktemp("hwnas_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("HWNAS_HOME", str(home))
    try:
        for command in commands:
            assert main(command) == 0, command
        yield home
    finally:
        mp.undo()


def tiny_recipe(tmp_path: Path, **changes) -> dict:
    """A search recipe small enough for a unit test (seconds on 2 cores)."""
    recipe = {
        "name": "tiny",
        "seed": 0,
        "space": {"name": "mbv3", "resolutions": [32], "widths": [0.5], "depths": [2],
                  "kernels": [3, 5], "expansions": [3, 4], "num_classes": 10},
        "latency": {"runner": "onnxruntime", "threads": 1, "rounds": 3, "repeats": 1, "target_ms": 2},
        "accuracy": {"train": "digits", "epochs": 1, "batch_size": 128, "threads": 1},
        "search": {"controller": "random", "trials": 4, "batch_size": 2},
        "output": str(tmp_path / "run"),
        "store": str(tmp_path / "store.db"),
    }
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            recipe[section][sub] = value
        else:
            recipe[section] = value
    return recipe


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (initdb + pg_ctl in a temporary folder, 127.0.0.1),
    stopped by its pid after the session.  Skipped where the server is not installed,
    except under ``HWNAS_REQUIRE_POSTGRES=1`` (``.ci/run``), where that is a failure."""
    from hardware.postgres import PostgresUnavailable, ThrowawayPostgres

    server = ThrowawayPostgres()
    try:
        server.start()
    except PostgresUnavailable as exc:
        if os.environ.get("HWNAS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server, request) -> str:
    """URL of a fresh database on the session's PostgreSQL server, one per test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    name = f"{name}_{uuid.uuid4().hex[:6]}"
    return postgres_server.create_database(name)
