"""``hwnas predictor finetune`` prints a cross-validated quality figure next to MACs and
names outlier rows."""
import numpy as np

from nas.cli import main
from predictors import load_predictor
from predictors.mixture import sample_pool
from predictors.protocol import help_split
from predictors.protocol_data import load_protocol_table
from search_spaces import make_space


def test_finetune_prints_cross_validated_quality_and_names_outliers(tmp_path, capsys):
    space = make_space("nb201")
    device = help_split("nb201").test[3]
    archs, columns = load_protocol_table(space, [device])
    rows = np.random.default_rng(1).permutation(len(archs))[:15]
    measured = tmp_path / "m.csv"
    lines = ["arch,latency_ms"] + [f"{archs[i]},{columns[device][i]}" for i in rows]
    lines[5] = f"{archs[rows[4]]},{columns[device][rows[4]] * 800}"  # one broken row
    measured.write_text("\n".join(lines) + "\n")
    out = tmp_path / "tuned.npz"
    assert main(["predictor", "finetune", "--checkpoint", "nb201", "--measurements", str(measured),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "left out of adaptation as outliers" in printed and str(archs[rows[4]])[:40] in printed
    assert "cross-validated (10-fold, 14 samples, seed 0): Spearman" in printed
    assert "(MACs proxy: Spearman" in printed
    assert "fine-tuned on 14 measurements (1 outlier row(s) left out)" in printed
    assert np.all(load_predictor(out).predict(sample_pool(space, 500, seed=0)) > 0)
