"""Export helpers: verified ONNX for every space kind, and the hybrid SLM bundle
(checkpoint + JSON config + ONNX prefill graph) that rebuilds without hwnas' space."""
import json

import torch

from nas.export import export_slm, export_verified_onnx
from search_spaces import make_space
from search_spaces.slm.export import load_slm


def test_slm_export_round_trip(tmp_path):
    space = make_space("hybrid_slm", seq_len=40, chunk_size=16)
    arch = space.parse("v256_d64_h4_g2:attn-swa64-mamba-delta")
    model = space.build(arch, init_seed=5)
    out = export_slm(model, arch, tmp_path / "exp", prompt_len=40)
    assert out["max_abs_diff"] <= 1e-4
    for key in ("checkpoint", "config", "onnx"):
        assert out[key].is_file()
    meta = json.loads(out["config"].read_text())
    assert meta["arch"] == str(arch) and meta["onnx"]["shape"] == [1, 40]
    rebuilt = load_slm(tmp_path / "exp")
    tokens = torch.randint(0, 256, (1, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(tokens), model(tokens))
    # the export `hwnas export` uses handles token-id inputs too
    assert export_verified_onnx(space, model, arch, tmp_path / "space.onnx") <= 1e-4


def test_image_space_export_is_verified(tmp_path):
    space = make_space("mbv3", resolutions=[32], depths=[2], num_classes=10)
    arch = space.parse(str(space.sample(__import__("numpy").random.default_rng(0))))
    assert export_verified_onnx(space, space.build(arch), arch, tmp_path / "m.onnx") <= 1e-4
    assert not list(tmp_path.glob(".*tmp"))  # written atomically: no temporary file left


# --- portable exports: loadable by plain PyTorch / ONNX Runtime / timm without hwnas ------------

ISOLATED = r'''
import json, sys

BLOCKED = ("nas", "search_spaces", "hardware", "predictors")


class Blocker:
    """Any import of hwnas' packages fails: the files must load without them."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, Blocker())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        continue
    raise SystemExit(f"{name} importable: the isolation is broken")

import numpy as np
import onnxruntime as ort
import torch

x = torch.from_numpy(np.load("x.npy"))
with torch.no_grad():
    np.save("pt2.npy", torch.export.load("model.pt2").module()(x).numpy())
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
np.save("onnx.npy", session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
json.dump(session.get_modelmeta().custom_metadata_map, open("meta.json", "w"))
if len(sys.argv) > 1:  # the model card's timm code, run verbatim
    scope = {}
    exec(open(sys.argv[1]).read(), scope)
    with torch.no_grad():
        np.save("timm.npy", scope["model"](x).numpy())
'''

METADATA_KEYS = {"arch", "space", "space_options", "input", "input_shape", "input_dtype", "preprocessing",
                 "dataset", "weights", "accuracy", "latency_ms", "measured_latency_ms", "metrics",
                 "latency_source", "producer"}


def _run_isolated(folder, *args):
    import subprocess
    import sys

    (folder / "isolated.py").write_text(ISOLATED)
    # -I: no PYTHONPATH, no user site, and the script's folder (not the repo) on sys.path
    proc = subprocess.run([sys.executable, "-I", "isolated.py", *args], cwd=folder,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_export_loads_without_hwnas(tmp_path):
    """mbv3 (also rebuilt by the card's timm code), nb201 (which TorchScript cannot
    compile) and hybrid_slm (token input): the .pt2 and the ONNX at batch 4 match the
    framework's model in a process where hwnas cannot be imported."""
    import re

    import numpy as np

    from nas.export import export_model, timm_rebuild_code

    cases = [("mbv3", dict(resolutions=[32], depths=[1], expansions=[3], kernels=[3], widths=[0.5],
                           num_classes=10)),
             ("nb201", {}), ("hybrid_slm", dict(seq_len=24, chunk_size=8))]
    for name, options in cases:
        space = make_space(name, **options)
        arch = space.sample(np.random.default_rng(1))
        model = space.build(arch).eval()
        image = name != "hybrid_slm"
        folder = tmp_path / name
        row = {"arch": str(arch), "accuracy": 91.5, "latency_ms": 1.25, "measured_latency_ms": 1.3}
        out = export_model(space, model, arch, folder, row, dataset="digits" if image else None,
                           accuracy_kind="train" if image else "lm",
                           latency={"runner": "onnxruntime", "threads": 1})
        assert out.onnx_max_abs_diff <= 1e-4 and out.program_max_abs_diff <= 1e-4
        x = space.example_input(arch, 4, seed=3)
        with torch.no_grad():
            reference = model(x).numpy()
        np.save(folder / "x.npy", x.numpy())
        extra = []
        if name == "mbv3":
            (folder / "timm_model.py").write_text(timm_rebuild_code(str(arch), space.options()))
            extra = ["timm_model.py"]
        _run_isolated(folder, *extra)
        for produced in ("pt2", "onnx", *(["timm"] if extra else [])):
            got = np.load(folder / f"{produced}.npy")
            assert got.shape == reference.shape and got.shape[0] == 4
            assert np.max(np.abs(got - reference)) <= 1e-4, produced
        meta = json.loads((folder / "meta.json").read_text())
        assert METADATA_KEYS - ({"dataset"} if not image else set()) <= set(meta)
        assert meta["arch"] == str(arch) and meta["space"] == name and float(meta["accuracy"]) == 91.5
        assert json.loads(meta["input_shape"]) == ["batch", *space.input_shape(arch)[1:]]
        card = (folder / "README.md").read_text()
        assert "torch.export.load('model.pt2')" in card
        if image:
            assert json.loads(meta["preprocessing"])["mean"] == [0.5, 0.5, 0.5]
            assert "x = (x - 0.5) / 0.5" in card
        else:
            assert (folder / "config.json").is_file() and "UTF-8 bytes" in card
        assert ("MobileNetV3(" in card) == (name == "mbv3")
        if name == "mbv3":  # the card carries exactly the code that was just run
            assert re.search(re.escape(timm_rebuild_code(str(arch), space.options())), card)
        assert not list(folder.glob(".*tmp"))  # written atomically


def test_card_preprocessing_reproduces_nas_data():
    """The numbers the card states, applied to the raw digits, give nas.data's tensors."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from nas.data import _digits_split, load_dataset
    from nas.export import preprocessing

    space = make_space("mbv3", resolutions=[24], num_classes=10)
    arch = space.parse(str(space.sample(__import__("numpy").random.default_rng(0))))
    pre = preprocessing(space, arch, "digits")
    raw = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    grey = F.interpolate(raw, size=(24, 24), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(pre["mean"]).view(1, 3, 1, 1), torch.tensor(pre["std"]).view(1, 3, 1, 1)
    stated = (grey.repeat(1, 3, 1, 1) - mean) / std
    val_idx = torch.from_numpy(_digits_split(len(raw))[0])
    assert torch.allclose(stated[val_idx], load_dataset("digits", 24).val.tensors[0], atol=1e-6)
    assert pre["shape"] == ["batch", 3, 24, 24]


def test_finetune_bundle_exports_the_new_weights(tmp_path):
    """``hwnas finetune``'s portable set holds the fine-tuned weights, not the exported ones."""
    import numpy as np

    from hardware.onnx_io import ort_session
    from nas.export import export_model, finetune_bundle

    space = make_space("fbnet", num_classes=10)
    arch = space.sample(np.random.default_rng(2))
    model = space.build(arch).eval()
    export_model(space, model, arch, tmp_path, {"arch": str(arch), "accuracy": 80.0, "latency_ms": 2.0},
                 dataset="digits")
    with torch.no_grad():  # stands for training: any change of weights must reach the files
        for p in model.parameters():
            p.add_(0.01)
    record = {"arch": str(arch), "dataset": "digits", "epochs": 2, "finetuned_accuracy": 88.25}
    (tmp_path / "finetune.json").write_text(json.dumps(record))
    assert finetune_bundle(space, model, arch, tmp_path, record) <= 1e-4
    x = space.example_input(arch, 4, seed=7)
    with torch.no_grad():
        reference = model(x).numpy()
        program = torch.export.load(str(tmp_path / "finetuned.pt2")).module()
        assert np.max(np.abs(program(x).numpy() - reference)) <= 1e-4
    session = ort_session(tmp_path / "finetuned.onnx")
    assert np.max(np.abs(session.run(None, {"input": x.numpy()})[0] - reference)) <= 1e-4
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["accuracy"] == "88.25" and meta["weights"] == "finetuned 2 epochs"
    assert meta["latency_ms"] == "2.0"  # the weights changed, the measured latency did not
    card = (tmp_path / "README.md").read_text()
    assert "`finetuned.pt2`" in card and "finetuned_accuracy (2 epochs on digits) | 88.25" in card


def test_shipped_latency_config_hides_secrets():
    from nas.export import public_config

    config = {"runner": "remote", "options": {"url": "http://dev:8000", "token": "s3cret", "threads": 1},
              "token_file": "/home/me/tok", "list": [{"password": "x"}]}
    public = public_config(config)
    assert "s3cret" not in json.dumps(public) and "/home/me/tok" not in json.dumps(public)
    assert public["options"]["url"] == "http://dev:8000" and public["runner"] == "remote"
