"""Export the best architectures of a finished run.

For each of the top-K Pareto architectures, ``RUN_DIR/export/<rank>/`` gets:

* ``arch.txt`` (canonical string) and ``arch.json`` (decisions, metrics, features)
* ``model.pt``: ``{"arch", "space", "space_options", "state_dict", "weights"}``
* ``model.onnx``, verified against PyTorch with ONNX Runtime
* whatever the space adds (``SearchSpace.export_extras``): ``hybrid_slm``
  writes ``config.json``, which rebuilds the model with
  ``search_spaces.slm.export.load_slm(folder)`` alone

Export needs only the run folder (its resolved ``recipe.yaml`` and
``front.json``) and the run's accuracy source: it never builds the latency
source (a remote device may be offline) or opens the study.  Weights come
from the accuracy source when it has them (``trained_model(arch)``:
re-training with the search's seed, or extraction from a supernet); otherwise
the checkpoint holds the initialisation and says so.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hardware.onnx_io import export_onnx, verify_onnx
from hardware.store import MeasurementStore
from nas.files import atomic_write_bytes, atomic_write_text
from nas.recipe import load_recipe
from nas.sources import ACCURACY_SOURCES, RunContext, make_source
from search_spaces import SearchSpace, make_space
from search_spaces.slm.export import save_checkpoint


@dataclass
class Exported:
    rank: int
    arch: str
    folder: Path
    onnx_max_abs_diff: float
    weights: str


def export_verified_onnx(space: SearchSpace, model, arch: Any, path: str | Path, batch_size: int = 1) -> float:
    """Write ``model`` as ONNX to ``path``; return the max abs difference between
    ONNX Runtime and PyTorch outputs on the space's example input."""
    example = space.example_input(arch, batch_size)
    inputs, outputs = space.onnx_names
    atomic_write_bytes(path, export_onnx(model.eval(), example, input_names=inputs, output_names=outputs))
    return verify_onnx(Path(path), model, example)


def export_run(run_dir: str | Path, top: int, progress: bool = True) -> list[Exported]:
    run_dir = Path(run_dir)
    recipe_path = run_dir / "recipe.yaml"
    front_path = run_dir / "front.json"
    for path in (recipe_path, front_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {str(run_dir)!r} a finished search run?")
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    recipe = load_recipe(recipe_path)
    space = make_space(recipe.space.name, **recipe.space.options)
    saved = json.loads(front_path.read_text())
    front = saved["front"][:top]
    if not front:
        nearest = "; ".join(f"{r['arch']} misses by {r['misses']}" for r in saved.get("nearest", [])[:3])
        raise ValueError(f"{run_dir}: nothing to export: no trial met the constraints "
                         f"{recipe.search.constraints}" + (f" (nearest: {nearest})" if nearest else ""))
    # weights need no cached results: an in-memory store keeps export from writing any
    with MeasurementStore(":memory:") as store:
        ctx = RunContext(space, store, run_dir, recipe.seed, recipe.base_dir(), progress)
        accuracy = make_source(recipe.accuracy, ACCURACY_SOURCES, ctx, "accuracy", str(recipe_path))
        try:
            return [_export_one(space, accuracy, rank, row, run_dir / "export" / str(rank))
                    for rank, row in enumerate(front, start=1)]
        finally:
            accuracy.close()


def _export_one(space: SearchSpace, accuracy, rank: int, row: dict[str, Any], folder: Path) -> Exported:
    arch = space.parse(row["arch"])
    model = accuracy.trained_model(arch)
    weights = accuracy.kind if model is not None else "random-init"
    if model is None:
        model = space.build(arch)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "arch.txt", str(arch) + "\n")
    atomic_write_text(folder / "arch.json", json.dumps({
        "arch": str(arch), "space": space.name, "space_options": space.options(),
        "decisions": space.encode(arch), "metrics": row,
        "features": space.features(arch), "weights": weights}, indent=2, default=str))
    buffer = io.BytesIO()
    torch.save({"arch": str(arch), "space": space.name, "space_options": space.options(),
                "state_dict": model.state_dict(), "weights": weights}, buffer)
    atomic_write_bytes(folder / "model.pt", buffer.getvalue())
    diff = export_verified_onnx(space, model.eval(), arch, folder / "model.onnx")
    space.export_extras(model, arch, folder)
    return Exported(rank, str(arch), folder, diff, weights)


def export_slm(model, arch: Any, out_dir: str | Path, prompt_len: int = 128, batch: int = 1,
               tolerance: float = 1e-3) -> dict[str, Any]:
    """A ``hybrid_slm`` model as checkpoint + JSON config + verified ONNX prefill graph
    (``prefill.onnx``, tokens int64 [batch, prompt_len] -> logits [batch, prompt_len, vocab]).

    Returns ``{"checkpoint", "config", "onnx": paths, "max_abs_diff": float}``;
    raises ``RuntimeError`` when ONNX Runtime disagrees with PyTorch by more
    than ``tolerance`` (a broken export must not look like a finished one)."""
    paths: dict[str, Any] = save_checkpoint(model, arch, out_dir)
    onnx_path = Path(out_dir) / "prefill.onnx"
    model = model.eval()
    tokens = torch.randint(0, model.config.vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(0))
    atomic_write_bytes(onnx_path, export_onnx(model, tokens, input_names=("tokens",), output_names=("logits",)))
    diff = verify_onnx(onnx_path, model, tokens)
    meta = json.loads(paths["config"].read_text())
    meta["onnx"] = {"file": onnx_path.name, "input": "tokens", "dtype": "int64",
                    "shape": [batch, prompt_len], "output": "logits", "max_abs_diff": diff}
    atomic_write_text(paths["config"], json.dumps(meta, indent=2) + "\n")
    if diff > tolerance:
        raise RuntimeError(f"ONNX export of {arch}: ONNX Runtime differs from PyTorch by {diff:.3g} "
                           f"(> {tolerance:g})")
    return {**paths, "onnx": onnx_path, "max_abs_diff": diff}


def load_exported(folder: str | Path):
    """Rebuild an exported model (architecture + weights) from its ``model.pt``."""
    checkpoint = torch.load(Path(folder) / "model.pt", map_location="cpu", weights_only=True)
    space = make_space(checkpoint["space"], **checkpoint["space_options"])
    arch = space.parse(checkpoint["arch"])
    model = space.build(arch)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), arch, space
