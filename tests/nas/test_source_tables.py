"""``hwnas predictor tables``: measuring the shipped source tables, resumably."""
from __future__ import annotations

import json

import pytest

from nas.cli import main
from nas.source_tables import configs_of
from predictors.source_tables import PROVENANCE, config_name, load_tables

CONFIGS = "slm_t1_b1_p64_c512,slm_t1_b4_p64_c512"


def test_build_writes_tables_and_provenance_and_resumes_from_the_store(tmp_path):
    command = ["predictor", "tables", "--space", "hybrid_slm", "--archs", "20", "--configs", CONFIGS,
               "--rounds", "1", "--out", str(tmp_path / "out"), "--store", str(tmp_path / "m.db"), "--no-progress"]
    assert main(command) == 0
    tables = load_tables("hybrid_slm", tmp_path / "out")
    assert tables.configs == CONFIGS.split(",") and set(tables.metrics) == {"decode_ms", "prefill_ms", "memory_mb"}
    provenance = json.loads((tmp_path / "out" / "hybrid_slm" / PROVENANCE).read_text())
    assert provenance["archs"] == 20 and provenance["versions"]["torch"] and provenance["machine"]["cpu"]
    first = {m: (tmp_path / "out" / "hybrid_slm" / f"{m}.csv").read_text() for m in tables.metrics}
    # a second build (e.g. after a kill) reads every measurement back from the store: timed
    # again, the six significant digits written would differ
    assert main(command) == 0
    assert {m: (tmp_path / "out" / "hybrid_slm" / f"{m}.csv").read_text() for m in tables.metrics} == first


def test_bad_requests_name_what_is_wrong(tmp_path, capsys):
    base = ["predictor", "tables", "--out", str(tmp_path), "--store", str(tmp_path / "m.db"), "--no-progress"]
    assert main(base + ["--space", "nb201"]) == 2
    assert "no table space for 'nb201'" in capsys.readouterr().err
    assert main(base + ["--space", "hybrid_slm", "--configs", "slm_t9_b1"]) == 2
    assert "unknown configuration(s) ['slm_t9_b1']" in capsys.readouterr().err
    assert main(base + ["--space", "hybrid_slm", "--archs", "5"]) == 2
    assert "--archs must be >= 20" in capsys.readouterr().err
    assert not (tmp_path / "hybrid_slm").exists()


@pytest.mark.parametrize("space,count", [("hybrid_slm", 12), ("mbv3", 12), ("mobiledet", 12)])
def test_every_configuration_is_named_by_its_options(space, count):
    configs = configs_of(space)
    assert len(configs) == count and all(config_name(options) == name for name, options in configs.items())
    # int8 where a runner has an int8 path (ONNX Runtime's), named so; float32 stays unnamed
    int8 = [name for name, options in configs.items() if options.get("dtype") == "int8"]
    assert all(name.startswith("onnxruntime_") and name.endswith("_int8") for name in int8)
    assert len(int8) == (4 if space != "hybrid_slm" else 0)
    # token models: PyTorch eager, and the exported graphs on ONNX Runtime (a farm device's runtime)
    engines = [options["slm"] for options in configs.values() if "slm" in options]
    assert engines == (["onnxruntime"] * 4 if space == "hybrid_slm" else [])
