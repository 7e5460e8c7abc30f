"""The ``predictor`` latency source: latency from a saved predictor, no device needed.

``latency: {predictor: runs/my_device.npz}`` or ``latency: {predictor: nb201}``
(every metric the checkpoint predicts: ``latency_ms``, or e.g. ``decode_ms``,
``prefill_ms`` and ``memory_mb`` for a token model's device checkpoint)
(a shipped checkpoint: the un-adapted average source device; fine-tune it on
the target device first with ``hwnas predictor finetune`` for real numbers).
Predictions are instant, so they are not cached in the measurement store;
the fingerprint carries the checkpoint's content hash so runs stay comparable.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

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

    @classmethod
    def metrics_of(cls, options: PredictorOptions) -> dict[str, str]:
        # only the header is needed, but npz keeps it beside the arrays: loading is milliseconds
        return {m: MINIMIZE for m in load_predictor(resolve_checkpoint(options.predictor)).metrics}

    def __init__(self, options: PredictorOptions, ctx: RunContext):
        super().__init__(options, ctx)
        path = resolve_checkpoint(options.predictor)
        self.predictor = load_predictor(path, space=ctx.space)
        self.metrics = {m: MINIMIZE for m in self.predictor.metrics}
        self.checkpoint = str(path)
        self.digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "predictor": self.predictor.name, "checkpoint_sha1": self.digest}

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        predicted = self.predictor.predict_metrics(archs)
        return [{m: float(predicted[m][i]) for m in self.metrics} for i in range(len(archs))]

    @property
    def shipped(self) -> bool:
        """Whether the checkpoint is one shipped with the package (never a device's own)."""
        return Path(self.checkpoint).resolve() in {p.resolve() for p in shipped_checkpoints().values()}

    def constraint_warning(self, constraints: Mapping[str, float]) -> str | None:
        """The warning for an absolute latency bound on a predictor whose milliseconds are
        not the target device's (``None`` when there is nothing to warn about)."""
        bounds = {m: b for m, b in constraints.items() if m in self.metrics}
        if not bounds or self.predictor.adapted_to_device:
            return None
        what = "the shipped checkpoint" if self.shipped else "the un-adapted checkpoint"
        return (f"latency: {{predictor: {self.options.predictor}}} is {what} {self.checkpoint}: its 'ms' "
                f"are those of an average source device, not of your hardware (they can be several times "
                f"off), so search.constraints "
                + ", ".join(f"{m} <= {b:g}" for m, b in bounds.items())
                + " is not an absolute budget on your device; adapt the predictor first "
                  "(hwnas predictor finetune, or hwnas device add and latency: {device: NAME})")


LATENCY_SOURCES.register("predictor", PredictorLatency)
