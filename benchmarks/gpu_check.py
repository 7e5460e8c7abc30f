"""One prepared GPU check: CUDA-runner test-retest reliability on nb201 and mbv3.

Measures ``--archs`` sampled architectures of each space with the ``torch_cuda``
runner, eager and with CUDA graphs, ``--passes`` times each (a fresh seeded
round order per pass), and prints per (space, mode): median latency, median
round spread, and the test-retest Spearman between passes; then the median
eager/graphs ratio (how launch-bound the space is).  If TensorRT or
onnxruntime-gpu are installed, a few mbv3 archs are also timed through them as
a smoke check of those runners.  Results go to ``$OUT/gpu_check.json`` when
``OUT`` is set.

    python benchmarks/gpu_check.py [--archs 50] [--passes 2]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def spaces(names):
    from search_spaces import SPACES, make_space

    for name in names:
        if name not in SPACES:
            try:  # nb201 lives in its own module; import it only here
                importlib.import_module(f"search_spaces.{name}")
            except ImportError as exc:
                print(f"[skip] space {name!r}: {exc}")
                continue
        if name not in SPACES:
            print(f"[skip] space {name!r} is not registered")
            continue
        yield name, make_space(name)


def distinct(space, count, seed):
    rng = np.random.default_rng(seed)
    seen = {}
    for _ in range(count * 50):
        if len(seen) == count:
            break
        arch = space.sample(rng)
        seen.setdefault(str(arch), arch)
    return list(seen.values())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", type=int, default=50)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--spaces", nargs="+", default=["nb201", "mbv3"])
    parser.add_argument("--smoke", type=int, default=5, help="mbv3 archs for the TensorRT/ORT-GPU smoke check")
    args = parser.parse_args()

    import torch
    from scipy.stats import spearmanr

    from hardware import make_runner
    from hardware.protocol import Candidate, Protocol, measure

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.get_device_name(0)}")
    protocol = Protocol()
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": []}
    medians_by_mode: dict = {}
    started = time.perf_counter()
    for name, space in spaces(args.spaces):
        archs = distinct(space, args.archs, seed=0)
        cands = [Candidate(str(a), lambda a=a: (space.build(a), space.example_input(a))) for a in archs]
        for mode in ("eager", "graphs"):
            runner = make_runner("torch_cuda", cuda_graphs=mode == "graphs")
            passes = []
            t0 = time.perf_counter()
            for p in range(args.passes):
                got = measure(runner, cands, protocol, np.random.default_rng(p))
                passes.append(got)
            lat = np.array([[g[str(a)].latency_ms for a in archs] for g in passes])
            spread = np.array([[g[str(a)].spread for a in archs] for g in passes])
            rhos = [spearmanr(lat[0], lat[i])[0] for i in range(1, len(lat))]
            medians_by_mode[(name, mode)] = np.median(lat, axis=0)
            row = {"space": name, "mode": mode, "archs": len(archs), "median_ms": float(np.median(lat)),
                   "min_ms": float(lat.min()), "max_ms": float(lat.max()),
                   "median_spread": float(np.median(spread)), "test_retest_spearman": [float(r) for r in rhos],
                   "seconds": time.perf_counter() - t0}
            report["results"].append(row)
            print(f"{name:6s} {mode:6s} n={len(archs):3d}  median {row['median_ms']:.3f} ms "
                  f"({row['min_ms']:.3f}-{row['max_ms']:.3f})  spread {row['median_spread'] * 100:.1f}%  "
                  f"test-retest Spearman {', '.join(f'{r:.4f}' for r in rhos)}  ({row['seconds']:.0f} s)",
                  flush=True)
        if (name, "eager") in medians_by_mode:
            ratio = medians_by_mode[(name, "eager")] / medians_by_mode[(name, "graphs")]
            print(f"{name:6s} eager/graphs latency ratio: median {np.median(ratio):.2f} "
                  f"(range {ratio.min():.2f}-{ratio.max():.2f})")
            report.setdefault("eager_over_graphs", {})[name] = float(np.median(ratio))

    # smoke check of the ONNX-consuming GPU runners, where installed
    from search_spaces import make_space

    mbv3 = make_space("mbv3")
    smoke = distinct(mbv3, args.smoke, seed=1)
    cands = [Candidate(str(a), lambda a=a: (mbv3.build(a), mbv3.example_input(a))) for a in smoke]
    for runner_name, options in (("tensorrt", {"dtype": "fp32"}), ("tensorrt", {"dtype": "fp16"}),
                                 ("onnxruntime_gpu", {"provider": "cuda"}),
                                 ("onnxruntime_gpu", {"provider": "cuda", "cuda_graphs": True})):
        label = f"{runner_name} {options}"
        try:
            runner = make_runner(runner_name, **options)
            fp = runner.fingerprint()
            t0 = time.perf_counter()
            got = measure(runner, cands, Protocol(rounds=3), np.random.default_rng(0))
            values = [got[str(a)].latency_ms for a in smoke]
            print(f"[smoke] {label}: {fp.runtime}; mbv3 latencies {', '.join(f'{v:.3f}' for v in values)} ms "
                  f"({time.perf_counter() - t0:.0f} s)")
            report.setdefault("smoke", {})[label] = values
        except Exception as exc:  # noqa: BLE001 - a smoke check reports and moves on
            print(f"[smoke] {label}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            if not type(exc).__name__ == "BackendUnavailable":
                traceback.print_exc(limit=3)
    print(f"total {time.perf_counter() - started:.0f} s")
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
