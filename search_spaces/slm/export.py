"""Save and rebuild a ``hybrid_slm`` model: PyTorch checkpoint + JSON config.

Files written to ``out_dir`` (``nas.export.export_slm`` adds the prefill
graph as verified ONNX, ``prefill.onnx``)::

    config.json   {"format", "space", "arch", "config" (SLMConfig), "onnx": {...}}
    model.pt      state_dict

``load_slm(out_dir)`` rebuilds the module from the JSON config and checkpoint
alone (no search space needed); it also reads the folders ``hwnas export``
writes for a ``hybrid_slm`` run (``config.json`` beside the framework's
``model.pt``).  The ONNX graph has a fixed prompt length: the
chunked SSM/DeltaNet scans are unrolled over ``prompt_len / chunk_size``
chunks, so export at the prompt length you will serve.  Decoding with a live,
growing cache is a PyTorch-only path; one decode step on a fixed cache exports
(:class:`search_spaces.slm.graphs.DecodeStep`, what runners time).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from search_spaces.slm.model import HybridLM
from search_spaces.slm.spec import SLMConfig

FORMAT = "hwnas-slm/1"


def write_config(model, arch: Any, out_dir: str | Path, **extra: Any) -> Path:
    """``config.json``: the :class:`SLMConfig` that rebuilds ``model`` (plus ``extra`` keys)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    path.write_text(json.dumps({"format": FORMAT, "space": "hybrid_slm", "arch": str(arch),
                                "config": model.config.to_dict(), **extra}, indent=2) + "\n")
    return path


def save_checkpoint(model, arch: Any, out_dir: str | Path) -> dict[str, Path]:
    ckpt = Path(out_dir) / "model.pt"
    cfg = write_config(model, arch, out_dir)
    torch.save(model.state_dict(), ckpt)
    return {"checkpoint": ckpt, "config": cfg}


def load_slm(path: str | Path):
    """Rebuild the model from ``config.json`` + ``model.pt`` (a directory or the JSON path)."""
    path = Path(path)
    cfg_path = path / "config.json" if path.is_dir() else path
    if not cfg_path.is_file():
        raise FileNotFoundError(f"SLM config {str(cfg_path)!r} does not exist")
    meta = json.loads(cfg_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    ckpt = cfg_path.parent / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"SLM checkpoint {str(ckpt)!r} does not exist")
    model = HybridLM(SLMConfig.from_dict(meta["config"]))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    # `hwnas export` folders hold the framework's checkpoint, with the weights under "state_dict"
    model.load_state_dict(state["state_dict"] if "state_dict" in state and "arch" in state else state)
    return model.eval()
