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
