"""One device's predictors of several metrics, saved as one checkpoint.

A token model's search optimises per-token decode latency, prefill latency and
memory at once, and a device that cannot run the search (a phone, a board of
the farm) must supply all three from its predictor.  Each metric has its own
member predictor (a few-shot predictor meta-trained on that metric's source
table, adapted on the device's measurements of it); this class keeps them
together::

    predictor = MultiMetricPredictor(space, {"decode_ms": p1, "prefill_ms": p2})
    predictor.fit(archs, {"decode_ms": [...], "prefill_ms": [...]})
    predictor.predict_metrics(archs) -> {"decode_ms": array, "prefill_ms": array}
    predictor.predict(archs) -> the first metric's array

The checkpoint stores each member's state under its metric's name.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from predictors.base import PREDICTORS, Predictor, check_measurements


class MultiMetricPredictor(Predictor):
    name = "multi_metric"

    def __init__(self, space, members: Mapping[str, Predictor]):
        super().__init__(space)
        if not members:
            raise ValueError("a multi-metric predictor needs at least one metric")
        bad = [m for m in members if not m or "/" in m]
        if bad:
            raise ValueError(f"metric names must be non-empty and hold no '/': {bad}")
        self.members = dict(members)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.members)

    @property
    def min_measurements(self) -> int:  # type: ignore[override]
        return max(p.min_measurements for p in self.members.values())

    @property
    def adapted_to_device(self) -> bool:
        return all(p.adapted_to_device for p in self.members.values())

    def encode(self, archs: Sequence[Any]) -> dict[str, Any]:
        return {metric: p.encode(archs) for metric, p in self.members.items()}

    def fit(self, archs: Sequence[Any],  # type: ignore[override]
            values: Mapping[str, Sequence[float]]) -> "MultiMetricPredictor":
        """Adapt every member on its metric's measurements of the same ``archs``."""
        if not isinstance(values, Mapping):
            raise ValueError(f"a multi-metric predictor fits a mapping metric -> values "
                             f"({', '.join(self.metrics)}), got {type(values).__name__}")
        archs = self.parse_all(archs)
        checked = {m: check_measurements(archs, values[m], self.min_measurements) for m in self._named(values)}
        return self.fit_encoded(self.encode(archs), checked)

    def fit_encoded(self, encoded: Mapping[str, Any], values: Mapping[str, np.ndarray]) -> "MultiMetricPredictor":
        for metric in self._named(values):
            self.members[metric].fit_encoded(encoded[metric], np.asarray(values[metric], dtype=float))
        return self

    def _named(self, values: Mapping[str, Any]) -> list[str]:
        missing = [m for m in self.metrics if m not in values]
        unknown = [m for m in values if m not in self.members]
        if missing or unknown:
            raise ValueError(f"measurements must name exactly the metrics {list(self.metrics)}; "
                             f"missing {missing}, unknown {unknown}")
        return list(self.metrics)

    def predict_encoded(self, encoded: Mapping[str, Any]) -> np.ndarray:
        first = self.metrics[0]
        return self.members[first].predict_encoded(encoded[first])

    def predict_metrics(self, archs: Sequence[Any]) -> dict[str, np.ndarray]:
        archs = self.parse_all(archs)
        if not archs:
            return {m: np.zeros(0) for m in self.metrics}
        encoded = self.encode(archs)
        return {m: np.asarray(p.predict_encoded(encoded[m]), dtype=float) for m, p in self.members.items()}

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {"metrics": list(self.metrics), "members": {}}
        arrays: dict[str, np.ndarray] = {}
        for metric, predictor in self.members.items():
            member_meta, member_arrays = predictor.get_state()
            meta["members"][metric] = {"predictor": predictor.name, "state": member_meta}
            arrays.update({f"{metric}/{k}": v for k, v in member_arrays.items()})
        return meta, arrays

    @classmethod
    def from_state(cls, space, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "MultiMetricPredictor":
        members = {}
        try:
            for metric in meta["metrics"]:
                member = meta["members"][metric]
                prefix = f"{metric}/"
                mine = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
                members[metric] = PREDICTORS.get(member["predictor"]).from_state(space, member["state"], mine)
        except KeyError as exc:
            raise ValueError(f"multi-metric checkpoint is missing {exc.args[0]!r}") from None
        return cls(space, members)
