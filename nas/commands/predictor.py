"""``hwnas predictor``: meta-train, fine-tune, apply and evaluate latency predictors.

    hwnas predictor pretrain --space SPACE --data CSV --devices D1,D2,... --out CKPT
    hwnas predictor finetune --checkpoint CKPT --measurements FILE --out CKPT2
    hwnas predictor predict  --checkpoint CKPT --archs FILE --out CSV
    hwnas predictor tables   --space hybrid_slm   (re-measure the shipped source tables)
    hwnas predictor eval     --space SPACE --protocol help --samples 10 --seeds 10

``CKPT`` may also name a shipped checkpoint (``nb201``, ``fbnet``).  ``--data``
is a wide CSV (``arch`` plus one latency column per device, ms); FILE for
finetune has the header ``arch,latency_ms``; FILE for predict lists one arch
per line or is a CSV with an ``arch`` column; predict writes ``arch,latency_ms``
(one column per metric for a multi-metric checkpoint: a token model's device
predicts ``prefill_ms,decode_ms,memory_mb``).
"""
from __future__ import annotations

import argparse
import csv
import io
import time
from pathlib import Path


def _devices(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise argparse.ArgumentTypeError("expected a comma-separated list of device columns")
    return devices


def register(sub) -> None:
    p = sub.add_parser("predictor", help="latency predictors: pretrain, finetune, lut, predict, eval")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    a = actions.add_parser("pretrain", help="meta-train the few-shot predictor on source devices")
    a.add_argument("--space", required=True, help="search space name (e.g. nb201, fbnet)")
    a.add_argument("--data", required=True, help="wide CSV: arch column + one latency column (ms) per device")
    a.add_argument("--devices", required=True, type=_devices, help="comma-separated source device columns")
    a.add_argument("--out", required=True, help="checkpoint to write (.npz)")
    a.add_argument("--seed", type=int, default=0, help="seed of the learned basis (default 0)")
    a.add_argument("--epochs", type=int, default=300, help="training epochs of the learned basis")
    a.add_argument("--no-neural", action="store_true", help="skip the learned (MLP) basis")
    a.set_defaults(func=run_pretrain)

    a = actions.add_parser("finetune", help="adapt a predictor to a device from its measurements")
    a.add_argument("--checkpoint", required=True, help="checkpoint path or shipped name")
    a.add_argument("--measurements", required=True, help="CSV with header arch,latency_ms")
    a.add_argument("--out", required=True, help="adapted checkpoint to write")
    a.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default 0)")
    a.set_defaults(func=run_finetune)

    a = actions.add_parser("lut", help="build a layer lookup-table predictor from whole-network measurements")
    a.add_argument("--space", required=True, help="search space name (its layers must have keys: mbv3, mobiledet)")
    a.add_argument("--space-option", action="append", default=[], metavar="KEY=VALUE",
                   help="space option, YAML value, e.g. --space-option resolutions=[128,160]")
    a.add_argument("--measurements", required=True, help="CSV with header arch,latency_ms (hwnas measure --out)")
    a.add_argument("--out", required=True, help="checkpoint to write; use it as latency: {predictor: CKPT}")
    a.add_argument("--ridge", type=float, default=1e-3, help="ridge penalty of the per-layer costs")
    a.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default 0)")
    a.set_defaults(func=run_lut)

    a = actions.add_parser("tables", help="measure the source tables shipped in predictors/source_tables")
    a.add_argument("--space", required=True, help="space whose table to build (hybrid_slm, mbv3, mobiledet)")
    a.add_argument("--archs", type=int, default=150, help="sampled archs measured per configuration (default 150)")
    a.add_argument("--configs", default=None, help="comma-separated configuration names (default: all)")
    a.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per arch (default 5)")
    a.add_argument("--out", default=None, help="folder holding SPACE/ (default: the package's source_tables)")
    a.add_argument("--store", default=None, help="measurement store (default $HWNAS_HOME/source_tables.db)")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=run_tables)

    a = actions.add_parser("predict", help="predict latencies of a list of architectures")
    a.add_argument("--checkpoint", required=True, help="checkpoint path or shipped name")
    a.add_argument("--archs", required=True, help="one arch per line, or a CSV with an arch column")
    a.add_argument("--out", required=True, help="CSV to write (arch,latency_ms)")
    a.set_defaults(func=run_predict)

    a = actions.add_parser("eval", help="score a predictor on a published few-shot protocol")
    a.add_argument("--space", required=True, help="search space name")
    a.add_argument("--protocol", default="help", choices=["help"], help="evaluation protocol")
    a.add_argument("--samples", type=int, default=10, help="measurements from each test device")
    a.add_argument("--seeds", type=int, default=10, help="random draws of those measurements")
    a.add_argument("--checkpoint", default=None,
                   help="predictor to evaluate (default: the shipped checkpoint of the space)")
    a.add_argument("--data", default=None,
                   help="wide latency CSV with the test devices (default: the table shipped for the protocol)")
    a.add_argument("--queries", default="remaining", choices=["remaining", "help-split"],
                   help="score on every arch not drawn (default) or on HELP's own query split")
    a.set_defaults(func=run_eval)


def run_pretrain(args) -> int:
    from predictors import FewShotPredictor
    from predictors.data import LatencyTable
    from search_spaces import make_space

    space = make_space(args.space)
    table = LatencyTable.read(args.data, space, args.devices)
    start = time.perf_counter()
    predictor = FewShotPredictor.pretrain(space, table.archs, table.values, table.devices, seed=args.seed,
                                          neural=not args.no_neural, epochs=args.epochs)
    path = predictor.save(args.out)
    print(f"meta-trained on {len(table.devices)} devices x {len(table.archs)} archs in "
          f"{time.perf_counter() - start:.1f} s (views: {', '.join(predictor.view_names())}) -> {path}")
    return 0


