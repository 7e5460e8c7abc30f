"""The ``runner`` latency source: real measurements through a registered runner.

``latency: {runner: onnxruntime, threads: 1, batch_size: 1, rounds: 5}``

The section's keys are the runner's own options (``RUNNERS[name].Options``),
the protocol's (``rounds``, ``repeats``, ``warmup``, ``target_ms``,
``max_iterations``) and ``device`` (a name bound to these measurement
conditions in the store).  Results are cached in the measurement store under
the runner's fingerprint plus the protocol, so a resumed or repeated search
never re-measures.

Rankings inside one interleaved batch are robust to load; values across
batches, processes and days are not.  So every batch also re-times a few
fixed *anchor* architectures of the space (``anchors``: the smallest, median
and largest by MACs of a seeded pool).  The store keeps each anchor's
reference latency from the quietest batch seen; a batch's *drift* is the
median ratio of its anchor timings to those references.  Every latency of
the batch is divided by its drift, which puts all batches on the quiet
scale.  A batch that drifted by more than ``drift_tolerance`` (the machine
was busy) is measured again, up to ``drift_retries`` times with a growing
pause; if it is still off, its rows are stored flagged unreliable with the
drift factor and are measured afresh by the next run.  The load average,
CPU clock, drift and timing window are stored with every row.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from hardware import RUNNERS, Runner
from hardware.protocol import Candidate, Measurement, Protocol
from hardware.store import space_key
from hardware.timing import machine_conditions
from nas.options import RecipeError, option_fields, parse_section, resolve_paths
from nas.sources.base import (LATENCY_SOURCES, MINIMIZE, CachedSource, Chunk, LatencySource, RunContext,
                              batch_seed, int8_identity, make_progress, pop_protocol)

log = logging.getLogger("hwnas.measure")
#: options of the anchor check (not part of the fingerprint: they change which
#: batches are trusted, not what a latency means)
ANCHOR_KEYS = ("anchors", "drift_tolerance", "drift_retries", "drift_pause_s")


@dataclass(frozen=True)
class RunnerLatencyOptions:
    runner: str
    #: an instance of ``RUNNERS[runner].Options``
    runner_options: Any
    protocol: Protocol = Protocol()
    #: a device name bound to these measurement conditions in the store
    device: str | None = None
    #: anchor architectures re-timed in every batch (0 turns the check off)
    anchors: int = 3
    #: a batch whose anchors are this much slower than their references is re-measured
    drift_tolerance: float = 0.15
    drift_retries: int = 2
    #: pause before the first re-measurement (doubles each time)
    drift_pause_s: float = 2.0

    def __post_init__(self):
        if self.anchors < 0 or self.drift_retries < 0 or self.drift_pause_s < 0:
            raise ValueError("anchors, drift_retries and drift_pause_s must be >= 0")
        if self.drift_tolerance <= 0:
            raise ValueError(f"drift_tolerance must be > 0, got {self.drift_tolerance}")


class RunnerLatency(CachedSource, LatencySource):
    kind = "runner"
    metrics = {"latency_ms": MINIMIZE}
    Options = RunnerLatencyOptions

    def __init__(self, options: RunnerLatencyOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.runner: Runner = RUNNERS.get(options.runner)(**asdict(options.runner_options))
        self.protocol = options.protocol
        if options.device:
            # refuse at once when the name already stands for other conditions
            ctx.store.register_device(options.device, self.key, self.fingerprint())

    @classmethod
    def build(cls, runner: str, ctx: RunContext, protocol: Protocol = Protocol(), device: str | None = None,
              **runner_options) -> "RunnerLatency":
        """From Python values (the command line, onboarding); checked like a recipe section."""
        section = {"runner": runner, **runner_options, **asdict(protocol)}
        if device is not None:
            section["device"] = device
        return cls(cls.parse_options(section, "runner", "", ctx.base_dir), ctx)

    @classmethod
    def parse_options(cls, section: Mapping[str, Any], where: str, prefix: str,
                      base_dir: Path) -> RunnerLatencyOptions:
        data = dict(section)
        name = data.pop("runner")
        if not isinstance(name, str) or name not in RUNNERS:
            raise RecipeError(f"{where}: {prefix}runner: unknown runner {name!r}; valid names: "
                              f"{', '.join(RUNNERS.names())}")
        device = data.pop("device", None)
        if device is not None and not isinstance(device, str):
            raise RecipeError(f"{where}: {prefix}device: expected a device name, got {device!r}")
        protocol = pop_protocol(data, where, prefix)
        anchor = {k: data.pop(k) for k in ANCHOR_KEYS if k in data}
        runner_options = resolve_paths(parse_section(RUNNERS.get(name).Options, data, where, prefix), base_dir)
        return parse_section(RunnerLatencyOptions, {"runner": name, "runner_options": runner_options,
                                                    "protocol": protocol, "device": device, **anchor},
                             where, prefix)

    @classmethod
    def section(cls, options: RunnerLatencyOptions) -> dict[str, Any]:
        out: dict[str, Any] = {"runner": options.runner}
        out.update({f.name: getattr(options.runner_options, f.name) for f in option_fields(options.runner_options)})
        out.update(asdict(options.protocol))
        if options.device is not None:
            out["device"] = options.device
        out.update({k: getattr(options, k) for k in ANCHOR_KEYS})
        return out

    @classmethod
    def secret_keys(cls, options: RunnerLatencyOptions) -> list[str]:
        return super().secret_keys(options.runner_options)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.runner.fingerprint().to_dict(), "protocol": asdict(self.protocol),
                **int8_identity(self.ctx.space, self.runner.int8_scheme())}

    def int8_weights(self) -> str:
        return self.runner.int8_weights

    def anchor_archs(self) -> dict[str, Any]:
        """The space's anchors: smallest, median, largest (by MACs) of a seeded pool."""
        if self.options.anchors == 0:
            return {}
        rng = np.random.default_rng(0)  # fixed: the anchors of a space never change
        pool = {str(a): a for a in (self.ctx.space.sample(rng) for _ in range(8 * self.options.anchors))}
        ranked = sorted(pool.values(), key=lambda a: (self.ctx.space.features(a)["macs"], str(a)))
        picks = np.linspace(0, len(ranked) - 1, min(self.options.anchors, len(ranked))).round().astype(int)
        return {str(ranked[i]): ranked[i] for i in dict.fromkeys(picks.tolist())}

    def _measure(self, archs: Mapping[str, Any]) -> dict[str, Measurement]:
        space, batch = self.ctx.space, self.runner.batch_size
        candidates = [Candidate(t, lambda a=a: (space.build(a), space.example_input(a, batch)),
                                space.int8_modules(a)) for t, a in archs.items()]
        rng = np.random.default_rng(batch_seed(archs))
        with make_progress(len(candidates), "measuring", self.ctx.progress) as bar:
            return self.runner.measure_batch(candidates, self.protocol, rng, progress=bar.update)

    def compute(self, todo: Mapping[str, Any]) -> Iterator[Chunk]:
        anchors = self.anchor_archs()
        skey = space_key(self.ctx.space)
        attempt, drift = 0, 1.0
        while True:
            start, conditions = time.time(), machine_conditions()
            results = self._measure({**todo, **anchors})
            start, end = self.runner.timing_window or (start, time.time())
            if not anchors:
                break
            observed = {a: results[a].latency_ms for a in anchors}
            references = self.ctx.store.anchors(self.key, skey)
            if set(references) != set(observed) or all(observed[a] <= references[a] for a in anchors):
                # no reference yet, or a quieter batch than the reference's: it becomes the reference
                self.ctx.store.set_anchors(self.key, skey, observed)
                drift = 1.0
            else:
                drift = float(np.median([observed[a] / references[a] for a in anchors]))
            if drift <= 1.0 + self.options.drift_tolerance or attempt >= self.options.drift_retries:
                break
            pause = self.options.drift_pause_s * 2 ** attempt
            log.warning("batch anchors ran %.2fx slower than their references (the machine is busy); "
                        "measuring the batch again in %.0f s (%d/%d)", drift, pause, attempt + 1,
                        self.options.drift_retries)
            time.sleep(pause)
            attempt += 1
        reliable = drift <= 1.0 + self.options.drift_tolerance
        if not reliable:
            log.warning("batch of %d stays %.2fx off after %d re-measurements: stored as unreliable "
                        "(scaled by the drift), measured again by the next run", len(todo), drift, attempt)
        meta = {**conditions, "anchor_drift": round(drift, 4), "start": start, "end": end, "attempts": attempt + 1}
        yield Chunk({t: _scaled(results[t], drift) for t in todo}, meta, reliable)

    def verify(self, count: int, seed: int = 0) -> list[tuple[str, float, float]]:
        """Re-time ``count`` stored rows (a seeded pick) in one batch, on the anchors' scale;
        ``(arch, stored ms, ms now)`` per row.  Stores nothing but anchor references."""
        skey = space_key(self.ctx.space)
        rows = [(a, m["latency_ms"]) for _, a, m, _ in self.ctx.store.all_results(self.key, skey)]
        if not rows:
            raise ValueError(f"nothing stored for {self.runner.fingerprint().describe()} and space "
                             f"{self.ctx.space.name!r}; measure first")
        picked = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:count]]
        chunk = next(self.compute({a: self.ctx.space.parse(a) for a, _ in picked}))
        return [(a, stored, chunk.results[a]["latency_ms"]) for a, stored in picked]

    def remeasure(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        """Time ``archs`` again in one interleaved batch (with the anchors, on their scale).
        Rows the store lacks are filled (an onboarded device's predicted archs); stored rows
        are left as they are: the first measurement stays the cached fact, and this one is
        a check reported beside the front."""
        todo = {str(a): a for a in archs}
        chunk = next(self.compute(todo))
        skey = space_key(self.ctx.space)
        stored = self.ctx.store.get_many(self.key, skey, list(todo), reliable_only=False)
        missing = {t: m for t, m in chunk.results.items() if t not in stored}
        if missing:
            self.ctx.store.put_many(self.key, skey, missing, chunk.meta, chunk.reliable)
        return [chunk.results[t] for t in todo]

    def invalidate(self, archs) -> int:
        """Drop stored rows, so they are measured again when next needed."""
        return self.ctx.store.delete(self.key, space_key(self.ctx.space), archs)

    def close(self) -> None:
        self.runner.close()


def _scaled(measurement: Measurement, drift: float) -> dict[str, float]:
    """A batch's latency on the quiet scale of its anchors' references."""
    metrics = measurement.to_metrics()
    if not math.isclose(drift, 1.0):
        metrics["latency_ms"] /= drift
    return metrics


LATENCY_SOURCES.register("runner", RunnerLatency)
