"""Test-retest reliability of latency measurement on this machine.

Measures the same sampled architectures in two independent passes with the
ONNX Runtime runner and the interleaved-rounds protocol, and (baseline, same
run) with naive back-to-back timing (each arch prepared, timed and released in
turn).  Prints Spearman between passes, median relative difference and
throughput.

The same run also measures the archs once with the ``remote`` runner through a
loopback ``serve-device`` (started and stopped here; it times in its measuring
child process, with the same protocol and ONNX Runtime settings) and prints,
in the row before the last, Spearman and median relative difference between
that remote pass and the local passes (mean over the two): timing in the
child is faithful when these match the local test-retest figures (target
Spearman >= 0.97).

    python benchmarks/measurement_reliability.py [--count 100] [--threads 1] [--no-remote]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr

from hardware import make_runner
from hardware.protocol import Candidate, Protocol, measure
from hardware.remote import DeviceServer, Limits, RemoteRunner, new_token
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


def remote_row(args, candidates, protocol, local_passes: list[dict[str, float]]) -> tuple:
    """One pass of the remote runner against a loopback serve-device; compared with each local pass."""
    token = new_token()
    # one request holds as many archs as the local runner interleaves (OnnxRuntimeCPURunner.max_prepared)
    limits = Limits(max_models=32, max_measure_s=3600)
    with DeviceServer(token, "onnxruntime", {"threads": args.threads}, limits=limits) as server:
        runner = RemoteRunner(server.url, token=token, threads=args.threads)
        start = time.perf_counter()
        res = runner.measure_batch(candidates, protocol, np.random.default_rng([args.seed, 2]))
        secs = time.perf_counter() - start
    remote = {k: m.latency_ms for k, m in res.items()}
    pairs = [compare(remote, local) for local in local_passes]
    return ("remote vs local (serve-device)", float(np.mean([p[0] for p in pairs])),
            float(np.mean([p[1] for p in pairs])), 60 * args.count / secs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=Protocol().rounds)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-naive", action="store_true", help="skip the back-to-back baseline")
    parser.add_argument("--no-remote", action="store_true", help="skip the remote runner (loopback serve-device)")
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
    if not args.no_remote:
        rows.append(remote_row(args, candidates, protocol, [res for res, _ in passes.values()]))
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
    if not args.no_remote:
        remote = rows.pop(1)
        rows.insert(len(rows) - 1, remote)  # just before the last row, whose format stays as it was
    for name, r, d, thr in rows:
        print(f"{name:32s} {r:21.4f} {d:17.2%} {thr:10.1f}")


if __name__ == "__main__":
    main()