def run_finetune(args) -> int:
    from predictors import load_predictor
    from predictors.data import read_measurements

    from predictors.quality import adapt

    predictor = load_predictor(args.checkpoint)
    archs, latency = read_measurements(args.measurements, predictor.space)
    start = time.perf_counter()
    # outlier rows left out (named), cross-validated quality printed next to a MACs fit
    record = adapt(predictor, archs, latency, seed=args.seed, emit=print)
    seconds = time.perf_counter() - start
    path = predictor.save(args.out)
    describe = getattr(predictor, "describe", None)
    dropped = f" ({len(record['outliers'])} outlier row(s) left out)" if record["outliers"] else ""
    print(f"fine-tuned on {record['samples']} measurements{dropped} in {seconds:.2f} s -> {path}")
    if describe is not None:
        print(describe())
    return 0


def run_lut(args) -> int:
    """Per-layer costs fitted to whole-network latencies: latency = intercept + the sum of the
    costs of the arch's layers (each keyed by block and input geometry)."""
    from nas.commands import parse_key_values
    from predictors.baselines import LayerLUT
    from predictors.data import read_measurements
    from predictors.protocol import mape
    from predictors.quality import cross_validated_quality, spearman
    from search_spaces import make_space

    if args.ridge < 0:
        raise ValueError(f"--ridge must be >= 0, got {args.ridge}")
    space = make_space(args.space, **parse_key_values(args.space_option, "--space-option"))
    lut = LayerLUT(space, args.ridge)
    archs, latency = read_measurements(args.measurements, space)
    try:
        cross_validated_quality(lut, archs, latency, seed=args.seed, emit=print)
    except ValueError as exc:
        # a fold that holds the only measurement of some layer cannot price it
        print(f"no cross-validated figure: {exc}")
    lut.fit(archs, latency)
    fitted = lut.predict(archs)
    print(f"lookup table of {len(lut.costs)} layer keys from {len(latency)} measurements; in-sample Spearman "
          f"{spearman(fitted, latency):.3f}, MAPE {mape(fitted, latency):.1f}%")
    path = lut.save(args.out)
    print(f"-> {path} (latency: {{predictor: {path}}}; archs with a layer key not measured are refused)")
    return 0


def run_tables(args) -> int:
    from nas.source_tables import build
    from predictors.source_tables import TABLE_DIR

    configs = [c for c in args.configs.split(",") if c] if args.configs else None
    build(args.space, Path(args.out) if args.out else TABLE_DIR, args.archs, configs,
          Path(args.store) if args.store else None, args.rounds, progress=not args.no_progress)
    return 0


def run_predict(args) -> int:
    from nas.files import atomic_write_text
    from predictors import load_predictor
    from predictors.data import read_arch_list

    predictor = load_predictor(args.checkpoint)
    archs = read_arch_list(args.archs, predictor.space)
    # every metric the checkpoint predicts: latency_ms, or a token model's decode/prefill/memory
    predicted = predictor.predict_metrics(archs)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["arch", *predicted])
    writer.writerows([str(a), *(f"{predicted[m][i]:.6f}" for m in predicted)] for i, a in enumerate(archs))
    out = atomic_write_text(args.out, text.getvalue())
    print(f"predicted {len(archs)} architectures ({', '.join(predicted)}) -> {out}")
    return 0


def run_eval(args) -> int:
    import numpy as np

    from predictors import load_predictor
    from predictors.protocol import HELP_PUBLISHED_MEAN, evaluate_device, help_split, predictor_fit_predict
    from predictors.protocol_data import load_protocol_table

    if args.seeds < 1:
        raise ValueError("--seeds must be >= 1")
    split = help_split(args.space)
    checkpoint = args.checkpoint or args.space
    predictor = load_predictor(checkpoint)
    if predictor.space.name != args.space:
        raise ValueError(f"checkpoint {checkpoint} is for space {predictor.space.name!r}, not {args.space!r}")
    leaked = sorted(set(getattr(predictor, "devices", ())) & set(split.test))
    if leaked:
        raise ValueError(f"checkpoint {checkpoint} was meta-trained on test device(s) {leaked}")
    archs, columns = load_protocol_table(predictor.space, split.test, args.data)
    encoded = predictor.encode(archs)
    run = predictor_fit_predict(predictor, encoded)
    print(f"HELP protocol, space {args.space}, {args.samples} samples x {args.seeds} seeds, "
          f"queries: {args.queries}, predictor: {checkpoint}")
    print(f"{'device':<16}{'spearman':>10}{'std':>8}{'mape%':>9}{'HELP':>8}")
    scores = []
    for device in split.test:
        score = evaluate_device(device, columns[device], run, args.samples, range(args.seeds),
                                args.queries, split.pool)
        scores.append(score)
        print(f"{device:<16}{score.mean_spearman:>10.4f}{np.std(score.spearman):>8.4f}"
              f"{score.mean_mape:>9.1f}{split.published.get(device, float('nan')):>8.3f}")
    mean = float(np.mean([s.mean_spearman for s in scores]))
    print(f"{'mean':<16}{mean:>10.4f}{'':>8}{np.mean([s.mean_mape for s in scores]):>9.1f}"
          f"{HELP_PUBLISHED_MEAN[args.space]:>8.3f}")
    return 0
