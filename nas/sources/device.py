"""The ``device`` latency source: an onboarded device's adapted predictor.

``latency: {device: NAME}`` (``hwnas device add NAME ...`` first; ``home``
overrides ``$HWNAS_HOME``).  It provides every metric the device's predictor
predicts: ``latency_ms`` for a network runner, ``decode_ms``, ``prefill_ms``
and ``memory_mb`` for a token model onboarded with ``--runner slm``.  An
architecture already measured on the device gets its measurement instead of
a prediction (real measurements win).  After the search,
:meth:`DeviceLatency.remeasure` measures the Pareto front on the real device
with the onboarding runner, so predicted and measured values are reported
side by side.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from hardware.protocol import Protocol
from hardware.store import hwnas_home, space_key
from nas.devices import device_dir, load_record
from nas.options import PATH
from nas.sources.base import LATENCY_SOURCES, MINIMIZE, CachedSource, LatencySource, RunContext
from nas.sources.runner import RunnerLatency
from nas.sources.slm import SLMLatency
from predictors import load_predictor

#: the ``--runner`` of ``hwnas device add`` that measures token models (the ``slm`` source)
TOKEN_RUNNER = "slm"


def measuring_source(runner: str, options: Mapping[str, Any], protocol_options: Mapping[str, Any],
                     ctx: RunContext, device: str | None = None) -> CachedSource:
    """The source that measures an onboarded device: ``slm`` (prefill, decode, memory of
    token models; ``options`` are the slm section's, e.g. ``threads``, ``context_len``) or
    any registered network runner (``latency_ms``)."""
    if runner == TOKEN_RUNNER:
        # protocol keys left out take the slm source's own defaults (its parse_options)
        section = {"slm": "cpu", **options, **protocol_options}
        if device is not None:
            section["device_name"] = device
        return SLMLatency(SLMLatency.parse_options(section, "device", "", ctx.base_dir), ctx)
    return RunnerLatency.build(runner, ctx, Protocol(**dict(protocol_options)), device=device, **options)


def device_metrics(record: Mapping[str, Any]) -> list[str]:
    """The metrics an onboarded device's predictor provides (records before multi-metric
    onboarding predict latency only)."""
    return list(record.get("metrics") or ["latency_ms"])


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

    @classmethod
    def metrics_of(cls, options: DeviceOptions) -> dict[str, str]:
        record = load_record(options.device, Path(options.home) if options.home else None)
        return {m: MINIMIZE for m in device_metrics(record)}

    def __init__(self, options: DeviceOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.name = options.device
        self.home = Path(options.home) if options.home else hwnas_home()
        self.record = record = load_record(self.name, self.home)
        self.metrics = {m: MINIMIZE for m in device_metrics(record)}
        if record["space"]["name"] != ctx.space.name:
            raise ValueError(f"device {self.name!r} was onboarded for space {record['space']['name']!r}, "
                             f"not {ctx.space.name!r}")
        self.path = device_dir(self.name, self.home) / record["predictor"]
        # the checkpoint's own space: a recipe arch outside it fails to parse, naming the token
        self.predictor = load_predictor(self.path)
        self.key = record["source_key"]
        # the device's measurements live under its fingerprint; bind the name in this store too
        described = record.get("source_fingerprint") or {"kind": "runner", **record["fingerprint"],
                                                          "protocol": record["protocol"]}
        ctx.store.register_source(self.key, described)
        ctx.store.register_device(self.name, self.key, record.get("source_fingerprint") or record["fingerprint"])

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
        predicted = self.predictor.predict_metrics(todo) if todo else {}
        row = {t: i for i, t in enumerate(todo)}
        return [{m: float(measured[t][m]) if t in measured else float(predicted[m][row[t]]) for m in self.metrics}
                for t in texts]

    def remeasure(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        """Measure ``archs`` on the real device with the onboarding runner, in one batch;
        those not measured before are stored, so afterwards they win over predictions."""
        source = measuring_source(self.record["runner"], self.record["runner_options"], self.record["protocol"],
                                  self.ctx, device=self.name)
        try:
            if source.key != self.key:
                raise ValueError(f"device {self.name!r} now measures under another fingerprint "
                                 f"({source.fingerprint()}); onboard it again under a new name")
            metrics = source.remeasure(list(archs))
        finally:
            source.close()
        return [{m: v[m] for m in self.metrics} for v in metrics]


LATENCY_SOURCES.register("device", DeviceLatency)
