"""``hwnas measure --space S --runner R --count N --out FILE`` and ``--verify N``.

Samples N distinct architectures (seeded), measures them with the interleaved
protocol (store-cached) and writes ``arch,latency_ms`` — the format the
predictor commands read.  ``--verify N`` instead re-times N stored rows of the
runner's fingerprint in one batch and reports how far they drifted;
``--invalidate`` drops the rows that fail (they are measured again when next
needed).
"""
from __future__ import annotations

import csv


def register(sub) -> None:
    p = sub.add_parser("measure", help="measure sampled architectures with a runner, write a CSV")
    p.add_argument("--space", required=True)
    p.add_argument("--runner", required=True)
    p.add_argument("--count", type=int, help="how many sampled archs to measure")
    p.add_argument("--out", help="CSV file to write (header arch,latency_ms)")
    p.add_argument("--verify", type=int, default=None, metavar="N",
                   help="re-time N stored rows of this runner configuration and report their drift")
    p.add_argument("--invalidate", action="store_true",
                   help="with --verify: drop the rows that are off by more than --tolerance")
    p.add_argument("--tolerance", type=float, default=0.15,
                   help="relative difference beyond which a verified row fails (default 0.15)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runner-option", action="append", default=[], metavar="KEY=VALUE",
                   help="runner option, YAML value, e.g. --runner-option servers=http://pi:8765 "
                        "(remote: the token comes from $HWNAS_DEVICE_TOKEN)")
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

    from hardware.store import MeasurementStore, default_store_path
    from nas.commands import parse_key_values
    from nas.sources import RunContext
    from nas.sources.runner import RunnerLatency
    from search_spaces import make_space

    if args.verify is None and (args.count is None or args.out is None):
        raise ValueError("--count and --out are required (or --verify N)")
    if (args.count is not None and args.count < 1) or (args.verify is not None and args.verify < 1):
        raise ValueError("--count and --verify must be >= 1")
    space = make_space(args.space, **parse_key_values(args.space_option, "--space-option"))
    options = {"threads": args.threads, "batch_size": args.batch_size, "rounds": args.rounds,
               **parse_key_values(args.runner_option, "--runner-option")}
    with MeasurementStore(args.store or default_store_path()) as store:
        ctx = RunContext(space, store, Path("."), args.seed, progress=not args.no_progress)
        source = RunnerLatency.from_recipe(args.runner, options, ctx)
        if args.verify is not None:
            return verify(source, args.verify, args.tolerance, args.invalidate, args.seed)
        archs = sample_distinct(space, args.count, args.seed)
        metrics = source.evaluate(archs)
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch", "latency_ms"])
        for arch, m in zip(archs, metrics):
            writer.writerow([str(arch), f"{m['latency_ms']:.6f}"])
    print(f"wrote {len(archs)} measurements to {args.out} ({source.runner.fingerprint().describe()})")
    return 0


def verify(source, count: int, tolerance: float, invalidate: bool, seed: int) -> int:
    """Re-time stored rows; exit 0 when all agree within ``tolerance``, else 1."""
    from scipy.stats import spearmanr

    rows = source.verify(count, seed)
    ratios = [now / stored for _, stored, now in rows]
    failing = [(arch, stored, now) for arch, stored, now in rows if abs(now / stored - 1) > tolerance]
    print(f"verified {len(rows)} stored rows of {source.runner.fingerprint().describe()}: "
          f"median now/stored {sorted(ratios)[len(ratios) // 2]:.3f}"
          + (f", Spearman {spearmanr([r[1] for r in rows], [r[2] for r in rows])[0]:.3f}" if len(rows) > 2 else "")
          + f", {len(failing)} off by more than {tolerance:.0%}")
    for arch, stored, now in failing:
        print(f"  {arch}: stored {stored:.4f} ms, now {now:.4f} ms")
    if failing and invalidate:
        dropped = source.invalidate([arch for arch, _, _ in failing])
        print(f"dropped {dropped} row(s); they are measured again when next needed")
    return 1 if failing and not invalidate else 0
