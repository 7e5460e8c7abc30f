"""Test-retest reliability of latency measurement on this machine.

Measures the same sampled architectures in two independent passes with the
ONNX Runtime runner and the interleaved-rounds protocol, and (baseline, same
run) with naive back-to-back timing (each arch prepared, timed and released in
turn).  Prints Spearman between passes, median relative difference and
throughput.

    python benchmarks/measurement_reliability.py [--count 100] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr

from hardware import make_runner
from hardware.protocol import Candidate, Protocol, measure
from nas.commands.measure import sample_distinct
from search_spaces import make_space


def naive_pass(runner, candidates, iterations: int) -> dict[str, float]:
    """Baseline: every repeat of one arch back to back, no interleaving."""
    out = {}
    for cand in candidates:
        model, example = cand.build()
        handle = runner.prepare(model, example)
        runner.time(handle, 2)  # warm-up
        out[cand.key] = float(np.median([runner.time(handle, 1) for _ in range(iterations)]))
        runner.release(handle)
    return out


def compare(a: dict[str, float], b: dict[str, float]) -> tuple[float, float]:
    keys = sorted(a)
    x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    rho = spearmanr(x, y).statistic
    return float(rho), float(np.median(np.abs(x - y) / ((x + y) / 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-naive", action="store_true", help="skip the back-to-back baseline")
    args = parser.parse_args()

    space = make_space("mbv3", num_classes=1000)  # resolutions 128-224: real mobile sizes
    archs = sample_distinct(space, args.count, args.seed)
    candidates = [Candidate(str(a), lambda a=a: (space.build(a), space.example_input(a))) for a in archs]
    runner = make_runner("onnxruntime", threads=args.threads)
    protocol = Protocol(rounds=args.rounds)
    print(f"{args.count} mbv3 archs, {runner.fingerprint().describe()}")

    rows = []
    passes = {}
    for name in ("interleaved-1", "interleaved-2"):
        start = time.perf_counter()
        res = measure(runner, candidates, protocol, np.random.default_rng([args.seed, len(passes)]))
        passes[name] = ({k: m.latency_ms for k, m in res.items()}, time.perf_counter() - start)
    rho, rel = compare(passes["interleaved-1"][0], passes["interleaved-2"][0])
    secs = np.mean([t for _, t in passes.values()])
    rows.append(("interleaved rounds (hwnas)", rho, rel, 60 * args.count / secs))
    if not args.no_naive:
        naive = []
        for _ in range(2):
            start = time.perf_counter()
            naive.append((naive_pass(runner, candidates, iterations=args.rounds * protocol.repeats),
                          time.perf_counter() - start))
        rho_n, rel_n = compare(naive[0][0], naive[1][0])
        rows.append(("naive back-to-back (baseline)", rho_n, rel_n,
                     60 * args.count / np.mean([t for _, t in naive])))
    lat = np.array(list(passes["interleaved-1"][0].values()))
    print(f"latency range: {lat.min():.2f} - {lat.max():.2f} ms (median {np.median(lat):.2f})")
    print(f"{'method':32s} {'test-retest Spearman':>21s} {'median rel. diff':>17s} {'archs/min':>10s}")
    for name, r, d, thr in rows:
        print(f"{name:32s} {r:21.4f} {d:17.2%} {thr:10.1f}")


if __name__ == "__main__":
    main()
