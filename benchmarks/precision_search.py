"""Mixed int8/fp32 precision of a trained mbv3: Hessian order against a random order.

A MobileNetV3 from the quickstart's space (resolution 48, width 1; the
quickstart searches resolutions 32/48) is trained by this script on the
embedded ``digits_distorted`` set (8,628 training and 3,590 validation images:
one image moves accuracy by 0.03 points, so a 0.5-point budget is resolvable;
plain ``digits`` has 359 and steps of 0.28) for 12 epochs (about 6 minutes on
a quiet machine here; the weights are kept in ``--cache``, so a rerun skips
training), or taken
from an export folder (``--export RUN/export/1``, then on the export's dataset).
Then, for each int8 weight scheme in ``--weights`` (per output channel, ONNX
Runtime's default and this project's; per tensor, what targets with one weight
scale per tensor run):

* fp32 and uniform int8 (every unit; ONNX Runtime QDQ, calibrated on 256
  training images) are scored;
* the units (each inverted-bottleneck layer, and the head) are ordered by
  Hessian sensitivity under that scheme (:mod:`nas.precision`), and bisection
  over that order finds the most int8 units within ``--max-drop`` points;
* the same bisection over ``--random-orders`` seeded random orders is the
  baseline;
* every assignment is timed with the ``onnxruntime`` runner (1 thread, batch
  1, the scheme's int8 weights) in one interleaved batch; speedup is fp32
  latency over the assignment's.

The bisection assumes accuracy falls as units are added, so its longest
prefix is "most int8 units"; the assignment reported as the mixed-precision
result is the *fastest* of the prefixes it scored within the budget (every
fp32/int8 boundary adds a quantize/dequantize pair, so more int8 is not always
faster).  Tighter budgets (``--sweep``) compare the orders by int8 units alone.
Per channel, int8 costs this network nothing measurable, so no budget binds and
the orders cannot differ; per tensor, a few layers whose folded batch norms
spread their channels' ranges lose many points, and the orders are put to the
test.

Last line: ``precision: speedup X.XX at drop Y.YY pt; hessian int8 layers A vs random B``
for the last scheme of ``--weights`` (per tensor by default; every scheme's
figures are in the summary above it): speedup and drop of the fastest
Hessian-ordered assignment within the budget, A its longest prefix within the
budget, B the median of the random orders'.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hardware import make_runner  # noqa: E402
from hardware.protocol import Protocol  # noqa: E402
from hardware.quantize import WEIGHT_GRANULARITIES  # noqa: E402
from nas.accuracy import TrainSettings, seeded_build, train_candidate  # noqa: E402
from nas.data import load_dataset  # noqa: E402
from nas.export import load_exported  # noqa: E402
from nas.files import atomic_write_bytes  # noqa: E402
from nas.precision import MixedPrecisionProblem, hessian_order, random_order  # noqa: E402
from search_spaces import make_space  # noqa: E402

#: the quickstart recipe's space, with the precision axis on
SPACE = {"resolutions": [32, 48], "widths": [0.5, 0.75, 1.0], "num_classes": 10, "precisions": ["fp32", "int8"]}
ARCH = "r48_w1:ir_k3_e4-ir_k3_e4:ir_k5_e4-ir_k5_e4-ir_k5_e4:ir_k3_e6-ir_k3_e6-ir_k3_e6:ir_k3_e6-ir_k3_e6:ir_k5_e6-ir_k5_e6"


def trained_network(args):
    """The float network: an export's, or trained here (and kept in ``--cache``, keyed by
    everything that shapes the weights, so a rerun does not train again)."""
    if args.export:
        model, arch, space = load_exported(args.export)
        dataset = json.loads((Path(args.export) / "arch.json").read_text())["preprocessing"]["dataset"]
        return space, arch, model, load_dataset(dataset, space.input_shape(arch)[-1], None, augment=False)
    space = make_space("mbv3", **SPACE)
    arch = space.parse(args.arch)
    splits = load_dataset(args.dataset, space.input_shape(arch)[-1], None, augment=False)
    model = seeded_build(space, arch, args.seed)
    settings = TrainSettings(dataset=args.dataset, epochs=args.epochs, batch_size=64, lr=0.01, threads=2)
    key = hashlib.sha1(json.dumps([str(arch), asdict(settings), args.seed, torch.__version__]).encode()).hexdigest()
    cached = Path(args.cache) / f"{key[:16]}.pt"
    if cached.is_file():
        model.load_state_dict(torch.load(cached, weights_only=True))
        print(f"{arch} on {args.dataset}, {args.epochs} epochs: trained weights from {cached}", flush=True)
        return space, arch, model.eval(), splits
    start = time.time()
    accuracy = train_candidate(model, splits, settings, args.seed)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(cached, buffer.getvalue())
    print(f"trained {arch} on {args.dataset} for {args.epochs} epochs: {accuracy:.2f}% "
          f"({time.time() - start:.0f} s; kept in {cached})", flush=True)
    return space, arch, model.eval(), splits


def compare_orders(args, space, arch, model, splits, weights: str) -> dict:
    """The Hessian order against random orders under one int8 scheme (``weights`` scales);
    prints the tables and returns the summary figures."""
    problem = MixedPrecisionProblem.create(space, arch, model, splits, args.seed, weights)
    units = list(problem.units)
    print(f"\n=== int8 weights {weights} ===", flush=True)
    start = time.time()
    sensitivities = problem.sensitivities(args.hessian_batches, args.hutchinson_samples, args.seed)
    print(f"Hessian traces of {len(units)} units: {time.time() - start:.0f} s", flush=True)
    for s in sorted(sensitivities, key=lambda s: s.omega):
        print(f"  {s.unit:<7} omega {s.omega:.3e}  trace/weight {s.trace_per_weight:.3e}  "
              f"|dW|^2 {s.perturbation:.3e}")
    orders = {"hessian": hessian_order(sensitivities)}
    orders.update({f"random #{i + 1}": random_order(units, args.seed + 1 + i) for i in range(args.random_orders)})
    bisections = {name: problem.bisect(order, args.max_drop) for name, order in orders.items()}
    uniform = {u: "int8" for u in units}

    # every assignment within the budget that the bisections scored, timed in one batch
    feasible = {(name, k): problem.arch_for(b.prefix(k)) for name, b in bisections.items()
                for k in b.feasible(args.max_drop)}
    runner = make_runner("onnxruntime", threads=1, int8_weights=weights)
    latency = problem.latencies([problem.arch, problem.arch_for(uniform), *feasible.values()], runner,
                                Protocol(rounds=args.rounds), args.seed)
    base = latency[str(problem.arch)]

    def row(label, assignment, note=""):
        arch_text = str(problem.arch_for(assignment))
        accuracy = problem.accuracy_of(assignment)
        count = sum(p == "int8" for p in assignment.values())
        print(f"{label:<26} {count:>7}/{len(units):<2} {accuracy:>9.2f} {problem.float_accuracy - accuracy:>8.2f} "
              f"{latency[arch_text]:>11.3f} {base / latency[arch_text]:>7.2f}x {note}")

    print(f"\n{runner.fingerprint().describe()}; budget {args.max_drop} pt below fp32 "
          f"{problem.float_accuracy:.2f}% on {len(splits.val)} validation images")
    print(f"{'assignment':<26} {'int8 units':>10} {'accuracy':>9} {'drop pt':>8} {'latency ms':>11} {'speedup':>8}")
    row("fp32", {u: "fp32" for u in units})
    row("int8 (all units)", uniform)
    chosen = {}
    for name, b in bisections.items():
        chosen[name] = problem.fastest_within(b, args.max_drop, latency)
        row(f"{name}: most int8", b.assignment, f"(scored prefixes {sorted(b.evaluated)})")
        if chosen[name] != b.int8_units:
            row(f"{name}: fastest", b.prefix(chosen[name]))
    print(f"hessian order: {' '.join(orders['hessian'])}")

    budgets = sorted({*args.sweep, args.max_drop})
    print("\nint8 units within the budget (longest prefix found by bisection):")
    print(f"{'budget pt':>9} {'hessian':>8} " + " ".join(f"{n:>10}" for n in orders if n != "hessian"))
    for budget in budgets:
        found = {name: problem.bisect(order, budget).int8_units for name, order in orders.items()}
        print(f"{budget:>9.2f} {found['hessian']:>8} " + " ".join(f"{found[n]:>10}" for n in orders if n != "hessian"))

    hessian = bisections["hessian"]
    mixed = problem.arch_for(hessian.prefix(chosen["hessian"]))
    summary = {"weights": weights, "speedup": base / latency[str(mixed)],
               "drop": problem.float_accuracy - problem.accuracy_of(hessian.prefix(chosen["hessian"])),
               "hessian": hessian.int8_units,
               "random": statistics.median(b.int8_units for n, b in bisections.items() if n != "hessian"),
               "binds": hessian.int8_units < len(units)}
    summary["met"] = (summary["speedup"] >= 1.3 and summary["drop"] <= args.max_drop
                      and summary["hessian"] > summary["random"])
    print(f"\nuniform int8 drops {problem.float_accuracy - problem.accuracy_of(uniform):.2f} pt: the "
          f"{args.max_drop} pt budget {'binds' if summary['binds'] else 'does not bind (every unit fits in int8)'}")
    print(f"target (mixed >= 1.3x within {args.max_drop} pt, Hessian order more int8 units than random), "
          f"int8 weights {weights}: {'met' if summary['met'] else 'NOT met'}")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", help="an export folder of an mbv3 run (default: train one here)")
    parser.add_argument("--arch", default=ARCH)
    parser.add_argument("--dataset", default="digits_distorted")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--cache", default="runs/precision_search", help="where trained weights are kept")
    parser.add_argument("--weights", nargs="+", default=["per_channel", "per_tensor"], choices=WEIGHT_GRANULARITIES,
                        help="int8 weight scales to compare the orders under (each one in turn)")
    parser.add_argument("--max-drop", type=float, default=0.5)
    parser.add_argument("--sweep", type=float, nargs="*", default=[0.1, 0.2, 0.3],
                        help="tighter budgets also compared by int8 units reached (accuracy only)")
    parser.add_argument("--random-orders", type=int, default=5)
    parser.add_argument("--hessian-batches", type=int, default=4)
    parser.add_argument("--hutchinson-samples", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    space, arch, model, splits = trained_network(args)
    summaries = [compare_orders(args, space, arch, model, splits, weights) for weights in args.weights]
    print("\nsummary:")
    for s in summaries:
        print(f"  int8 weights {s['weights']:<11}: speedup {s['speedup']:.2f} at drop {s['drop']:.2f} pt, "
              f"budget {'binds' if s['binds'] else 'does not bind'}, hessian {s['hessian']} vs random "
              f"{s['random']:g} int8 units: target {'met' if s['met'] else 'NOT met'}")
    last = summaries[-1]
    print(f"precision: speedup {last['speedup']:.2f} at drop {last['drop']:.2f} pt; "
          f"hessian int8 layers {last['hessian']} vs random {last['random']:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
