"""``hwnas quantize`` on an export, and exports of archs that run layers in int8."""
import json

import numpy as np
import onnx
import pytest

from nas.accuracy import TrainSettings, calibration_inputs, seeded_build, train_candidate
from nas.cli import main
from nas.data import load_dataset
from nas.export import export_int8, export_model
from search_spaces import make_space
from tests.hardware.test_quantize import weight_scale_sizes

#: int8 against fp32 top-1 agreement of the fixture's model: it trains 2 epochs (64-76% held-out
#: accuracy), so many images are near-ties that any rounding flips, and how many flip depends on
#: the CPU's int8 kernels (0.84-0.89 on an AMD EPYC with AVX-512 VNNI, above 0.9 on a Xeon with AMX)
TOP1_AGREEMENT = 0.8

OPTIONS = {"resolutions": [32], "widths": [1.0], "depths": [2], "kernels": [3], "expansions": [4], "num_classes": 10}


@pytest.fixture(scope="module")
def trained():
    space = make_space("mbv3", **OPTIONS)  # float only, as the quickstart's space
    arch = space.sample(np.random.default_rng(0))
    splits = load_dataset("digits", 32)
    model = seeded_build(space, arch, 0)
    accuracy = train_candidate(model, splits, TrainSettings(epochs=2, batch_size=32, lr=0.01, threads=2), 0)
    return space, arch, model.eval(), splits, accuracy


def test_an_int8_arch_exports_its_quantized_model(trained, tmp_path):
    _, float_arch, model, splits, _ = trained
    space = make_space("mbv3", **OPTIONS, precisions=["fp32", "int8"])
    arch = space.with_precisions(space.parse(str(float_arch)), {"head": "int8", "s4.l1": "int8"})
    export_model(space, model, arch, tmp_path, {"accuracy": 1.0}, "train", "digits",
                 calibration=calibration_inputs(splits.train))
    record = json.loads((tmp_path / "arch.json").read_text())
    assert record["arch"] == str(arch) and record["int8"]["modules"] == list(space.int8_modules(arch))
    assert record["int8"]["calibration"] == "accuracy source's training slice"
    assert record["int8"]["top1_agreement"] >= TOP1_AGREEMENT
    quantized = onnx.load(tmp_path / "model.int8.onnx")
    assert any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    assert not any(n.op_type == "QuantizeLinear" for n in onnx.load(tmp_path / "model.onnx").graph.node)
    assert {p.key: p.value for p in quantized.metadata_props}["arch"] == str(arch)
    assert "model.int8.onnx" in (tmp_path / "README.md").read_text()
    # a per-tensor target's model: one scale per kernel, and the scheme says so
    info = export_int8(space, model, arch, tmp_path / "per_tensor.onnx", calibration_inputs(splits.train),
                       {"arch": str(arch)}, "per_tensor")
    assert "per-tensor" in info["scheme"] and info["top1_agreement"] >= TOP1_AGREEMENT
    assert weight_scale_sizes((tmp_path / "per_tensor.onnx").read_bytes()) == {1}
    assert max(weight_scale_sizes((tmp_path / "model.int8.onnx").read_bytes())) > 1


def test_quantize_picks_an_assignment_within_the_budget(trained, tmp_path, capsys):
    space, arch, model, _, accuracy = trained
    export_model(space, model, arch, tmp_path, {"accuracy": accuracy}, "train", "digits")
    args = ["quantize", str(tmp_path), "--batches", "1", "--samples", "2", "--rounds", "2"]
    assert main(args + ["--max-drop", "100"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "quantize.json").read_text())
    units = list(make_space("mbv3", **OPTIONS, precisions=["fp32", "int8"]).precision_units(
        make_space("mbv3", **OPTIONS, precisions=["fp32", "int8"]).parse(str(arch))))
    assert sorted(report["order"]) == sorted(units) and set(report["sensitivity"]) == set(units)
    # any drop is within a 100-point budget: every unit fits, and the fastest feasible is chosen
    assert report["longest_within_budget"] == len(units)
    assert report["accuracy"]["fp32"] == pytest.approx(accuracy)
    assert all(v["latency_ms"] > 0 for v in report["bisection"].values())
    chosen = report["bisection"][str(report["int8_units"])]["latency_ms"]
    assert chosen == min(v["latency_ms"] for v in report["bisection"].values())
    assert report["arch"].count("_int8") == report["int8_units"] and "fp32" in out
    if report["int8_units"]:
        assert (tmp_path / "model.mixed.onnx").is_file()
    # the printed order, as a space option, makes a search that proposes exactly its prefixes
    printed = out.split("precision_order: [")[1].split("]")[0].split(", ")
    assert printed == report["order"]
    ordered = make_space("mbv3", **OPTIONS, precisions=["fp32", "int8"], precision_granularity="ordered",
                         precision_order=printed)
    assert str(ordered.parse(report["arch"])) == report["arch"]
    assert ordered.encode(ordered.parse(report["arch"]))["int8_units"] == report["int8_units"]
    # a zero budget keeps only what loses nothing
    assert main(args + ["--max-drop", "0"]) == 0
    report = json.loads((tmp_path / "quantize.json").read_text())
    assert report["accuracy"]["mixed"] >= report["accuracy"]["fp32"]
    # a per-tensor target: the scheme is recorded with the result
    assert main(args + ["--max-drop", "100", "--weights", "per_tensor"]) == 0
    report = json.loads((tmp_path / "quantize.json").read_text())
    assert "per-tensor" in report["int8_scheme"] and report["runner"]["extra"]["int8_weights"] == "per_tensor"


def test_quantize_errors_name_the_problem(trained, tmp_path, capsys):
    space, arch, model, _, _ = trained
    assert main(["quantize", str(tmp_path)]) == 2
    assert "neither an export folder" in capsys.readouterr().err
    export_model(space, model, arch, tmp_path, {}, "random-init", None)
    assert main(["quantize", str(tmp_path)]) == 2
    assert "names no dataset" in capsys.readouterr().err
    nb201 = make_space("nb201")
    nb_arch = nb201.sample(np.random.default_rng(0))
    export_model(nb201, nb201.build(nb_arch), nb_arch, tmp_path / "nb", {}, "random-init", "digits")
    assert main(["quantize", str(tmp_path / "nb")]) == 2
    assert "no precision axis" in capsys.readouterr().err
