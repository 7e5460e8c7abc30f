"""Export the best architectures of a finished run.

For each of the top-K Pareto architectures, ``RUN_DIR/export/<rank>/`` gets:

* ``arch.txt`` (canonical string) and ``arch.json`` (decisions, metrics, features)
* ``model.pt``: ``{"arch", "space", "space_options", "state_dict", "weights"}``
* ``model.onnx``, verified against PyTorch with ONNX Runtime
* whatever the space adds (``SearchSpace.export_extras``): ``hybrid_slm``
  writes ``config.json``, which rebuilds the model with
  ``search_spaces.slm.export.load_slm(folder)`` alone

Weights come from the run's accuracy source when it can provide them
(``trained_model(arch)``: re-training with the search's seed, or extraction
from a supernet); otherwise the checkpoint holds the initialisation and says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nas.recipe import load_recipe


@dataclass
class Exported:
    rank: int
    arch: str
    folder: Path
    onnx_max_abs_diff: float
    weights: str


def export_run(run_dir: str | Path, top: int, progress: bool = True) -> list[Exported]:
    import torch

    from nas.search import Search

    run_dir = Path(run_dir)
    recipe_path = run_dir / "recipe.yaml"
    front_path = run_dir / "front.json"
    for path in (recipe_path, front_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {str(run_dir)!r} a finished search run?")
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    recipe = load_recipe(recipe_path)
    recipe.output = str(run_dir)
    search = Search(recipe, progress=progress)
    try:
        front = json.loads(front_path.read_text())["front"][:top]
        out = []
        for rank, row in enumerate(front, start=1):
            arch = search.space.parse(row["arch"])
            folder = run_dir / "export" / str(rank)
            folder.mkdir(parents=True, exist_ok=True)
            trained = getattr(search.accuracy, "trained_model", None)
            model = trained(arch) if trained is not None else search.space.build(arch)
            weights = f"{search.accuracy.kind}" if trained is not None else "random-init"
            (folder / "arch.txt").write_text(str(arch) + "\n")
            (folder / "arch.json").write_text(json.dumps({
                "arch": str(arch), "space": search.space.name, "space_options": search.space.options(),
                "decisions": search.space.encode(arch), "metrics": row,
                "features": search.space.features(arch), "weights": weights}, indent=2, default=str))
            torch.save({"arch": str(arch), "space": search.space.name,
                        "space_options": search.space.options(), "state_dict": model.state_dict(),
                        "weights": weights}, folder / "model.pt")
            diff = search.space.export_onnx(model.eval(), arch, folder / "model.onnx")
            search.space.export_extras(model, arch, folder)
            out.append(Exported(rank, str(arch), folder, diff, weights))
        return out
    finally:
        search.close()


def load_exported(folder: str | Path):
    """Rebuild an exported model (architecture + weights) from its ``model.pt``."""
    import torch

    from search_spaces import make_space

    checkpoint = torch.load(Path(folder) / "model.pt", map_location="cpu", weights_only=True)
    space = make_space(checkpoint["space"], **checkpoint["space_options"])
    arch = space.parse(checkpoint["arch"])
    model = space.build(arch)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), arch, space
