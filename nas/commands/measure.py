"""``hwnas measure --space S --runner R --count N --out FILE`` and ``--verify N``.

Samples N distinct architectures (seeded), measures them with the interleaved
protocol (store-cached) and writes ``arch,latency_ms`` — the format the
predictor commands read.  ``--verify N`` instead re-times N stored rows of the
runner's fingerprint in one batch and reports how far they drifted;
``--invalidate`` drops the rows that fail (they are measured again when next
needed).  The remote runner takes ``--servers`` and ``--token-file``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("measure", help="measure sampled architectures with a runner, write a CSV")
    p.add_argument("--space", required=True, help="search space name (see `hwnas spaces`)")
    p.add_argument("--runner", required=True,
                   help="latency runner name, e.g. onnxruntime, or remote for serve-device servers")
    p.add_argument("--count", type=int, help="how many sampled archs to measure")
    p.add_argument("--out", help="CSV file to write (header arch,latency_ms)")
    p.add_argument("--verify", type=int, default=None, metavar="N",
                   help="re-time N stored rows of this runner configuration and report their drift")
    p.add_argument("--invalidate", action="store_true",
                   help="with --verify: drop the rows that are off by more than --tolerance")
    p.add_argument("--tolerance", type=float, default=0.15,
                   help="relative difference beyond which a verified row fails (default 0.15)")
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument("--batch-size", type=int, default=1, help="inference batch size (default 1)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved timing rounds per architecture (default 5)")
    p.add_argument("--runner-option", action="append", default=[], metavar="KEY=VALUE",
                   help="runner option, YAML value, e.g. --runner-option opset=17 (repeatable)")
    p.add_argument("--servers", default=None, metavar="URL[,URL...]",
                   help="remote runner: the serve-device server(s) to measure on")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="remote runner: file holding the device token (default: $HWNAS_DEVICE_TOKEN); "
                        "a file, not an argument, so the secret stays out of `ps` and shell history")
    p.add_argument("--seed", type=int, default=0, help="seed of the architecture sample (default 0)")
    p.add_argument("--space-option", action="append", default=[], metavar="KEY=VALUE",
                   help="space option, YAML value, e.g. --space-option resolutions=[128,160]")
    p.add_argument("--store", default=None, help="measurement store (default $HWNAS_HOME/measurements.db)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar; one status line per batch is still logged")
    p.set_defaults(func=run)


def remote_options(args) -> dict:
    """``servers``/``token`` runner options from ``--servers``/``--token-file``."""
    options = {}
    if args.servers:
        options["servers"] = args.servers
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
        if not token:
            raise ValueError(f"--token-file {args.token_file}: the file is empty")
        options["token"] = token
    if options and args.runner != "remote":
        raise ValueError(f"--servers/--token-file are options of the remote runner, not {args.runner!r}")
    return options


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
    from hardware.store import MeasurementStore, default_store_path
    from nas.commands import parse_key_values
    from nas.files import atomic_write_text
    from nas.sources import RunContext
    from nas.sources.runner import RunnerLatency
    from search_spaces import make_space

    if args.verify is None and (args.count is None or args.out is None):
        raise ValueError("--count and --out are required (or --verify N)")
    if (args.count is not None and args.count < 1) or (args.verify is not None and args.verify < 1):
        raise ValueError("--count and --verify must be >= 1")
    space = make_space(args.space, **parse_key_values(args.space_option, "--space-option"))
    options = {"threads": args.threads, "batch_size": args.batch_size, "rounds": args.rounds,
               **parse_key_values(args.runner_option, "--runner-option"), **remote_options(args)}
    with MeasurementStore(args.store or default_store_path()) as store:
        ctx = RunContext(space, store, Path("."), args.seed, progress=not args.no_progress)
        source = RunnerLatency.from_recipe(args.runner, options, ctx)
        if args.verify is not None:
            return verify(source, args.verify, args.tolerance, args.invalidate, args.seed)
        archs = sample_distinct(space, args.count, args.seed)
        metrics = source.evaluate(archs)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["arch", "latency_ms"])
    for arch, m in zip(archs, metrics):
        writer.writerow([str(arch), f"{m['latency_ms']:.6f}"])
    # atomic: a full disk leaves the old file (or none), never a truncated CSV
    atomic_write_text(args.out, text.getvalue())
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
