"""``hwnas device add --runner slm``: a token model's device onboarded for decode and
prefill latency and memory at once, and searched through ``latency: {device: NAME}``."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hardware.store import MeasurementStore
from nas.cli import main
from nas.onboarding import TOKEN_PRIOR_VARIANTS
from nas.sources import LATENCY_SOURCES, DeviceLatency, RunContext, make_source
from predictors import MultiMetricPredictor, load_predictor
from predictors.mixture import sample_pool
from search_spaces import make_space
from tests.conftest import onboarded_home
from tests.hardware.remote.helpers import AGENT_KIND

SPACE = {"widths": [32, 48], "heads": [2], "kv_heads": [1], "depths": [2, 3], "chunk_size": 16,
         "seq_len": 32, "context_len": 64}
METRICS = ["prefill_ms", "decode_ms", "memory_mb"]
ADD = ["device", "add", "slm-tiny", "--runner", "slm", "--threads", "1", "--space", "hybrid_slm",
       *[x for k, v in SPACE.items() for x in ("--space-option", f"{k}={json.dumps(v)}")],
       "--runner-option", "prompt_len=32", "--runner-option", "context_len=64",
       "--runner-option", "target_ms=2", "--runner-option", "repeats=1",
       "--samples", "5", "--holdout", "3", "--pool", "12", "--rounds", "1", "--no-progress"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from onboarded_home(tmp_path_factory, ADD)


@pytest.fixture(autouse=True)
def _device_home(home, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(home))


def test_add_adapts_one_predictor_per_metric(home, capsys):
    folder = home / "devices" / "slm-tiny"
    record = json.loads((folder / "device.json").read_text())
    assert record["runner"] == "slm" and record["metrics"] == METRICS
    assert record["source_fingerprint"]["kind"] == "slm"
    for metric in METRICS:
        quality = record["quality"]["metrics"][metric]
        assert quality["heldout"]["count"] == 3 and np.isfinite(quality["heldout"]["mape"])
        assert quality["cross_validated"]["count"] == 8 and quality["samples"] == 8
    predictor = load_predictor(folder / "predictor.npz")
    assert isinstance(predictor, MultiMetricPredictor) and list(predictor.metrics) == METRICS
    assert predictor.adapted_to_device
    # the priors were meta-trained on the shipped tables (measured configurations + analytic)
    assert any(d.startswith("slm_t") for d in predictor.members["decode_ms"].devices)
    for metric in ("decode_ms", "prefill_ms"):
        # auto: each metric's prior variant chosen by cross-validation on the references, and saved
        choice = record["quality"]["choice"][metric]
        assert set(choice["cross_validated"]) == set(TOKEN_PRIOR_VARIANTS)
        analytic = [d for d in predictor.members[metric].devices if d.startswith("analytic_")]
        assert (not analytic) == (choice["prior"] == "fewshot-tables-only")
    rows = list(csv.DictReader(open(folder / "measurements.csv")))
    assert len(rows) == 8 and set(rows[0]) == {"arch", *METRICS}
    assert main(["device", "list"]) == 0
    assert "slm-tiny: hybrid_slm, slm-decode" in capsys.readouterr().out


def test_device_source_supplies_every_metric(home):
    rows = list(csv.DictReader(open(home / "devices" / "slm-tiny" / "measurements.csv")))
    with MeasurementStore(home / "measurements.db") as store:
        ctx = RunContext(make_space("hybrid_slm", **SPACE), store, home / "run", progress=False)
        source = make_source({"device": "slm-tiny"}, LATENCY_SOURCES, ctx, "latency")
        assert isinstance(source, DeviceLatency) and list(source.metrics) == METRICS
        assert list(DeviceLatency.metrics_of(source.options)) == METRICS
        measured = source.evaluate([r["arch"] for r in rows])
        for row, got in zip(rows, measured):
            assert got == pytest.approx({m: float(row[m]) for m in METRICS}, abs=1e-6)
        fresh = [a for a in sample_pool(ctx.space, 40, seed=7) if str(a) not in {r["arch"] for r in rows}][:3]
        for got in source.evaluate(fresh):
            assert set(got) == set(METRICS) and all(v > 0 and np.isfinite(v) for v in got.values())
        again = source.remeasure(fresh[:1])
        assert set(again[0]) == set(METRICS) and again[0]["decode_ms"] > 0


def test_search_on_the_device_optimises_decode_and_prefill_and_remeasures(home, tmp_path):
    from nas.search import run_search

    recipe = {
        "name": "slm-on-device", "seed": 0,
        "space": {"name": "hybrid_slm", **SPACE},
        "latency": {"device": "slm-tiny"},
        "accuracy": {"lm": "stdlib", "tokens": 1024, "val_tokens": 512, "max_bytes": 40000, "seq_len": 32,
                     "batch_size": 4},
        "search": {"controller": "random", "trials": 3, "batch_size": 3,
                   "objectives": ["val_loss", "decode_ms", "prefill_ms"], "constraints": {"memory_mb": 1000.0}},
        "output": str(tmp_path / "run"), "store": str(home / "measurements.db"),
    }
    result = run_search(recipe, progress=False)
    assert result.front and result.remeasured is not None
    assert set(result.agreement) == set(METRICS)
    for row in result.remeasured:
        assert row["predicted_decode_ms"] > 0 and row["measured_decode_ms"] > 0
        assert row["predicted_prefill_ms"] > 0 and row["measured_prefill_ms"] > 0


def test_predict_writes_every_metric(home, tmp_path):
    archs = tmp_path / "archs.txt"
    space = make_space("hybrid_slm", **SPACE)
    archs.write_text("\n".join(str(a) for a in sample_pool(space, 3, seed=3)) + "\n")
    out = tmp_path / "pred.csv"
    assert main(["predictor", "predict", "--checkpoint", str(home / "devices" / "slm-tiny" / "predictor.npz"),
                 "--archs", str(archs), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 3 and list(rows[0]) == ["arch", *METRICS]


def test_token_model_refuses_the_mixture_predictor(home, capsys):
    assert main([a if a != "slm-tiny" else "other" for a in ADD] + ["--predictor", "mixture"]) == 2
    assert "onboards the fewshot predictor" in capsys.readouterr().err


def test_add_through_the_pull_farm_times_the_graphs_on_an_agent(pg_url, start_agent, home, capsys):
    """``device add --runner slm`` with ``slm=farm``: the prefill and decode-step graphs travel as
    ONNX jobs to a device agent that cannot import torch, as on a phone; all three metrics are
    adapted and the device's runtime is recorded."""
    agent = start_agent(pg_url)
    # the throwaway server trusts loopback, so a password in the URL is not needed, only kept out of files
    url = pg_url.replace("://hwnas@", "://hwnas:s3cret-pw@")
    farm = ["--runner-option", "slm=farm", "--runner-option", f"kind={AGENT_KIND}", "--runner-option", f"store={url}",
            "--runner-option", "timeout_s=60", "--runner-option", "poll_s=0.1"]
    command = [a if a != "slm-tiny" else "slm-farm" for a in ADD] + farm
    assert main(command) == 0, capsys.readouterr().err
    record = json.loads((home / "devices" / "slm-farm" / "device.json").read_text())
    assert record["metrics"] == METRICS and record["runner_options"]["slm"] == "farm"
    assert record["runner_options"]["store"] == pg_url  # the password is not written
    assert "s3cret" not in (home / "devices" / "slm-farm" / "device.json").read_text()
    engine = record["source_fingerprint"]["engine"]
    assert engine["runner"] == "onnxruntime" and engine["threads"] == 1
    assert record["fingerprint"]["runner"] == "onnxruntime"  # what device list shows: the device's runtime
    for metric in METRICS:
        assert record["quality"]["metrics"][metric]["cross_validated"]["count"] == 8
    # the agent measured them: prefill and decode graphs of the 8 measured archs, in jobs
    with MeasurementStore(pg_url) as jobs:
        with jobs.engine.connect() as conn:
            states = dict(conn.exec_driver_sql("SELECT state, count(*) FROM jobs GROUP BY state").all())
    assert set(states) == {"done"} and states["done"] >= 2
    assert agent.poll() is None  # serving on


