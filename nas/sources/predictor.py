"""The ``predictor`` latency source: latency from a saved predictor, no device needed.

``latency: {predictor: runs/my_device.npz}`` or ``latency: {predictor: nb201}``
(a shipped checkpoint: the un-adapted average source device; fine-tune it on
the target device first with ``hwnas predictor finetune`` for real numbers).
Predictions are instant, so they are not cached in the measurement store;
the fingerprint carries the checkpoint's content hash so runs stay comparable.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from nas.options import PATH_OR_NAME
from nas.sources.base import LATENCY_SOURCES, MINIMIZE, LatencySource, RunContext
from predictors import load_predictor, resolve_checkpoint, shipped_checkpoints


@dataclass(frozen=True)
class PredictorOptions:
    #: a checkpoint path or the name of a shipped checkpoint
    predictor: str = field(metadata=PATH_OR_NAME)

    def __post_init__(self):
        if not self.predictor:
            raise ValueError(f"predictor must be a checkpoint path or a shipped name "
                             f"({', '.join(shipped_checkpoints())})")


class PredictorLatency(LatencySource):
    kind = "predictor"
    metrics = {"latency_ms": MINIMIZE}
    Options = PredictorOptions
    cheap = True

    def __init__(self, options: PredictorOptions, ctx: RunContext):
        super().__init__(options, ctx)
        path = resolve_checkpoint(options.predictor)
        self.predictor = load_predictor(path, space=ctx.space)
        self.checkpoint = str(path)
        self.digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "predictor": self.predictor.name, "checkpoint_sha1": self.digest}

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        return [{"latency_ms": float(ms)} for ms in self.predictor.predict(archs)]


LATENCY_SOURCES.register("predictor", PredictorLatency)
