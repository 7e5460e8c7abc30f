"""The latency-predictor interface and its checkpoint format.

Lifecycle::

    predictor = PREDICTORS.get(name)(space, **options)   # or FewShotPredictor.pretrain(...)
    predictor.fit(archs, latency_ms)      # calibrate / adapt to one device's measurements
    predictor.predict(archs) -> ms        # numpy array, one value per arch
    predictor.save(path); load_predictor(path)  # identical predictions after the round trip

``fit``/``predict`` are ``encode`` followed by ``fit_encoded``/``predict_encoded``;
subclasses implement the latter three.

``archs`` may be architecture objects or canonical strings; either way they
go through ``space.parse`` so a bad string fails with the token named.

A checkpoint is one ``.npz`` file: numeric arrays plus a JSON header
(``__meta__``) naming the predictor, the space and its options.  No pickles,
so loading a checkpoint never executes code.
"""
from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from nas.registry import Registry

FORMAT_VERSION = 1


class Predictor(abc.ABC):
    #: registry name, set by subclasses
    name: str = ""

    def __init__(self, space):
        self.space = space

    # --- what a predictor provides ----------------------------------------------------
    def encode(self, archs: Sequence[Any]) -> Any:
        """Parsed archs -> whatever ``fit_encoded``/``predict_encoded`` consume.

        Split out so evaluations encode a whole space once and then fit and
        predict many times on subsets (see ``take``)."""
        return list(archs)

    @abc.abstractmethod
    def fit_encoded(self, encoded: Any, latency_ms: np.ndarray) -> "Predictor":
        """Calibrate/adapt to one device's measurements; returns ``self``."""

    @abc.abstractmethod
    def predict_encoded(self, encoded: Any) -> np.ndarray:
        """Predicted latency in milliseconds, one per encoded arch."""

    @abc.abstractmethod
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able settings, named arrays) that ``from_state`` rebuilds from."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, space, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Predictor":
        """Inverse of ``get_state``."""

    #: fewest measurements ``fit`` accepts
    min_measurements = 2

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics ``predict_metrics`` returns; a single-metric predictor predicts latency."""
        return ("latency_ms",)

    def predict_metrics(self, archs: Sequence[Any]) -> dict[str, np.ndarray]:
        """Every metric of ``metrics`` for ``archs`` (hook: multi-metric predictors override it)."""
        return {"latency_ms": self.predict(archs)}

    @property
    def adapted_to_device(self) -> bool:
        """Whether predictions are in a measured device's milliseconds (``fit`` ran or the
        checkpoint was calibrated); un-adapted predictors answer in other units (e.g. the
        average source device of a meta-trained predictor)."""
        return True

    # --- the public entry points -----------------------------------------------------
    def fit(self, archs: Sequence[Any], latency_ms: Sequence[float]) -> "Predictor":
        archs = self.parse_all(archs)
        y = check_measurements(archs, latency_ms, minimum=self.min_measurements)
        return self.fit_encoded(self.encode(archs), y)

    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        archs = self.parse_all(archs)
        if not archs:
            return np.zeros(0)
        return np.asarray(self.predict_encoded(self.encode(archs)), dtype=float)

    # --- shared plumbing -----------------------------------------------------------
    def parse_all(self, archs: Iterable[Any]) -> list[Any]:
        return [self.space.parse(a if isinstance(a, str) else str(a)) for a in archs]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        meta, arrays = self.get_state()
        header = {"format": FORMAT_VERSION, "predictor": self.name, "space": self.space.name,
                  "space_options": self.space.options(), "state": meta}
        clash = [k for k in arrays if k.startswith("__")]
        if clash:
            raise ValueError(f"array names may not start with '__': {clash}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz"
            np.savez_compressed(f, __meta__=np.array(json.dumps(header, sort_keys=True)), **arrays)
        return path


PREDICTORS: Registry[type[Predictor]] = Registry("latency predictor")


def take(encoded: Any, index: Sequence[int]) -> Any:
    """The rows ``index`` of an encoding (dict of arrays, array or list)."""
    index = np.asarray(index, dtype=np.int64)
    if isinstance(encoded, dict):
        return {k: take(v, index) for k, v in encoded.items()}
    if isinstance(encoded, np.ndarray):
        return encoded[index]
    return [encoded[i] for i in index]


def check_measurements(archs: Sequence[Any], latency_ms: Sequence[float], minimum: int = 1) -> np.ndarray:
    """Latencies as a float array; reject mismatched lengths and non-positive/NaN values."""
    y = np.asarray(latency_ms, dtype=float).reshape(-1)
    if len(archs) != len(y):
        raise ValueError(f"got {len(archs)} archs but {len(y)} latencies")
    if len(y) < minimum:
        raise ValueError(f"need at least {minimum} measurement(s), got {len(y)}")
    bad = np.flatnonzero(~np.isfinite(y) | (y <= 0))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"latency of {archs[i]} must be a positive number, got {y[i]}")
    return y


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictor checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a predictor checkpoint (.npz): {exc}") from None
    if "__meta__" not in arrays:
        raise ValueError(f"{path} is not a predictor checkpoint: no __meta__ header")
    header = json.loads(str(arrays.pop("__meta__")))
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {header.get('format')} is not supported "
                         f"(expected {FORMAT_VERSION})")
    return header, arrays
