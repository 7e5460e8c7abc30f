"""Measurement truth on a busy machine: batches measured under load vs one quiet pass.

    python benchmarks/measurement_under_load.py [--count 60] [--batch 8] [--load-s 30] [--rounds R]

1. The reference: all ``--count`` mbv3 archs measured together in one quiet,
   interleaved pass (the protocol, ONNX Runtime, 1 thread).
2. hwnas: the same archs measured the way a search measures them, in batches
   of ``--batch`` through the ``runner`` latency source (anchors, drift check,
   bounded re-measurement; a fresh store), while this script runs a CPU-bound
   load generator on every core for ``--load-s`` seconds, starting with the
   second batch (a bounded child process per core, stopped by its pid).
3. The baseline, in the same run under the same load schedule: naive
   back-to-back timing (each arch prepared, timed ``--iterations`` times in a
   row and released), batch by batch.

For each: Spearman against the reference and the median scale error
(``|value / reference - 1|``).  Quiet-machine checks first: nothing else of
this project should be running (two CPU-heavy jobs distort each other).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from hardware import make_runner
from hardware.protocol import Candidate, Protocol, measure
from hardware.store import MeasurementStore, space_key
from nas.commands.measure import sample_distinct
from nas.sources import LATENCY_SOURCES, RunContext, make_source
from search_spaces import make_space


class LoadGenerator:
    """``cores`` busy child processes between ``start()`` and ``stop()`` (or ``seconds``)."""

    def __init__(self, cores: int, seconds: float):
        self.cores, self.seconds = cores, seconds
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        # each child stops itself after `seconds` too, so nothing outlives the benchmark
        code = f"import time\nend = time.time() + {self.seconds}\nwhile time.time() < end: pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.cores)]

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def naive(runner, space, archs, iterations: int) -> dict[str, float]:
    out = {}
    for arch in archs:
        handle = runner.prepare(space.build(arch), space.example_input(arch))
        runner.time(handle, 2)  # warm-up
        out[str(arch)] = float(np.median([runner.time(handle, 1) for _ in range(iterations)]))
        runner.release(handle)
    return out


def batched(measure_batch, archs, batch: int, load: LoadGenerator) -> dict[str, float]:
    """Measure ``archs`` batch by batch; the load starts with the second batch."""
    out: dict[str, float] = {}
    try:
        for i in range(0, len(archs), batch):
            if i == batch:
                load.start()
            out.update(measure_batch(archs[i:i + batch]))
    finally:
        load.stop()
    return out


def score(values: dict[str, float], reference: dict[str, float]) -> tuple[float, float]:
    keys = sorted(reference)
    x, y = np.array([values[k] for k in keys]), np.array([reference[k] for k in keys])
    return float(spearmanr(x, y).statistic), float(np.median(np.abs(x / y - 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--load-s", type=float, default=30.0, help="how long the load generator runs")
    parser.add_argument("--load-cores", type=int, default=None, help="busy processes (default: every core)")
    parser.add_argument("--rounds", type=int, default=Protocol().rounds,
                        help="protocol rounds, for the reference and for hwnas alike")
    parser.add_argument("--iterations", type=int, default=None,
                        help="naive baseline: timings per arch (default: as many as the protocol takes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cores = args.load_cores or os.cpu_count() or 1
    protocol = Protocol(rounds=args.rounds)
    iterations = args.iterations or protocol.rounds * protocol.repeats
    space = make_space("mbv3", resolutions=[128, 160], num_classes=1000)
    archs = sample_distinct(space, args.count, args.seed)
    runner = make_runner("onnxruntime", threads=1)
    print(f"{len(archs)} mbv3 archs, {runner.fingerprint().describe()}; batches of {args.batch}; "
          f"load: {cores} busy processes for {args.load_s:.0f} s from the second batch; {protocol.rounds} rounds")

    t0 = time.perf_counter()
    candidates = [Candidate(str(a), lambda a=a: (space.build(a), space.example_input(a))) for a in archs]
    reference = {k: m.latency_ms for k, m in
                 measure(runner, candidates, protocol, np.random.default_rng(args.seed)).items()}
    print(f"reference: one quiet interleaved pass, {time.perf_counter() - t0:.0f} s")

    rows = []
    with tempfile.TemporaryDirectory() as tmp, MeasurementStore(Path(tmp) / "m.db") as store:
        ctx = RunContext(space, store, Path(tmp), args.seed, progress=False)
        source = make_source({"runner": "onnxruntime", "threads": 1, "rounds": args.rounds}, LATENCY_SOURCES,
                             ctx, "latency")
        # the anchors' references come from a quiet first batch, as in a search
        t0 = time.perf_counter()
        ours = batched(lambda b: {str(a): m["latency_ms"] for a, m in zip(b, source.evaluate(b))},
                       archs, args.batch, LoadGenerator(cores, args.load_s))
        unreliable = sum(not store.row_meta(source.key, space_key(space), a)[1] for a in ours)
        rows.append(("hwnas (anchors, drift check)", *score(ours, reference), time.perf_counter() - t0,
                     f"{unreliable} rows stored unreliable"))

    t0 = time.perf_counter()
    base = batched(lambda b: naive(runner, space, b, iterations), archs, args.batch,
                   LoadGenerator(cores, args.load_s))
    rows.append(("naive back-to-back", *score(base, reference), time.perf_counter() - t0, ""))

    print(f"\n{'method':32s} {'Spearman':>9s} {'median scale error':>19s} {'time':>7s}")
    for name, rho, err, secs, note in rows:
        print(f"{name:32s} {rho:9.3f} {err * 100:18.1f}% {secs:6.0f}s  {note}")
    rho, err = rows[0][1], rows[0][2]
    target = "met" if rho >= 0.95 and err <= 0.10 else "NOT met"
    print(f"target (Spearman >= 0.95, median scale error <= 10%): {target}")
    print(f"under load: spearman {rho:.3f}, median scale error {err * 100:.1f}%")


if __name__ == "__main__":
    main()
