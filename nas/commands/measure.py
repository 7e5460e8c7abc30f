"""``hwnas measure --space S --runner R --count N --out FILE``.

Samples N distinct architectures (seeded), measures them with the interleaved
protocol (store-cached) and writes ``arch,latency_ms`` — the format the
predictor commands read.
"""
from __future__ import annotations

import csv


def register(sub) -> None:
    p = sub.add_parser("measure", help="measure sampled architectures with a runner, write a CSV")
    p.add_argument("--space", required=True)
    p.add_argument("--runner", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", required=True, help="CSV file to write (header arch,latency_ms)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--space-option", action="append", default=[], metavar="KEY=VALUE",
                   help="space option, YAML value, e.g. --space-option resolutions=[128,160]")
    p.add_argument("--store", default=None, help="measurement store (default $HWNAS_HOME/measurements.db)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def sample_distinct(space, count: int, seed: int) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    seen: dict[str, object] = {}
    for _ in range(count * 50):
        if len(seen) == count:
            break
        arch = space.sample(rng)
        seen.setdefault(str(arch), arch)
    if len(seen) < count:
        raise ValueError(f"space {space.name!r} yielded only {len(seen)} distinct archs")
    return list(seen.values())


def run(args) -> int:
    from pathlib import Path

    from hardware.store import MeasurementStore
    from nas.commands import parse_key_values
    from nas.latency import RunnerLatency
    from nas.search import default_store_path
    from nas.sources import RunContext
    from search_spaces import make_space

    if args.count < 1:
        raise ValueError("--count must be >= 1")
    space = make_space(args.space, **parse_key_values(args.space_option, "--space-option"))
    archs = sample_distinct(space, args.count, args.seed)
    with MeasurementStore(args.store or default_store_path()) as store:
        ctx = RunContext(space, store, Path("."), args.seed, progress=not args.no_progress)
        source = RunnerLatency.from_recipe(args.runner, {"threads": args.threads,
                                                         "batch_size": args.batch_size,
                                                         "rounds": args.rounds}, ctx)
        metrics = source.evaluate(archs)
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch", "latency_ms"])
        for arch, m in zip(archs, metrics):
            writer.writerow([str(arch), f"{m['latency_ms']:.6f}"])
    print(f"wrote {len(archs)} measurements to {args.out} ({source.runner.fingerprint().describe()})")
    return 0
