"""The ``predictor`` latency source: latency from a saved predictor, no device needed.

``latency: {predictor: runs/my_device.npz}`` or ``latency: {predictor: nb201}``
(a shipped checkpoint: the un-adapted average source device; fine-tune it on
the target device first with ``hwnas predictor finetune`` for real numbers).
Predictions are instant, so they are not cached in the measurement store;
the fingerprint carries the checkpoint's content hash so runs stay comparable.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

from nas.sources import LATENCY_SOURCES, MINIMIZE, LatencySource, RunContext, reject_unknown


class PredictorLatency(LatencySource):
    kind = "predictor"
    metrics = {"latency_ms": MINIMIZE}

    def __init__(self, predictor, checkpoint: str, digest: str):
        self.predictor = predictor
        self.checkpoint = checkpoint
        self.digest = digest

    @classmethod
    def from_recipe(cls, spec: Any, options: Mapping[str, Any], ctx: RunContext) -> "PredictorLatency":
        from predictors import load_predictor, resolve_checkpoint, shipped_checkpoints

        reject_unknown(options, [], "options")
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"predictor must be a checkpoint path or a shipped name "
                             f"({', '.join(shipped_checkpoints())}), got {spec!r}")
        local = ctx.resolve_path(spec)
        path = resolve_checkpoint(local if local.is_file() else spec)
        predictor = load_predictor(path, space=ctx.space)
        digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
        return cls(predictor, str(path), digest)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "predictor": self.predictor.name, "checkpoint_sha1": self.digest}

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        return [{"latency_ms": float(ms)} for ms in self.predictor.predict(archs)]


LATENCY_SOURCES.register("predictor", PredictorLatency)
