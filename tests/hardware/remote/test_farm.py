"""The pull farm: device agents draining the job queue of a real PostgreSQL (``pg_url``: a
fresh database per test on a throwaway server), one SQLite store, and the ``farm`` runner.

Agents run as real subprocesses (``python -m hardware.remote.agent``), stopped by their pid
in a finalizer; every wait is bounded."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hardware.onnx_io import export_onnx
from hardware.protocol import Protocol
from hardware.remote.agent import Agent
from hardware.remote.farm import FarmRunner
from hardware.remote.queue import JobQueue
from hardware.remote.wire import Limits, RemoteError, encode_measure
from hardware.store import FingerprintMismatch, MeasurementStore
from search_spaces import make_space
from tests.hardware.remote import corpus
from tests.hardware.remote.helpers import AGENT_KIND, child_pids

SPACE = {"resolutions": [32], "widths": [0.5], "depths": [1], "kernels": [3], "expansions": [3],
         "num_classes": 10}
QUICK = Protocol(rounds=1, repeats=1, target_ms=1.0, warmup=1, max_iterations=5)
#: a job that takes seconds: long enough to kill its agent while it measures
SLOW = Protocol(rounds=8, repeats=1, target_ms=300.0, warmup=1, max_iterations=10000)
KIND = AGENT_KIND


@pytest.fixture(scope="module")
def mbv3_models():
    """Three tiny mbv3 networks as ONNX: ``[(key, bytes, input shape)]``."""
    space = make_space("mbv3", **SPACE)
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        arch = space.sample(rng)
        torch.manual_seed(i)
        example = space.example_input(arch, 1)
        out.append((f"a{i}", export_onnx(space.build(arch).eval(), example), tuple(example.shape)))
    return out


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def job_row(store: MeasurementStore, job_id: int) -> dict:
    return JobQueue(store).jobs([job_id])[job_id]


def done_lines(*procs) -> list[int]:
    return [int(m) for p in procs for m in re.findall(r"^job (\d+): done", p.out.read_text(), re.M)]


def test_two_agents_drain_40_jobs_exactly_once_and_a_killed_agents_job_moves_over(pg_url, mbv3_models,
                                                                                  start_agent):
    store = MeasurementStore(pg_url)
    queue = JobQueue(store)
    key, data, shape = mbv3_models[0]
    slow = queue.enqueue(KIND, encode_measure([("slow", data, shape)], SLOW, 0))
    ids = [slow] + [queue.enqueue(KIND, encode_measure([mbv3_models[i % 3]], QUICK, i)) for i in range(39)]
    first, second = start_agent(pg_url, "--lease-s", "3"), start_agent(pg_url, "--lease-s", "3")
    # whichever agent leases the slow job first dies while measuring it
    holder = until(lambda: job_row(store, slow)["agent"], 60, "the slow job to be leased")
    (victim,) = [p for p in (first, second) if holder.split(":")[1] == str(p.pid)]
    (measuring_child,) = child_pids(victim.pid)
    scratch = os.readlink(f"/proc/{measuring_child}/cwd")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    survivor = second if victim is first else first

    rows = queue.wait(ids, timeout_s=90, poll_s=0.1)
    assert all(rows[i]["state"] == "done" for i in ids), {i: r["state"] for i, r in rows.items()}
    assert rows[slow]["attempts"] == 2 and rows[slow]["agent"] != holder
    assert rows[slow]["answer"]["results"]["slow"]["latency_ms"] > 0
    assert all(set(rows[i]["answer"]["results"]) == {mbv3_models[n % 3][0]} for n, i in enumerate(ids[1:]))
    os.kill(survivor.pid, signal.SIGTERM)  # a clean stop marks the agent stopped
    assert survivor.wait(timeout=30) == 0, survivor.err.read_text()[-2000:]
    # exactly once: every job's answer was accepted once, the killed agent's job by the survivor
    assert sorted(done_lines(first, second)) == sorted(ids)
    # the killed agent still counts as alive until its heartbeat is stale; the stopped one does not
    assert [a["pid"] for a in queue.alive_agents(KIND)] == [victim.pid]
    # the killed agent's measuring child finished the slow job, had no one to answer, and
    # removed the scratch folder its dead agent could not
    until(lambda: not os.path.exists(scratch), 60, f"{scratch} to be removed")


def test_a_hostile_model_fails_with_serve_devices_words_and_the_agent_serves_on(pg_url, mbv3_models,
                                                                                start_agent):
    store = MeasurementStore(pg_url)
    queue = JobQueue(store)
    refused = queue.enqueue(KIND, encode_measure([("m", corpus.custom_domain(), corpus.SHAPE)], QUICK, 0))
    crashing = queue.enqueue(KIND, encode_measure([("m", corpus.runtime_fails(), corpus.SHAPE)], QUICK, 0))
    good = queue.enqueue(KIND, encode_measure([mbv3_models[0]], QUICK, 0))
    agent = start_agent(pg_url, "--max-attempts", "2", "--max-jobs", "4")
    assert agent.wait(timeout=60) == 0, agent.err.read_text()[-2000:]
    rows = queue.jobs([refused, crashing, good])
    # a refusal no retry changes ends the job at once, in serve-device's own words
    assert rows[refused]["state"] == "failed" and rows[refused]["attempts"] == 1
    assert "domain 'evil.ops'" in rows[refused]["error"]
    # a runtime failure is tried max_attempts times, then fails with the device's sentence
    assert rows[crashing]["state"] == "failed" and rows[crashing]["attempts"] == 2
    assert "the runtime failed while running model 'm'" in rows[crashing]["error"]
    assert rows[good]["state"] == "done" and rows[good]["answer"]["results"]["a0"]["latency_ms"] > 0


def test_sigterm_puts_the_job_being_measured_back_and_marks_the_agent_stopped(pg_url, mbv3_models,
                                                                              start_agent):
    store = MeasurementStore(pg_url)
    queue = JobQueue(store)
    key, data, shape = mbv3_models[0]
    slow = queue.enqueue(KIND, encode_measure([("slow", data, shape)], SLOW, 0))
    agent = start_agent(pg_url)
    until(lambda: job_row(store, slow)["state"] == "running", 60, "the slow job to be leased")
    os.kill(agent.pid, signal.SIGTERM)
    assert agent.wait(timeout=30) == 0, agent.err.read_text()[-2000:]
    row = job_row(store, slow)
    # back in the queue, and the interrupted try does not count against the job
    assert (row["state"], row["agent"], row["attempts"]) == ("queued", None, 0)
    assert queue.alive_agents(KIND, within_s=3600) == []
    assert "put back in the queue" in agent.err.read_text()


def test_a_runner_farm_recipe_section_measures_through_a_live_agent(pg_url, start_agent, tmp_path):
    from nas.sources.base import RunContext
    from nas.sources.runner import RunnerLatency

    # at most 2 models per job: a batch of 3 becomes 2 jobs linked by their shared first arch
    start_agent(pg_url, "--max-models", "2")
    space = make_space("mbv3", **{**SPACE, "kernels": [3, 5], "expansions": [3, 4, 6], "depths": [1, 2]})
    # no drift anchors: their MACs cost seconds on 2 cores (tests/nas/sources/test_runner.py has them)
    section = {"runner": "farm", "kind": KIND, "store": pg_url, "timeout_s": 60, "poll_s": 0.1,
               "rounds": 1, "repeats": 1, "target_ms": 1, "warmup": 1, "anchors": 0}
    options = RunnerLatency.parse_options(section, "recipe.yaml", "latency.", tmp_path)
    assert options.runner_options.kind == KIND and options.device is None
    store = MeasurementStore(pg_url)
    source = RunnerLatency(options, RunContext(space=space, store=store, run_dir=tmp_path, progress=False))
    try:
        archs = [space.sample(np.random.default_rng(seed)) for seed in (11, 12, 13)]
        assert len({str(a) for a in archs}) == 3
        metrics = source.evaluate(archs)
        assert all(m["latency_ms"] > 0 for m in metrics)
        assert source.fingerprint()["runner"] == "onnxruntime"
        with store.engine.connect() as conn:
            states = conn.exec_driver_sql("SELECT state, count(*) FROM jobs GROUP BY state").all()
        assert dict(states)["done"] >= 2 and set(dict(states)) == {"done"}
        # stored once: evaluating again queues nothing
        assert source.evaluate(archs) == metrics
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar() == dict(states)["done"]
    finally:
        source.close()


def test_no_agent_for_the_kind_is_a_clear_timeout_without_the_password(pg_url):
    url = pg_url.replace("://hwnas@", "://hwnas:s3cret-pw@")  # the test server trusts loopback
    runner = FarmRunner(kind="jetson-nano", store=url, timeout_s=0.5, poll_s=0.1)
    try:
        with pytest.raises(RemoteError) as err:
            runner.fingerprint()
    finally:
        runner.close()
    message = str(err.value)
    assert "no device agent for device kind 'jetson-nano' is alive" in message
    assert "none has reported in the last 0.5 s" in message
    assert "hwnas device-agent --store 'postgresql://hwnas:***@" in message and "--device jetson-nano" in message
    assert "s3cret" not in message
    # a recipe without the kind is refused naming the key, before anything runs
    from nas.options import RecipeError
    from nas.sources.runner import RunnerLatency

    with pytest.raises(RecipeError, match="latency: runner 'farm' needs kind"):
        RunnerLatency.parse_options({"runner": "farm", "store": url}, "recipe.yaml", "latency.", Path("."))


def test_the_queue_on_a_sqlite_store_with_one_agent(tmp_path, mbv3_models):
    path = tmp_path / "farm.db"
    queue = JobQueue(MeasurementStore(path))
    ids = [queue.enqueue(KIND, encode_measure([m], QUICK, 0)) for m in mbv3_models[:2]]
    with Agent(str(path), KIND, "onnxruntime", {"threads": 1}, Limits(max_measure_s=60), lease_s=30,
               poll_s=0.1) as agent:
        assert agent.run(max_jobs=2) == 2
        info = agent.device.info(1)
    rows = queue.jobs(ids)
    assert [rows[i]["state"] for i in ids] == ["done", "done"]
    assert rows[ids[1]]["answer"]["results"]["a1"]["latency_ms"] > 0
    # only the lease holder's word counts
    job = queue.enqueue(KIND, encode_measure([mbv3_models[0]], QUICK, 0))
    leased = queue.lease("agent-a", KIND, lease_s=30)
    assert leased.id == job and queue.lease("agent-b", KIND, lease_s=30) is None
    assert not queue.complete(job, "agent-b", {"results": {}})
    assert queue.release(job, "agent-a") and queue.jobs([job])[job]["attempts"] == 0
    # a kind is bound to one fingerprint
    other = {**info, "fingerprint": {**info["fingerprint"], "threads": 7}, "fingerprint_key": "different"}
    with pytest.raises(FingerprintMismatch, match=f"device kind '{KIND}' is served by agents measuring"):
        queue.register_agent("agent-c", KIND, other)
