"""Does searching precision buy better accuracy/latency trade-offs at the same search cost?

Runs ``recipes/quickstart_int8.yaml`` (the quickstart with a per-layer
fp32/int8 axis) and the same recipe with the axis off (``precisions: [fp32]``,
i.e. the quickstart), with the same seed, trials and controller, each into its
own run folder (``--out``, default ``runs/precision_front``), and compares the
two runs' networks under the quickstart's 0.8 ms budget.  Latencies measured
in different batches drift with the machine's load by more than the
differences in question (the quickstart's fp32 front moved by 10-30% between
two runs here), so every network that can matter (the fp32 run's front, and
each network of the int8 run at least as accurate as the fp32 front's least
accurate point) is timed again in one interleaved batch, and both fronts are
computed from those latencies and the runs' accuracies: how many points of
the int8 run's front are mixed-precision networks, how many of the fp32
front's points some network of the int8 run dominates, and the hypervolume
of both fronts (reference point: 0% accuracy, the latency budget).

Latency is measured (ONNX Runtime, 1 thread, batch 1) on the quantized
networks; accuracy is the quantized network's, after the float network's
short training on the embedded digits.  Both runs share the measurement store
of ``$HWNAS_HOME``, so a float network measured by one is not measured again by
the other; rerunning with the same ``--out`` reuses the finished runs and only
repeats the joint timing.  Takes about 10 minutes on this machine.

Last line: ``precision front: A of B front points mixed-precision; C of D fp32-front points dominated (hv X.XXXX vs Y.YYYY)``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.search_quality import hypervolume as staircase_hypervolume, staircase  # noqa: E402
from hardware import make_runner  # noqa: E402
from hardware.protocol import Candidate, Protocol  # noqa: E402
from nas.recipe import load_recipe  # noqa: E402
from nas.search import pareto_front, run_search  # noqa: E402
from search_spaces import make_space  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "quickstart_int8.yaml"
BUDGET_KEY = "latency_ms"


def dominates(a: dict, b: dict) -> bool:
    better_or_equal = a["accuracy"] >= b["accuracy"] and a["latency_ms"] <= b["latency_ms"]
    return better_or_equal and (a["accuracy"] > b["accuracy"] or a["latency_ms"] < b["latency_ms"])


def hypervolume(front: list[dict], budget_ms: float) -> float:
    """Area dominated by ``front`` above 0% accuracy and below the latency budget, as a
    fraction of 100% x budget (the search-quality benchmark's staircase area)."""
    return staircase_hypervolume(staircase((r["latency_ms"], r["accuracy"]) for r in front),
                                 budget_ms, 0.0, budget_ms, 100.0)


def is_mixed(arch: str) -> bool:
    return "_int8" in arch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/precision_front")
    parser.add_argument("--rounds", type=int, default=10, help="timing rounds of the joint re-measurement")
    args = parser.parse_args()

    results = {}
    # the fp32 run pins the granularity (meaningless without int8) so that editing the
    # recipe's granularity does not make its finished run look changed
    for label, space_options in (("fp32 only", ["space.precisions=[fp32]", "space.precision_granularity=layer"]),
                                 ("with int8", [])):
        folder = Path(args.out) / label.replace(" ", "_")
        print(f"--- search {label}: {folder}", flush=True)
        results[label] = run_search(RECIPE, [*space_options, f"search.trials={args.trials}", f"seed={args.seed}",
                                             f"output={folder}"], progress=False)
    budget = 0.8
    fp32, with_int8 = results["fp32 only"], results["with int8"]
    space = make_space("mbv3", **load_recipe(RECIPE).space.options)
    floor = min((r["accuracy"] for r in fp32.front), default=0.0)
    rows = {r["arch"]: {"arch": r["arch"], "accuracy": r["accuracy"], "run": "fp32 only"} for r in fp32.front}
    rows.update({r["arch"]: {"arch": r["arch"], "accuracy": r["accuracy"], "run": "with int8"}
                 for r in with_int8.trials if r.get("accuracy") is not None and r["accuracy"] >= floor
                 and r["arch"] not in rows})
    archs = {t: space.parse(t) for t in rows}
    candidates = [Candidate(t, lambda a=a: (space.build(a), space.example_input(a)), space.int8_modules(a))
                  for t, a in archs.items()]
    print(f"\ntiming {len(candidates)} networks again in one interleaved batch", flush=True)
    timed = make_runner("onnxruntime", threads=1).measure_batch(candidates, Protocol(rounds=args.rounds),
                                                               np.random.default_rng(args.seed))
    for t, row in rows.items():
        row["latency_ms"] = timed[t].latency_ms
    runs = {label: [r for r in rows.values() if r["run"] == label and r["latency_ms"] <= budget]
            for label in results}
    fronts = {label: pareto_front(rs, ["accuracy", "latency_ms"], ["maximize", "minimize"])
              for label, rs in runs.items()}
    print(f"\n{'run':<10} {'trials':>6} {'timed':>5} {'front':>5} {'hypervolume':>11}")
    for label, result in results.items():
        print(f"{label:<10} {len(result.trials):>6} {len(runs[label]):>5} {len(fronts[label]):>5} "
              f"{hypervolume(fronts[label], budget):>11.4f}")
    print("\nfront of the run with int8 (accuracy %, latency ms, arch):")
    for row in sorted(fronts["with int8"], key=lambda r: r["latency_ms"]):
        print(f"  {row['accuracy']:6.2f} {row['latency_ms']:7.3f}  {row['arch']}")
    print("fp32 front (accuracy %, latency ms; the most accurate int8-run network dominating it):")
    dominated = 0
    for row in sorted(fronts["fp32 only"], key=lambda r: r["latency_ms"]):
        by = [r for r in runs["with int8"] if dominates(r, row)]
        dominated += bool(by)
        best = max(by, key=lambda r: r["accuracy"]) if by else None
        note = f"{best['accuracy']:.2f}% at {best['latency_ms']:.3f} ms ({best['arch']})" if best else "-"
        print(f"  {row['accuracy']:6.2f} {row['latency_ms']:7.3f}  {note}")
    mixed_points = sum(is_mixed(r["arch"]) for r in fronts["with int8"])
    print(f"precision front: {mixed_points} of {len(fronts['with int8'])} front points mixed-precision; "
          f"{dominated} of {len(fronts['fp32 only'])} fp32-front points dominated "
          f"(hv {hypervolume(fronts['with int8'], budget):.4f} vs {hypervolume(fronts['fp32 only'], budget):.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
