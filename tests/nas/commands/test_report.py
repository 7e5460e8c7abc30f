"""Terminal tables: a short front says how many it exported and why."""
from pathlib import Path

from nas.commands.report import print_exports
from nas.export import Exported


def test_a_front_shorter_than_top_says_so(capsys):
    exported = [Exported(rank=1, folder=Path("export/1"), arch="a", weights="trained", onnx_max_abs_diff=1e-6)]
    print_exports(exported, top=1)
    assert "exported 1 of" not in capsys.readouterr().out
    print_exports(exported, top=3)
    assert "exported 1 of --top 3: the Pareto front has 1 architectures" in capsys.readouterr().out
