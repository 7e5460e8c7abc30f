"""Export a ``hybrid_slm`` model: PyTorch checkpoint + JSON config, and the
prefill graph as ONNX verified against PyTorch with ONNX Runtime.

Files written to ``out_dir``::

    config.json   {"format", "space", "arch", "config" (SLMConfig), "onnx": {...}}
    model.pt      state_dict
    prefill.onnx  tokens int64 [batch, prompt_len] -> logits float32 [batch, prompt_len, vocab]

``load_slm(out_dir)`` rebuilds the module from the JSON config and checkpoint
alone (no search space needed); it also reads the folders ``hwnas export``
writes for a ``hybrid_slm`` run (``config.json`` beside the framework's
``model.pt``).  The ONNX graph has a fixed prompt length: the
chunked SSM/DeltaNet scans are unrolled over ``prompt_len / chunk_size``
chunks, so export at the prompt length you will serve.  Decoding with a cache
is a PyTorch-only path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

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
    from search_spaces.slm.model import HybridLM
    from search_spaces.slm.spec import SLMConfig

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


def export_onnx(model, path: str | Path, prompt_len: int, batch: int = 1, seed: int = 0) -> float:
    """Write the prefill graph to ``path``; return the max |logit difference| between
    ONNX Runtime and PyTorch on a seeded random prompt."""
    from hardware.onnx_io import export_onnx as write_onnx, verify_onnx

    model = model.eval()
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.config.vocab, (batch, prompt_len), generator=generator)
    write_onnx(model, tokens, path, input_names=("tokens",), output_names=("logits",))
    return verify_onnx(Path(path), model, tokens)


def export_slm(model, arch: Any, out_dir: str | Path, prompt_len: int = 128, batch: int = 1,
               tolerance: float = 1e-3) -> dict[str, Any]:
    """Checkpoint + JSON config + verified ONNX prefill graph.

    Returns ``{"checkpoint", "config", "onnx": paths, "max_abs_diff": float}``;
    raises ``RuntimeError`` when ONNX Runtime disagrees with PyTorch by more
    than ``tolerance`` (a broken export must not look like a finished one)."""
    paths: dict[str, Any] = save_checkpoint(model, arch, out_dir)
    onnx_path = Path(out_dir) / "prefill.onnx"
    diff = export_onnx(model, onnx_path, prompt_len, batch)
    meta = json.loads(paths["config"].read_text())
    meta["onnx"] = {"file": onnx_path.name, "input": "tokens", "dtype": "int64",
                    "shape": [batch, prompt_len], "output": "logits", "max_abs_diff": diff}
    paths["config"].write_text(json.dumps(meta, indent=2) + "\n")
    if diff > tolerance:
        raise RuntimeError(f"ONNX export of {arch}: ONNX Runtime differs from PyTorch by {diff:.3g} "
                           f"(> {tolerance:g})")
    return {**paths, "onnx": onnx_path, "max_abs_diff": diff}
