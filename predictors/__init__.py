"""Latency predictors, resolved by name through ``PREDICTORS``.

``load_predictor(path_or_name)`` reads any saved predictor; the names of the
checkpoints shipped with the package (``nb201``, ``fbnet``: the few-shot
predictor meta-trained on HELP's source devices) work in place of a path.
"""
from __future__ import annotations

from pathlib import Path

from predictors.base import PREDICTORS, Predictor, read_checkpoint
from search_spaces import make_space

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


def shipped_checkpoints() -> dict[str, Path]:
    """Name -> path of the checkpoints that ship with the package."""
    return {p.stem: p for p in sorted(CHECKPOINT_DIR.glob("*.npz"))}


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A checkpoint path, or the name of a shipped checkpoint."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    shipped = shipped_checkpoints()
    if str(path_or_name) in shipped:
        return shipped[str(path_or_name)]
    raise FileNotFoundError(f"predictor checkpoint {str(path_or_name)!r} is neither a file nor a shipped "
                            f"checkpoint ({', '.join(shipped) or 'none'})")


def load_predictor(path_or_name: str | Path, space=None) -> Predictor:
    """Load a saved predictor; ``space`` (optional) must match the checkpoint's."""
    path = resolve_checkpoint(path_or_name)
    header, arrays = read_checkpoint(path)
    cls = PREDICTORS.get(header["predictor"])
    if space is None:
        space = make_space(header["space"], **header.get("space_options", {}))
    elif space.name != header["space"]:
        raise ValueError(f"{path} is a predictor for space {header['space']!r}, not {space.name!r}")
    return cls.from_state(space, header["state"], arrays)


from predictors.baselines import LayerLUT, MACsProxy, SourceTransfer  # noqa: E402
from predictors.fewshot import FewShotPredictor  # noqa: E402
from predictors.mixture import SourceMixture  # noqa: E402
from predictors.multi import MultiMetricPredictor  # noqa: E402

for _cls in (FewShotPredictor, MACsProxy, LayerLUT, SourceTransfer, SourceMixture, MultiMetricPredictor):
    PREDICTORS.register(_cls.name, _cls)

__all__ = ["PREDICTORS", "Predictor", "FewShotPredictor", "MACsProxy", "LayerLUT", "SourceTransfer",
           "SourceMixture", "MultiMetricPredictor", "load_predictor", "resolve_checkpoint", "shipped_checkpoints"]
