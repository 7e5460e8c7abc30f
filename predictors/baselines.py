"""Baseline predictors the few-shot predictor is compared against.

* ``macs``: latency proportional to MACs (the FLOPs proxy), calibrated to ms
  by a least-squares line through the device's measurements when given.
* ``lut``: a layer-wise lookup table, latency = intercept + sum of per-block
  costs, the costs fitted by ridge least squares from whole-network
  measurements (needs a space with ``layer_keys`` and enough measurements to
  cover every block; predicting an arch with an unseen block is an error).
* ``transfer``: the target device's latency as a ridge combination of the
  source devices' measured latencies (mean-normalised), fitted on the target's
  measurements; only archs present in the source table can be predicted.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from predictors.base import Predictor


class MACsProxy(Predictor):
    name = "macs"

    def __init__(self, space, slope: float = 1e-6, intercept: float = 0.0):
        super().__init__(space)
        #: ms per MAC and ms offset; the default reports MMACs as "ms" (rank-only use)
        self.slope = float(slope)
        self.intercept = float(intercept)

    def encode(self, archs):
        return np.array([self.space.features(a)["macs"] for a in archs], dtype=float)

    def fit_encoded(self, macs, latency_ms):
        y = np.asarray(latency_ms, dtype=float)
        if np.ptp(macs) == 0:
            self.slope, self.intercept = 0.0, float(y.mean())
        else:
            self.slope, self.intercept = (float(v) for v in np.polyfit(macs, y, 1))
        return self

    def predict_encoded(self, macs):
        return self.slope * macs + self.intercept

    def get_state(self):
        return {"slope": self.slope, "intercept": self.intercept}, {}

    @classmethod
    def from_state(cls, space, meta, arrays):
        return cls(space, meta["slope"], meta["intercept"])


class LayerLUT(Predictor):
    name = "lut"

    def __init__(self, space, ridge: float = 1e-3):
        super().__init__(space)
        if not hasattr(space, "layer_keys"):
            raise ValueError(f"space {space.name!r} has no layer_keys(); a lookup table needs them")
        self.ridge = float(ridge)
        self.costs: dict[str, float] = {}
        self.intercept = 0.0

    def _counts(self, archs, keys: list[str], strict: bool) -> np.ndarray:
        column = {k: i for i, k in enumerate(keys)}
        counts = np.zeros((len(archs), len(keys)))
        for row, arch in enumerate(archs):
            for key in self.space.layer_keys(arch):
                if key not in column:
                    if strict:
                        raise ValueError(f"lookup table has no cost for block {key!r} (in {arch}); "
                                         f"fit it on measurements that include that block")
                    continue
                counts[row, column[key]] += 1
        return counts

    def fit_encoded(self, archs, latency_ms):
        y = np.asarray(latency_ms, dtype=float)
        keys = sorted({k for a in archs for k in self.space.layer_keys(a)})
        X = np.hstack([np.ones((len(archs), 1)), self._counts(archs, keys, strict=False)])
        penalty = self.ridge * np.eye(X.shape[1])
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        w = np.linalg.solve(X.T @ X + penalty, X.T @ y)
        self.intercept = float(w[0])
        self.costs = {k: float(c) for k, c in zip(keys, w[1:])}
        return self

    def predict_encoded(self, archs):
        if not self.costs:
            raise ValueError("lookup table is empty: fit it on measurements first")
        keys = list(self.costs)
        return self.intercept + self._counts(archs, keys, strict=True) @ np.array([self.costs[k] for k in keys])

    def get_state(self):
        return {"ridge": self.ridge, "intercept": self.intercept, "costs": self.costs}, {}

    @classmethod
    def from_state(cls, space, meta, arrays):
        lut = cls(space, meta["ridge"])
        lut.intercept = float(meta["intercept"])
        lut.costs = {k: float(v) for k, v in meta["costs"].items()}
        return lut


class SourceTransfer(Predictor):
    name = "transfer"

    def __init__(self, space, archs: Sequence[Any], latency_ms: np.ndarray, devices: Sequence[str],
                 ridge: float = 0.1, normalised: bool = False):
        super().__init__(space)
        archs = self.parse_all(archs)
        table = np.asarray(latency_ms, dtype=float)
        if table.shape != (len(archs), len(devices)):
            raise ValueError(f"source table must be ({len(archs)}, {len(devices)}), got {table.shape}")
        self.archs = [str(a) for a in archs]
        self.row = {a: i for i, a in enumerate(self.archs)}
        self.devices = list(devices)
        self.table = table if normalised else table / table.mean(axis=0)
        self.ridge = float(ridge)
        self.coef: np.ndarray | None = None
        self.offset = 0.0
        self.scale = 1.0

    def encode(self, archs):
        rows = []
        for arch in archs:
            key = str(arch)
            if key not in self.row:
                raise ValueError(f"transfer baseline has no source latencies for {key}")
            rows.append(self.row[key])
        return self.table[np.array(rows, dtype=np.int64)]

    def fit_encoded(self, S, latency_ms):
        y = np.asarray(latency_ms, dtype=float)
        self.scale = float(y.mean())
        center = S.mean(axis=0)
        Sc = S - center
        self.coef = np.linalg.solve(Sc.T @ Sc + self.ridge * np.eye(S.shape[1]), Sc.T @ (y / self.scale - 1.0))
        self.offset = float(1.0 - center @ self.coef)
        return self

    def predict_encoded(self, S):
        if self.coef is None:  # un-adapted: the average source device
            return S.mean(axis=1)
        return self.scale * (S @ self.coef + self.offset)

    def get_state(self):
        meta = {"devices": self.devices, "ridge": self.ridge, "archs": self.archs,
                "offset": self.offset, "scale": self.scale}
        arrays = {"table": self.table}
        if self.coef is not None:
            arrays["coef"] = self.coef
        return meta, arrays

    @classmethod
    def from_state(cls, space, meta, arrays):
        model = cls(space, meta["archs"], arrays["table"], meta["devices"], meta["ridge"], normalised=True)
        model.offset, model.scale = float(meta["offset"]), float(meta["scale"])
        model.coef = arrays.get("coef")
        return model