def test_a_token_models_prior_keeps_to_the_devices_timing_engine():
    """PyTorch eager and the exported graphs on ONNX Runtime time decode differently at these
    sizes: a device's prior is trained on its own engine's configurations, on every engine's
    only when its own has too few."""
    from nas.onboarding import timing_engine, token_model_priors
    from predictors.source_tables import TABLE_SPACES, load_tables

    tables = load_tables("hybrid_slm")
    space = make_space("hybrid_slm", **TABLE_SPACES["hybrid_slm"])
    configs = tables.provenance["configs"]
    eager = configs["slm_t1_b1_p256_c2048"]["fingerprint"]
    onnx = configs["slm_onnxruntime_t1_b1_p256_c2048"]["fingerprint"]
    assert (timing_engine(eager), timing_engine(onnx)) == ("eager", "onnxruntime")
    for fingerprint, kept in ((eager, "slm_t"), (onnx, "slm_onnxruntime_")):
        prior = token_model_priors(space, ["decode_ms"], fingerprint, 0, analytic_per_family=0)["decode_ms"]
        own = [c for c in tables.configs if c.startswith(kept)]
        assert sorted(prior.devices) == sorted(set(own) - set(tables.configs_measured_as(fingerprint)))
    # a runtime no table was timed with (a TensorRT device): every configuration teaches
    tensorrt = {**onnx, "engine": {**onnx["engine"], "runner": "tensorrt"}}
    prior = token_model_priors(space, ["decode_ms"], tensorrt, 0, analytic_per_family=0)["decode_ms"]
    assert sorted(prior.devices) == sorted(tables.configs)
