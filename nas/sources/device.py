"""The ``device`` latency source: an onboarded device's adapted predictor.

``latency: {device: NAME}`` (``hwnas device add NAME ...`` first; ``home``
overrides ``$HWNAS_HOME``).  An architecture already measured on the device
gets its measurement instead of a prediction (real measurements win).  After
the search, :meth:`DeviceLatency.remeasure` measures the Pareto front on
the real device with the onboarding runner, so predicted and measured latency
are reported side by side.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hardware.protocol import Protocol
from hardware.store import hwnas_home, space_key
from nas.devices import device_dir, load_record
from nas.options import PATH
from nas.sources.base import LATENCY_SOURCES, MINIMIZE, LatencySource, RunContext
from nas.sources.runner import RunnerLatency
from predictors import load_predictor


@dataclass(frozen=True)
class DeviceOptions:
    #: the onboarded device's name
    device: str
    #: hwnas home holding ``devices/NAME`` (default ``$HWNAS_HOME``)
    home: str | None = field(default=None, metadata=PATH)


class DeviceLatency(LatencySource):
    kind = "device"
    metrics = {"latency_ms": MINIMIZE}
    Options = DeviceOptions
    cheap = True

    def __init__(self, options: DeviceOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.name = options.device
        self.home = Path(options.home) if options.home else hwnas_home()
        self.record = record = load_record(self.name, self.home)
        if record["space"]["name"] != ctx.space.name:
            raise ValueError(f"device {self.name!r} was onboarded for space {record['space']['name']!r}, "
                             f"not {ctx.space.name!r}")
        self.path = device_dir(self.name, self.home) / record["predictor"]
        # the checkpoint's own space: a recipe arch outside it fails to parse, naming the token
        self.predictor = load_predictor(self.path)
        self.key = record["source_key"]
        # the device's measurements live under its fingerprint; bind the name in this store too
        ctx.store.register_source(self.key, {"kind": "runner", **record["fingerprint"],
                                             "protocol": record["protocol"]})
        ctx.store.register_device(self.name, self.key, record["fingerprint"])

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha1(self.path.read_bytes())
        return {"kind": self.kind, "device": self.name, "source_key": self.key,
                "predictor": digest.hexdigest()[:16]}

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        texts = [str(a) for a in archs]
        # real measurements win over predictions, also those of a busy batch (stored flagged,
        # already scaled by the batch's anchor drift): they are still closer than a prediction
        measured = self.ctx.store.get_many(self.key, space_key(self.ctx.space), texts, reliable_only=False)
        todo = [t for t in texts if t not in measured]
        predicted = dict(zip(todo, self.predictor.predict(todo))) if todo else {}
        return [{"latency_ms": float(measured[t]["latency_ms"]) if t in measured else float(predicted[t])}
                for t in texts]

    def remeasure(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        """Measure ``archs`` on the real device with the onboarding runner, in one batch;
        those not measured before are stored, so afterwards they win over predictions."""
        source = RunnerLatency.build(self.record["runner"], self.ctx, Protocol(**self.record["protocol"]),
                                     device=self.name, **self.record["runner_options"])
        if source.key != self.key:
            raise ValueError(f"device {self.name!r} now measures under another fingerprint "
                             f"({source.runner.fingerprint().describe()}); onboard it again under a new name")
        try:
            metrics = source.remeasure(list(archs))
        finally:
            source.close()
        return [{"latency_ms": m["latency_ms"]} for m in metrics]


LATENCY_SOURCES.register("device", DeviceLatency)
