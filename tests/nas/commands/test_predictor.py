"""``hwnas predictor pretrain|finetune|predict|eval``: the user-facing contract."""
import csv

import numpy as np
import pytest

from nas.cli import main
from predictors import load_predictor
from predictors.protocol import help_split
from predictors.protocol_data import load_protocol_table
from search_spaces import make_space


@pytest.fixture(scope="module")
def fbnet_table():
    space = make_space("fbnet")
    devices = list(help_split("fbnet").test)
    archs, columns = load_protocol_table(space, devices)
    return space, archs, columns, devices


def write_wide(path, archs, columns, devices, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "arch", *devices])
        for i in rows:
            w.writerow([i, str(archs[i]), *(columns[d][i] for d in devices)])


def test_pretrain_finetune_predict(tmp_path, fbnet_table, capsys):
    space, archs, columns, devices = fbnet_table
    data = tmp_path / "wide.csv"
    write_wide(data, archs, columns, devices, range(600))
    ckpt = tmp_path / "pre.npz"
    # meta-train on two devices, adapt to the third
    assert main(["predictor", "pretrain", "--space", "fbnet", "--data", str(data),
                 "--devices", "fpga,eyeriss", "--out", str(ckpt)]) == 0
    assert "meta-trained on 2 devices x 600 archs" in capsys.readouterr().out
    assert load_predictor(ckpt).devices == ["fpga", "eyeriss"]

    measured = tmp_path / "raspi4.csv"
    with open(measured, "w", newline="") as f:
        f.write("arch,latency_ms\n")
        for i in range(600, 620):
            f.write(f"{archs[i]},{columns['raspi4'][i]}\n")
    tuned = tmp_path / "raspi4.npz"
    assert main(["predictor", "finetune", "--checkpoint", str(ckpt), "--measurements", str(measured),
                 "--out", str(tuned)]) == 0
    assert "fine-tuned on 20 measurements" in capsys.readouterr().out

    query = tmp_path / "archs.txt"
    query.write_text("\n".join(str(a) for a in archs[1000:1300]) + "\n")
    out = tmp_path / "pred.csv"
    assert main(["predictor", "predict", "--checkpoint", str(tuned), "--archs", str(query),
                 "--out", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["arch", "latency_ms"] and len(rows) == 301
    assert [r[0] for r in rows[1:]] == [str(a) for a in archs[1000:1300]]
    predicted = np.array([float(r[1]) for r in rows[1:]])
    truth = columns["raspi4"][1000:1300]
    from scipy.stats import spearmanr
    assert spearmanr(predicted, truth)[0] > 0.9
    assert np.median(np.abs(predicted / truth - 1)) < 0.1  # milliseconds, not just ranks


def test_finetune_rejects_bad_measurements_naming_the_line(tmp_path, fbnet_table, capsys):
    _, archs, _, _ = fbnet_table
    bad = tmp_path / "bad.csv"
    bad.write_text(f"arch,latency_ms\n{archs[0]},3.5\n{archs[1]},-1\n")
    assert main(["predictor", "finetune", "--checkpoint", "fbnet", "--measurements", str(bad),
                 "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "latency_ms must be a positive" in err
    assert not (tmp_path / "x.npz").exists()


def test_eval_prints_per_device_spearman_and_mean(capsys):
    assert main(["predictor", "eval", "--space", "fbnet", "--protocol", "help", "--samples", "10",
                 "--seeds", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line.split() for line in out[2:]}
    assert set(table) == {"fpga", "raspi4", "eyeriss", "mean"}
    for device in ("fpga", "raspi4", "eyeriss"):
        assert 0.85 < float(table[device][1]) <= 1.0
    assert float(table["mean"][1]) == pytest.approx(np.mean([float(table[d][1]) for d in
                                                              ("fpga", "raspi4", "eyeriss")]), abs=1e-4)


def test_eval_refuses_a_checkpoint_trained_on_test_devices(tmp_path, fbnet_table, capsys):
    _, archs, columns, devices = fbnet_table
    data = tmp_path / "wide.csv"
    write_wide(data, archs, columns, devices, range(300))
    ckpt = tmp_path / "leaky.npz"
    assert main(["predictor", "pretrain", "--space", "fbnet", "--data", str(data), "--devices", "fpga,raspi4",
                 "--out", str(ckpt)]) == 0
    assert main(["predictor", "eval", "--space", "fbnet", "--checkpoint", str(ckpt), "--seeds", "1"]) == 2
    assert "meta-trained on test device(s) ['fpga', 'raspi4']" in capsys.readouterr().err


def test_lut_is_built_from_measurements_with_one_command(tmp_path, capsys):
    options = ["--space-option", "resolutions=[32]", "--space-option", "widths=[0.5]", "--space-option",
               "depths=[2]", "--space-option", "kernels=[3,5]", "--space-option", "expansions=[3]",
               "--space-option", "num_classes=10"]
    measured = tmp_path / "m.csv"
    assert main(["measure", "--space", "mbv3", *options, "--runner", "onnxruntime", "--rounds", "2",
                 "--runner-option", "target_ms=2", "--runner-option", "repeats=1", "--runner-option", "anchors=0",
                 "--count", "12", "--out", str(measured), "--store", str(tmp_path / "s.db"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["predictor", "lut", "--space", "mbv3", *options, "--measurements", str(measured),
                 "--out", str(tmp_path / "lut.npz")]) == 0
    out = capsys.readouterr().out
    assert "lookup table of" in out and "in-sample Spearman" in out
    lut = load_predictor(tmp_path / "lut.npz")
    space = lut.space
    with open(measured) as f:
        rows = list(csv.DictReader(f))
    archs = [space.parse(r["arch"]) for r in rows]
    predicted = lut.predict(archs)
    # the table's own arithmetic: intercept plus the cost of each of the arch's layer keys
    expected = [lut.intercept + sum(lut.costs[k] for k in space.layer_keys(a)) for a in archs]
    assert np.allclose(predicted, expected)
    measured_ms = np.array([float(r["latency_ms"]) for r in rows])
    assert np.corrcoef(predicted, measured_ms)[0, 1] > 0.5
    assert main(["predictor", "lut", "--space", "mbv3", *options, "--measurements", str(measured),
                 "--out", str(tmp_path / "bad.npz"), "--ridge", "-1"]) == 2
    assert "--ridge" in capsys.readouterr().err
