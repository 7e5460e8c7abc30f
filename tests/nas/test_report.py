"""The run report (``report.html`` + ``pareto.png``) of real searches, and ``hwnas report``."""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np
import yaml

from nas.cli import main
from nas.report import arch_id, write_report
from nas.search import run_search
from tests.nas.test_search import _nb201_table


def nb201_recipe(tmp_path: Path, **search) -> Path:
    """A small nb201 search: accuracy from a table, latency from the shipped predictor
    (both instant, so a search of a dozen trials takes seconds)."""
    from search_spaces import make_space

    folder = tmp_path / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "acc.csv").is_file():
        _nb201_table(folder / "acc.csv", make_space("nb201"))
    path = folder / f"r{len(list(folder.glob('r*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "report-test", "seed": 0, "space": {"name": "nb201"}, "latency": {"predictor": "nb201"},
        "accuracy": {"table": str(folder / "acc.csv"), "column": "acc"},
        "search": {"controller": "random", "trials": 12, "batch_size": 4, **search},
        "output": str(tmp_path / f"run_{path.stem}"), "store": str(tmp_path / "store.db")}))
    return path


def constrained_nb201_run(tmp_path: Path, capsys=None) -> Path:
    """A finished nb201 search, run through ``hwnas search``, whose latency bound leaves
    some trials infeasible (the bound is the median latency of an unconstrained probe)."""
    probe = run_search(nb201_recipe(tmp_path, trials=8), progress=False)
    bound = float(np.median([r["latency_ms"] for r in probe.trials]))
    recipe = nb201_recipe(tmp_path, constraints={"latency_ms": bound})
    assert main(["search", str(recipe), "--no-progress"]) == 0
    return Path(yaml.safe_load(recipe.read_text())["output"])


def _image(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_search_writes_a_self_contained_report(tmp_path, capsys):
    run_dir = constrained_nb201_run(tmp_path)
    out = capsys.readouterr().out
    html_path, png_path = run_dir / "report.html", run_dir / "pareto.png"
    # the search ends with the report's paths and the dashboard command of its study
    assert f"report: {html_path}" in out and f"Pareto plot: {png_path}" in out
    assert f"optuna-dashboard sqlite:///{(run_dir / 'study.db').resolve()}" in out
    saved = json.loads((run_dir / "front.json").read_text())
    trials = (run_dir / "trials.csv").read_text()
    assert saved["front"] and ",False," in trials and ",True," in trials  # feasible and infeasible trials
    page = html_path.read_text()
    for row in saved["front"]:
        short = arch_id(row["arch"])
        # the table row links to the anchor that holds the full string
        assert f'href="#arch-{short}"' in page and f'id="arch-{short}"' in page
        assert html.escape(row["arch"]) in page
    # self-contained: no fetched resource, the figure inline
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page) and "<script" not in page
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == png_path.read_bytes()
    pixels = _image(png_path)
    assert pixels.ndim == 3 and pixels.std() > 0.01
    # run.log holds the run, down to the front it ended with
    log = (run_dir / "run.log").read_text()
    assert "trials:" in log and all(row["arch"] in log for row in saved["front"])
    # nb201's shipped predictor reaches no device: no re-measured section
    assert "re-measured on the device" not in page and "Search values vs re-measured" not in page


def test_hwnas_report_regenerates_and_names_bad_folders(tmp_path, capsys):
    run_dir = run_search(nb201_recipe(tmp_path, trials=6), progress=False).run_dir
    assert not (run_dir / "report.html").exists()
    assert main(["report", str(run_dir)]) == 0
    assert f"report: {run_dir / 'report.html'}" in capsys.readouterr().out
    assert (run_dir / "report.html").is_file() and _image(run_dir / "pareto.png").std() > 0.01
    assert not list(run_dir.glob(".*.tmp"))  # atomic writes leave no temporaries

    missing = tmp_path / "nowhere"
    assert main(["report", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas report: error:") and str(missing) in err and "\n" not in err
    (run_dir / "front.json").write_text('{"objectives": ["accuracy"], "front": []}')
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(run_dir / "front.json") in err and "directions" in err and "\n" not in err
    (run_dir / "front.json").unlink()  # a killed search has no front.json yet
    assert main(["report", str(run_dir)]) == 2
    assert "front.json: missing" in capsys.readouterr().err


def test_report_of_a_remeasured_front_plots_search_against_measured(tmp_path):
    """A latency source that reaches a device (onnxruntime here) re-measures the front:
    the report adds the predicted-vs-measured figure from ``front_remeasured.csv``."""
    recipe = yaml.safe_load(nb201_recipe(tmp_path).read_text())
    recipe["latency"] = {"runner": "onnxruntime", "threads": 1, "rounds": 2, "repeats": 1, "target_ms": 1}
    recipe["search"].update(trials=4, batch_size=4)
    result = run_search(recipe, progress=False)
    assert (result.run_dir / "front_remeasured.csv").is_file()
    html_path, png_path = write_report(result.run_dir)
    page = html_path.read_text()
    assert "Search values vs re-measured" in page and "re-measured on the device" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2
    agreement = tmp_path / "agreement.png"
    agreement.write_bytes(base64.b64decode(images[1]))
    assert _image(agreement).std() > 0.01 and _image(png_path).std() > 0.01
    for row in result.front:
        assert f'id="arch-{arch_id(row["arch"])}"' in page


def test_front_remeasured_without_pairs_is_reported_not_fatal(tmp_path):
    """``front_remeasured.csv`` is read defensively: a file without predicted/measured
    pairs (another version of the search) still yields a report, saying so."""
    run_dir = run_search(nb201_recipe(tmp_path, trials=4), progress=False).run_dir
    (run_dir / "front_remeasured.csv").write_text("arch,on_search_front\nx,True\n")
    page = write_report(run_dir)[0].read_text()
    assert "holds no predicted/measured value pairs" in page


def test_text_from_the_run_is_escaped(tmp_path):
    arch = '<script>alert("x")</script>'
    run_dir = run_search(nb201_recipe(tmp_path, trials=4), progress=False).run_dir
    saved = json.loads((run_dir / "front.json").read_text())
    saved["front"][0]["arch"] = arch
    (run_dir / "front.json").write_text(json.dumps(saved))
    page = write_report(run_dir)[0].read_text()
    assert arch not in page and html.escape(arch) in page


def test_dashboard_line_follows_the_study_storage(tmp_path, capsys):
    from nas.report import dashboard_command

    assert dashboard_command(tmp_path, "postgresql://db/hwnas") == "optuna-dashboard postgresql://db/hwnas"
    # an in-memory study is gone when the search ends: no dashboard line, the report still written
    recipe = nb201_recipe(tmp_path, trials=4, storage=":memory:")
    assert main(["search", str(recipe), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "optuna-dashboard" not in out and "report: " in out
    run_dir = Path(yaml.safe_load(recipe.read_text())["output"])
    assert "optuna-dashboard" not in (run_dir / "report.html").read_text()
