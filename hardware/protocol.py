"""Latency measurement protocol that survives a noisy shared machine.

Timing every repeat of one architecture back to back lets slow drifts (other
processes, frequency scaling, thermal state) land on whole architectures and
scramble their ranking.  Instead, after preparing and warming a set of
candidates, the protocol runs several *rounds*; each round times every
candidate once, in a freshly shuffled (seeded) order.  A candidate's latency
is the median of its round medians, and the spread of those round medians is
recorded, so drift is spread evenly over the set and shows up as spread
rather than as bias.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Protocol:
    #: 10, not 5: on a 2-core VM, 100 mbv3 archs measured twice agreed with Spearman 0.935 at
    #: 5 rounds and 0.963 at 10 (benchmarks/measurement_reliability.py); building and
    #: warming the sessions, not the rounds, dominates the time a batch takes
    rounds: int = 10
    #: timing samples per candidate per round (their median is the round's value)
    repeats: int = 3
    #: a timing sample runs enough back-to-back forwards to last about this long
    target_ms: float = 20.0
    warmup: int = 3
    max_iterations: int = 200

    def __post_init__(self):
        for name in ("rounds", "repeats", "warmup", "max_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"protocol option {name!r} must be >= 1")
        if self.target_ms <= 0:
            raise ValueError("protocol option 'target_ms' must be > 0")


@dataclass
class Measurement:
    latency_ms: float
    #: relative interquartile range of the round medians
    spread: float
    round_medians: list[float] = field(default_factory=list)

    def to_metrics(self) -> dict[str, float]:
        return {"latency_ms": self.latency_ms, "latency_spread": self.spread}


@dataclass
class Candidate:
    """What the protocol needs to measure one network."""

    key: str
    build: Callable[[], Any]  # -> (model, example input)
    #: module paths of the float model to run in int8 (post-training quantization);
    #: empty for a float network
    int8_modules: tuple[str, ...] = ()


def measure(runner, candidates: Sequence[Candidate], protocol: Protocol = Protocol(),
            rng: np.random.Generator | None = None, progress: Callable[[int], None] | None = None
            ) -> dict[str, Measurement]:
    """Measure ``candidates`` with interleaved rounds, ``runner.max_prepared`` at a time
    (larger sets in anchor-linked groups)."""
    rng = np.random.default_rng(0) if rng is None else rng
    mixed = [c.key for c in candidates if c.int8_modules]
    if mixed and not runner.supports_int8:
        # before anything is prepared: a float timing must never stand in for an int8 one
        raise ValueError(f"runner {runner.name!r} has no int8 path; {len(mixed)} candidates ask for int8 "
                         f"layers (first: {mixed[0]}); measure them with runner 'onnxruntime'")
    chunk = max(2, int(runner.max_prepared))
    if len(candidates) <= chunk:
        return _measure_group(runner, list(candidates), protocol, rng, progress)
    # More candidates than can be held prepared: measure in groups, each with the
    # first candidate as a shared anchor.  Load that changes *between* groups
    # would otherwise bias whole groups; rescaling each group so its anchor
    # matches the anchor's median over all groups removes that drift.
    anchor, rest = candidates[0], list(candidates[1:])
    groups = [rest[i:i + chunk - 1] for i in range(0, len(rest), chunk - 1)]
    measured = []
    for group in groups:
        res = _measure_group(runner, [anchor, *group], protocol, rng, None)
        measured.append(res)
        if progress is not None:
            progress(len(group) + (1 if len(measured) == 1 else 0))
    anchor_values = [res[anchor.key].latency_ms for res in measured]
    reference = float(np.median(anchor_values))
    results: dict[str, Measurement] = {}
    for res, anchor_ms in zip(measured, anchor_values):
        scale = reference / anchor_ms if anchor_ms > 0 else 1.0
        for key, m in res.items():
            if key != anchor.key:
                results[key] = Measurement(m.latency_ms * scale, m.spread,
                                           [v * scale for v in m.round_medians])
    first = measured[0][anchor.key]
    results[anchor.key] = Measurement(reference, first.spread, anchor_values)
    return results


def _measure_group(runner, group: list[Candidate], protocol: Protocol, rng: np.random.Generator,
                   progress) -> dict[str, Measurement]:
    handles = []
    try:
        for cand in group:
            model, example = cand.build()
            handles.append(runner.prepare_int8(model, example, cand.int8_modules) if cand.int8_modules
                           else runner.prepare(model, example))
            del model
        results = _interleaved(runner, [c.key for c in group], handles, protocol, rng)
    finally:
        for h in handles:
            runner.release(h)
    if progress is not None:
        progress(len(group))
    return results


def _interleaved(runner, keys: list[str], handles: list, protocol: Protocol,
                 rng: np.random.Generator) -> dict[str, Measurement]:
    iterations = []
    for h in handles:
        per_forward = min(runner.time(h, 1) for _ in range(protocol.warmup))
        iterations.append(int(np.clip(round(protocol.target_ms / max(per_forward, 1e-3)),
                                      1, protocol.max_iterations)))
    per_round: list[list[float]] = [[] for _ in handles]
    for _ in range(protocol.rounds):
        for i in rng.permutation(len(handles)):
            samples = [runner.time(handles[i], iterations[i]) for _ in range(protocol.repeats)]
            per_round[i].append(float(np.median(samples)))
    out = {}
    for key, medians in zip(keys, per_round):
        med = float(np.median(medians))
        q75, q25 = np.percentile(medians, [75, 25])
        out[key] = Measurement(med, float((q75 - q25) / med) if med > 0 else 0.0, medians)
    return out
