"""``hwnas device add`` end to end on this machine (tiny networks, few samples) and the
``device`` latency source that recipes use afterwards."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hardware.store import MeasurementStore, space_key
from nas.cli import main
from nas.devices import list_devices
from nas.sources import LATENCY_SOURCES, DeviceLatency, RunContext, make_source
from predictors import load_predictor
from predictors.mixture import sample_pool
from search_spaces import make_space
from tests.conftest import onboarded_home

SPACE_OPTIONS = {"resolutions": [32], "num_classes": 10, "depths": [1, 2]}
ADD = ["device", "add", "tiny", "--runner", "onnxruntime", "--threads", "1", "--space", "mbv3",
       "--space-option", "resolutions=[32]", "--space-option", "num_classes=10", "--space-option", "depths=[1,2]",
       "--samples", "4", "--holdout", "3", "--pool", "9", "--rounds", "1", "--no-progress"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    # same runner and fingerprint under a second name: its measurements come from the store
    mixture = [a if a != "tiny" else "tiny-t" for a in ADD] + ["--predictor", "mixture"]
    yield from onboarded_home(tmp_path_factory, ADD, mixture)


@pytest.fixture(autouse=True)
def _device_home(home, monkeypatch):
    # the suite's conftest gives every test a fresh HWNAS_HOME; these tests share the onboarded one
    monkeypatch.setenv("HWNAS_HOME", str(home))


def context(home: Path, store: MeasurementStore, **space_overrides) -> RunContext:
    space = make_space("mbv3", **{**SPACE_OPTIONS, **space_overrides})
    return RunContext(space, store, home / "run", seed=0, progress=False)


def test_add_saves_record_predictor_and_measurements(home, capsys):
    folder = home / "devices" / "tiny"
    record = json.loads((folder / "device.json").read_text())
    assert record["runner"] == "onnxruntime" and record["samples"] == 4 and record["holdout"] == 3
    # the default adapts both predictors and keeps the one that cross-validates best on the references
    choice = record["quality"]["choice"]
    assert choice["requested"] == "auto" and set(choice["cross_validated"]) == {"fewshot", "mixture"}
    assert record["predictor_kind"] in ("fewshot", "mixture")
    assert record["predictor_kind"] == record["quality"]["method"] and (folder / "predictor.npz").is_file()
    assert load_predictor(folder / "predictor.npz").name == record["predictor_kind"]
    held = record["quality"]["heldout"]
    # tiny nets timed once on a shared machine: a row can be a real outlier (named, left out)
    outliers = record["quality"]["outliers"]
    assert 3 - len(outliers) <= held["count"] <= 3 and np.isfinite(held["mape"])
    assert record["quality"]["samples"] == 7 - len(outliers)
    assert record["quality"]["cross_validated"]["count"] == 7 - len(outliers)
    rows = list(csv.DictReader(open(folder / "measurements.csv")))
    assert len(rows) == 7 and all(float(r["latency_ms"]) > 0 for r in rows)
    assert list_devices(home) == ["tiny", "tiny-t"]
    assert main(["device", "list"]) == 0
    assert "tiny: mbv3, onnxruntime" in capsys.readouterr().out
    with MeasurementStore(home / "measurements.db") as store:
        key, fingerprint = store.device("tiny")
        assert key == record["source_key"]
        assert {k: fingerprint[k] for k in record["fingerprint"]} == record["fingerprint"]


@pytest.mark.parametrize("name", ["tiny", "tiny-t"])
def test_device_source_prefers_measurements_and_predicts_the_rest(home, name):
    rows = list(csv.DictReader(open(home / "devices" / name / "measurements.csv")))
    with MeasurementStore(home / "measurements.db") as store:
        ctx = context(home, store)
        source = make_source({"device": name}, LATENCY_SOURCES, ctx, "latency")
        assert isinstance(source, DeviceLatency) and source.metrics == {"latency_ms": "minimize"}
        measured = [ctx.space.parse(r["arch"]) for r in rows]
        got = source.evaluate(measured)
        np.testing.assert_allclose([m["latency_ms"] for m in got], [float(r["latency_ms"]) for r in rows],
                                   atol=1e-6, rtol=0)  # the CSV keeps 6 decimals
        fresh = [a for a in sample_pool(ctx.space, 40, seed=99) if str(a) not in {r["arch"] for r in rows}][:3]
        predicted = [m["latency_ms"] for m in source.evaluate(fresh)]
        assert all(np.isfinite(p) and p > 0 for p in predicted)
        # the search re-measures its front on the real device; afterwards those numbers win
        remeasured = source.remeasure(fresh[:2])
        assert len(remeasured) == 2 and all(m["latency_ms"] > 0 for m in remeasured)
        again = source.evaluate(fresh[:2])
        stored = store.get_many(source.key, space_key(ctx.space), [str(a) for a in fresh[:2]], reliable_only=False)
        assert [m["latency_ms"] for m in again] == [stored[str(a)]["latency_ms"] for a in fresh[:2]]
        assert source.fingerprint()["device"] == name


def test_store_refuses_another_fingerprint_under_the_name(home, capsys):
    assert main(ADD) == 2
    assert "already exists" in capsys.readouterr().err
    changed = [a if a != "1" or ADD[i - 1] != "--threads" else "2" for i, a in enumerate(ADD)]
    assert main(changed + ["--replace"]) == 2
    assert "registered with fingerprint" in capsys.readouterr().err


def test_bad_device_references_are_clear_errors(home):
    with MeasurementStore(home / "measurements.db") as store:
        with pytest.raises(ValueError, match="unknown device 'nope'.*known devices: tiny, tiny-t"):
            make_source({"device": "nope"}, LATENCY_SOURCES, context(home, store), "latency")
        other = RunContext(make_space("mobiledet"), store, home / "run", progress=False)
        with pytest.raises(ValueError, match="onboarded for space 'mbv3'"):
            make_source({"device": "tiny"}, LATENCY_SOURCES, other, "latency")
        with pytest.raises(ValueError, match=r"latency\.trheads: unknown key"):
            make_source({"device": "tiny", "trheads": 1}, LATENCY_SOURCES, context(home, store), "latency")
        with pytest.raises(ValueError, match="bad device name"):
            DeviceLatency.from_recipe("../etc", {}, context(home, store))


def test_search_on_an_onboarded_device_reports_predicted_vs_measured(home, tmp_path):
    from nas.search import run_search

    recipe = {
        "name": "on-device", "seed": 0,
        "space": {"name": "mbv3", **SPACE_OPTIONS},
        "latency": {"device": "tiny"},
        "accuracy": {"train": "digits", "epochs": 1, "batch_size": 128},
        "search": {"controller": "random", "trials": 3, "batch_size": 3},
        "output": str(tmp_path / "run"), "store": str(home / "measurements.db"),
    }
    result = run_search(recipe, progress=False)
    assert result.front and result.remeasured is not None
    # the front and the next ones in line (here: all 3 trials), measured in one batch
    assert len(result.remeasured) == 3
    assert {r["arch"] for r in result.search_front} <= {r["arch"] for r in result.remeasured}
    assert result.agreement["latency_ms"]["count"] == 3
    for row in result.remeasured:
        assert row["predicted_latency_ms"] > 0 and row["measured_latency_ms"] > 0
    assert (result.run_dir / "front_remeasured.csv").is_file()


def test_an_explicit_predictor_is_adapted_without_a_choice(home):
    record = json.loads((home / "devices" / "tiny-t" / "device.json").read_text())
    assert record["predictor_kind"] == "mixture" and "choice" not in record["quality"]
    assert record["quality"]["mixture_method"] in ("mixture", "single")


def test_add_reports_cross_validated_quality_and_keeps_the_pool_features(home):
    for name in ("tiny", "tiny-t"):
        cv = json.loads((home / "devices" / name / "device.json").read_text())["quality"]["cross_validated"]
        assert set(cv["predictor"]) == set(cv["macs_proxy"]) == {"spearman", "mape"}
        assert cv["seed"] == 0 and isinstance(cv["better_than_macs"], bool)
    # both adds sampled the same pool: the second read the first one's features
    assert len(list((home / "cache" / "pool_features").glob("mbv3-*.json"))) == 1
