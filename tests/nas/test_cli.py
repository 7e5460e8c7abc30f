import csv

from nas.cli import main
from search_spaces import SPACES


def test_spaces_lists_every_registered_space(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    for name in SPACES:
        assert name in out


def test_measure_writes_arch_latency_csv(tmp_path):
    out = tmp_path / "m.csv"
    code = main(["measure", "--space", "mbv3", "--runner", "onnxruntime", "--count", "3", "--out", str(out),
                 "--rounds", "2", "--space-option", "resolutions=[32]", "--space-option", "num_classes=10",
                 "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["arch", "latency_ms"] and len(rows) == 3
    assert len({r["arch"] for r in rows}) == 3 and all(float(r["latency_ms"]) > 0 for r in rows)
    # second call is served from the store: same numbers
    out2 = tmp_path / "m2.csv"
    main(["measure", "--space", "mbv3", "--runner", "onnxruntime", "--count", "3", "--out", str(out2),
          "--rounds", "2", "--space-option", "resolutions=[32]", "--space-option", "num_classes=10",
          "--no-progress"])
    assert out.read_text() == out2.read_text()


def test_export_of_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--top", "1"]) == 2
    assert "nowhere" in capsys.readouterr().err
