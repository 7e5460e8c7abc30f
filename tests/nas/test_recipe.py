import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nas.recipe import RecipeError, load_recipe
from tests.conftest import REPO, tiny_recipe


def write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_quickstart_recipe_is_valid():
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert recipe.space.name == "mbv3" and recipe.search.controller == "evolution"
    assert recipe.search.constraints and recipe.export.top == 3


def test_unknown_key_is_named_with_file(tmp_path):
    data = tiny_recipe(tmp_path)
    data["search"]["trails"] = 3
    path = write(tmp_path, data)
    with pytest.raises(RecipeError, match=r"r\.yaml: search\.trails: unknown key \(did you mean 'trials'\?\)"):
        load_recipe(path)


def test_wrong_type_is_named(tmp_path):
    data = tiny_recipe(tmp_path)
    data["search"]["trials"] = "many"
    with pytest.raises(RecipeError, match="search.trials: expected int"):
        load_recipe(write(tmp_path, data))


def test_missing_required_key(tmp_path):
    data = tiny_recipe(tmp_path)
    del data["latency"]
    with pytest.raises(RecipeError, match="latency: required key is missing"):
        load_recipe(write(tmp_path, data))


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "name: x\nspace: [mbv3\nlatency: {}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: line \d+"):
        load_recipe(path)


def test_overrides_apply_and_validate(tmp_path):
    path = write(tmp_path, tiny_recipe(tmp_path))
    recipe = load_recipe(path, ["search.trials=9", "search.constraints={latency_ms: 1.5}"])
    assert recipe.search.trials == 9 and recipe.search.constraints == {"latency_ms": 1.5}
    with pytest.raises(RecipeError, match="--set 'oops'"):
        load_recipe(path, ["oops"])


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=300)


def test_cli_reports_recipe_errors_without_traceback(tmp_path):
    data = tiny_recipe(tmp_path)
    data["bogus"] = 1
    proc = run_cli("search", str(write(tmp_path, data)))
    assert proc.returncode == 2
    assert "bogus: unknown key" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_reports_unknown_space_and_runner(tmp_path):
    data = tiny_recipe(tmp_path, space={"name": "mbv4"})
    proc = run_cli("search", str(write(tmp_path, data)))
    assert proc.returncode == 2 and "mbv4" in proc.stderr and "mbv3" in proc.stderr
    data = tiny_recipe(tmp_path, latency={"runner": "abacus"})
    proc = run_cli("search", str(write(tmp_path, data, "r2.yaml")))
    assert proc.returncode == 2 and "abacus" in proc.stderr and "onnxruntime" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_reports_missing_dataset_path(tmp_path):
    data = tiny_recipe(tmp_path, accuracy={"train": "cifar10", "root": str(tmp_path / "nope")})
    proc = run_cli("search", str(write(tmp_path, data)))
    assert proc.returncode == 2 and str(tmp_path / "nope") in proc.stderr


def test_cli_reports_bad_arch_token(tmp_path):
    arch = "r224_w1:ir_k4_e3-ir_k3_e3:" + ":".join(["ir_k3_e3-ir_k3_e3"] * 4)
    archs = tmp_path / "archs.txt"
    archs.write_text(arch + "\n")
    proc = run_cli("measure", "--space", "mbv3", "--runner", "onnxruntime", "--count", "1",
                   "--out", str(tmp_path / "o.csv"), "--space-option", "kernels=[3,4]",
                   "--space-option", "bogus=1")
    assert proc.returncode == 2 and "bogus" in proc.stderr and "Traceback" not in proc.stderr
    from search_spaces import make_space

    with pytest.raises(ValueError, match="ir_k4_e3"):
        make_space("mbv3").parse(arch)
