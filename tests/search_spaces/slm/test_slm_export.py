"""Export: checkpoint + JSON config rebuild the model; the ONNX prefill graph
agrees with PyTorch under ONNX Runtime."""
import json

import pytest
import torch

from search_spaces import make_space
from search_spaces.slm.export import export_slm, load_slm


def test_export_round_trip(tmp_path):
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
    # the space's export hook (used by `hwnas export`) handles token-id inputs too
    assert space.export_onnx(model, arch, tmp_path / "space.onnx") <= 1e-4


def test_load_missing_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_slm(tmp_path / "nowhere")
