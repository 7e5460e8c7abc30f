"""``hwnas measure``: sampled measurements to CSV, and ``--verify`` of stored rows."""
from hardware.store import MeasurementStore
from nas.cli import main

BASE = ["measure", "--space", "mbv3", "--runner", "onnxruntime", "--rounds", "2", "--no-progress",
        "--space-option", "resolutions=[32]", "--space-option", "depths=[2]", "--space-option", "widths=[0.5]",
        "--runner-option", "target_ms=2", "--runner-option", "repeats=1", "--runner-option", "anchors=2"]


def test_verify_retimes_stored_rows_and_invalidates_the_failing_ones(tmp_path, capsys):
    store = str(tmp_path / "m.db")
    assert main(BASE + ["--store", store, "--count", "4", "--out", str(tmp_path / "o.csv")]) == 0
    assert len((tmp_path / "o.csv").read_text().splitlines()) == 5
    capsys.readouterr()
    assert main(BASE + ["--store", store, "--verify", "3", "--tolerance", "10"]) == 0
    assert "verified 3 stored rows" in capsys.readouterr().out
    # no re-timing agrees to a billionth: every row fails, and --invalidate drops them
    assert main(BASE + ["--store", store, "--verify", "3", "--tolerance", "1e-9"]) == 1
    assert "3 off by more than" in capsys.readouterr().out
    with MeasurementStore(store) as s:
        before = s.count()
    assert main(BASE + ["--store", store, "--verify", "2", "--tolerance", "1e-9", "--invalidate"]) == 0
    assert "dropped 2 row(s)" in capsys.readouterr().out
    with MeasurementStore(store) as s:
        assert s.count() == before - 2


def test_count_and_out_are_required_without_verify(capsys):
    assert main(BASE + ["--count", "2"]) == 2
    assert "--count and --out are required" in capsys.readouterr().err
