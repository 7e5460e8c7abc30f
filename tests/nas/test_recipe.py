import os
import subprocess
import sys

import pytest
import yaml

from nas.recipe import RecipeError, load_recipe, write_resolved
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


def test_separate_block_types_are_refused_for_a_space_with_one(tmp_path):
    path = write(tmp_path, tiny_recipe(tmp_path, supernet={"share_block_types": False}))
    with pytest.raises(RecipeError, match=r"r\.yaml: supernet\.share_block_types: false: the mbv3 supernet has one"):
        load_recipe(path)
    mobiledet = {"name": "mobiledet", "resolutions": [32], "num_classes": 10}
    path = write(tmp_path, tiny_recipe(tmp_path, space=mobiledet, supernet={"share_block_types": False}))
    assert load_recipe(path).supernet == {"share_block_types": False}


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


QUICKSTART = REPO / "recipes" / "quickstart.yaml"


@pytest.mark.parametrize("override, key", [("latency.rounds=abc", "latency.rounds"),
                                           ("latency.target_ms=abc", "latency.target_ms"),
                                           ("latency.rounds='5'", "latency.rounds"),
                                           ("accuracy.epochs='3'", "accuracy.epochs"),
                                           ("latency.threads=0", "latency"),
                                           ("accuracy.epochs=0", "accuracy")])
def test_bad_source_option_is_one_line_naming_the_key_and_writes_nothing(tmp_path, override, key):
    run_dir, home = tmp_path / "run", tmp_path / "home"
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(QUICKSTART), "--set", override,
                           "--set", f"output={run_dir}"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env={**os.environ, "HWNAS_HOME": str(home)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{key}:" in lines[0] and str(QUICKSTART) in lines[0], proc.stderr
    assert not run_dir.exists() and not home.exists()


def test_source_options_are_typed_and_paths_resolved(tmp_path):
    (tmp_path / "data").mkdir()
    recipe = load_recipe(write(tmp_path, tiny_recipe(tmp_path, accuracy={"train": "cifar10", "root": "data",
                                                                         "epochs": 2})))
    # defaults filled in, the root absolute (against the recipe's folder), protocol keys typed
    assert recipe.accuracy["root"] == str((tmp_path / "data").absolute())
    assert recipe.accuracy["epochs"] == 2 and recipe.accuracy["lr"] == 0.005
    assert recipe.latency["rounds"] == 3 and isinstance(recipe.latency["target_ms"], float)
    with pytest.raises(RecipeError, match=r"latency\.opset: expected int"):
        load_recipe(write(tmp_path, tiny_recipe(tmp_path, latency__opset="17"), "r2.yaml"))


def test_secrets_are_not_written_back(tmp_path):
    data = tiny_recipe(tmp_path, latency={"runner": "remote", "servers": "http://127.0.0.1:9", "token": "s3cret"})
    recipe = load_recipe(data)
    assert recipe.latency["token"] == "s3cret"  # the run uses it ...
    written = write_resolved(recipe, tmp_path / "run").read_text()
    assert "s3cret" not in written and "token:" not in written  # ... nothing writes it down
