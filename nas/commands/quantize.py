"""``hwnas quantize RUN_OR_EXPORT --max-drop 0.5``: mixed precision by Hessian sensitivity.

Takes an export folder (``RUN/export/<rank>/``) or a finished run (its rank-1
export, written first when missing), ranks the network's precision units by
Hessian sensitivity (:mod:`nas.precision`), bisects over that order for the
most int8 units within the accuracy-drop budget (accuracy of the real int8
model, ONNX Runtime), measures float, uniform int8 and the chosen assignment
with the ``onnxruntime`` runner in one interleaved batch, and writes
``model.mixed.onnx`` and ``quantize.json`` into the export folder.  The
order it prints, as ``precision_order`` with ``precision_granularity: ordered``,
makes a search propose only prefixes of it.
"""
from __future__ import annotations

import json
from pathlib import Path

from hardware.quantize import WEIGHT_GRANULARITIES


def register(sub) -> None:
    p = sub.add_parser("quantize", help="choose a mixed int8/fp32 assignment within an accuracy-drop budget")
    p.add_argument("target", help="an export folder (RUN/export/<rank>) or a finished run folder")
    p.add_argument("--max-drop", type=float, default=0.5, help="accuracy points the int8 model may lose "
                   "(default 0.5)")
    p.add_argument("--batches", type=int, default=4, help="training batches of 32 for the Hessian traces")
    p.add_argument("--samples", type=int, default=8, help="Hutchinson vectors per batch")
    p.add_argument("--weights", default="per_channel", choices=WEIGHT_GRANULARITIES,
                   help="int8 weight scales of the target: per output channel (default) or per tensor")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the calibration slice, the Hessian batches and the Rademacher vectors")
    p.add_argument("--root", default=None, help="dataset folder, for datasets that are not embedded")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for the latency check")
    p.add_argument("--rounds", type=int, default=10, help="timing rounds of the latency check")
    p.set_defaults(func=run)


def export_folder(target: str | Path) -> Path:
    """``target`` itself when it is an export folder, else the run's rank-1 export."""
    from nas.export import export_run

    target = Path(target)
    if (target / "model.pt").is_file():
        return target
    if not (target / "recipe.yaml").is_file():
        raise FileNotFoundError(f"{target}: neither an export folder (model.pt) nor a run folder (recipe.yaml)")
    folder = target / "export" / "1"
    if not (folder / "model.pt").is_file():
        export_run(target, 1, progress=False)
    return folder


def run(args) -> int:
    from hardware import make_runner
    from hardware.protocol import Protocol
    from hardware.quantize import int8_scheme
    from nas.data import load_dataset
    from nas.export import export_int8, load_exported
    from nas.files import atomic_write_text
    from nas.precision import MixedPrecisionProblem, hessian_order

    if args.max_drop < 0 or args.batches < 1 or args.samples < 1 or args.threads < 1 or args.rounds < 1:
        raise ValueError("--max-drop must be >= 0; --batches, --samples, --threads and --rounds >= 1")
    folder = export_folder(args.target)
    record = json.loads((folder / "arch.json").read_text())
    dataset = (record.get("preprocessing") or {}).get("dataset")
    if not dataset:
        raise ValueError(f"{folder}: the export names no dataset (its accuracy source had none); "
                         f"quantization needs training data for calibration and accuracy")
    model, arch, space = load_exported(folder)
    splits = load_dataset(dataset, space.input_shape(arch)[-1], args.root, augment=False)
    problem = MixedPrecisionProblem.create(space, arch, model, splits, args.seed, args.weights)
    sensitivities = problem.sensitivities(args.batches, args.samples, args.seed)
    bisection = problem.bisect(hessian_order(sensitivities), args.max_drop)
    uniform = bisection.prefix(len(bisection.order))
    runner = make_runner("onnxruntime", threads=args.threads, int8_weights=args.weights)
    feasible = {k: problem.arch_for(bisection.prefix(k)) for k in bisection.feasible(args.max_drop)}
    latency = problem.latencies([problem.arch_for(uniform), *feasible.values()], runner,
                                Protocol(rounds=args.rounds), args.seed)
    chosen = problem.fastest_within(bisection, args.max_drop, latency)
    rows = {"fp32": problem.arch, "int8": problem.arch_for(uniform), "mixed": feasible[chosen]}
    accuracy = {"fp32": problem.float_accuracy, "int8": problem.accuracy_of(uniform),
                "mixed": problem.accuracy_of(bisection.prefix(chosen))}
    ms = {key: latency[str(a)] for key, a in rows.items()}
    mixed_onnx = folder / "model.mixed.onnx"
    info = None
    if chosen:
        info = export_int8(problem.space, model, rows["mixed"], mixed_onnx, problem.calibration,
                           {"arch": str(rows["mixed"]), "space": problem.space.name, "producer": "hwnas quantize"},
                           args.weights)
    else:
        # nothing runs in int8 within the budget: a mixed model of an earlier call would contradict quantize.json
        mixed_onnx.unlink(missing_ok=True)
    report = {"arch": str(rows["mixed"]), "max_drop": args.max_drop, "dataset": dataset,
              "int8_scheme": int8_scheme(args.weights),
              "order": bisection.order, "int8_units": chosen, "longest_within_budget": bisection.int8_units,
              "bisection": {k: {"accuracy": v, "latency_ms": latency.get(str(problem.arch_for(bisection.prefix(k))))}
                            for k, v in sorted(bisection.evaluated.items())},
              "sensitivity": {s.unit: {"omega": s.omega, "trace_per_weight": s.trace_per_weight,
                                       "perturbation": s.perturbation, "weights": s.weights} for s in sensitivities},
              "accuracy": accuracy, "latency_ms": ms, "runner": runner.fingerprint().to_dict(), "onnx": info}
    atomic_write_text(folder / "quantize.json", json.dumps(report, indent=2, default=str))
    print(f"{'precision':<10} {'accuracy':>9} {'latency ms':>11} {'speedup':>8}")
    for key in ("fp32", "int8", "mixed"):
        print(f"{key:<10} {accuracy[key]:>9.2f} {ms[key]:>11.3f} {ms['fp32'] / ms[key]:>7.2f}x")
    print(f"mixed: the fastest of {len(feasible)} assignments within {args.max_drop} pt: the first {chosen} of "
          f"{len(bisection.order)} units in Hessian order in int8 (at most {bisection.int8_units} fit), "
          f"drop {problem.float_accuracy - accuracy['mixed']:.2f} pt")
    print(f"arch: {rows['mixed']}")
    # the same order prunes a search's precision choices to its prefixes (n + 1 instead of 2^n)
    print(f"search precision in this order with the space options: precision_granularity: ordered, "
          f"precision_order: [{', '.join(bisection.order)}]")
    written = [folder / "quantize.json"] + ([mixed_onnx] if info else [])
    print("wrote " + " and ".join(str(p) for p in written))
    return 0
