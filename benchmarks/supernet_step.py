"""Supernet training time with and without skipping the skeletons' initialisers.

Every sandwich step activates a few random sub-networks the supernet has not
seen before, and activating one builds its skeleton: ``space.build(arch)`` on
the meta device (:mod:`nas.supernet.elastic`).  Building it runs the modules'
initialisers, which change nothing on meta tensors but still cost Python
time; :func:`nas.supernet.elastic.build_skeleton` skips them.  This script
times, on the two spaces of ``benchmarks/supernet_ranking.py``:

1. building skeletons of ``--archs`` random architectures, both ways (median
   per architecture);
2. supernet training epochs on the embedded ``digits`` data (1,438 training
   images, 23 steps of 64), one torch thread, 4 random sub-networks per step
   as in ``supernet_ranking``, both ways, ``--epochs`` epochs each, in
   alternating runs; median epoch time.

Both ways train the same weights (same seed, and the skipped writes only ever
touched meta tensors); the script checks that their loss curves are equal, so
the supernet_ranking figures measured before the change stand.

Measured on an AMD EPYC (2 cores, nothing else running), defaults:

* mbv3 (timm's MobileNetV3 builder, whose initialisers draw normal values):
  skeleton 69.7 ms before, 42.2 ms now; epoch 34.0 s before, 29.5 s now (1.15x);
* mobiledet (plain torch modules): skeleton 21.1 ms before, 23.0 ms now (the
  dispatch mode costs a little on every op and there is little to skip); epoch
  31.0 s before, 28.2 s now, within the epochs' run-to-run spread: no change.

    python benchmarks/supernet_step.py [--spaces mbv3 mobiledet] [--epochs 1] [--rounds 3]

Last line: ``supernet training (SPACE...): epoch time ratio X (before / now), ...``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.supernet_ranking import BENCHMARK_SPACES, NUM_RANDOM  # noqa: E402
from nas.supernet import elastic  # noqa: E402
from nas.supernet.config import parse_supernet_config  # noqa: E402
from nas.supernet.train import train_supernet  # noqa: E402
from search_spaces import make_space  # noqa: E402


def build_with_initialisers(space, arch):
    """The skeleton as it was built before: the constructors' initialisers run on meta tensors."""
    with torch.device("meta"):
        return space.build(arch)


BUILDERS = {"before": build_with_initialisers, "now": elastic.build_skeleton}


def skeleton_ms(space, archs, builder) -> float:
    times = []
    for arch in archs:
        t0 = time.perf_counter()
        builder(space, arch)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def train_epochs(space, space_name: str, epochs: int, way: str, seed: int) -> tuple[list[float], list[float]]:
    """(epoch seconds, per-step losses) of one supernet training with skeletons built ``way``."""
    config = parse_supernet_config({"dataset": "digits", "epochs": epochs, "batch_size": 64, "lr": 0.01,
                                    "optimizer": "adamw", "weight_decay": 0.01,
                                    "num_random": NUM_RANDOM[space_name], "threads": 1, "validate": False})
    elastic.build_skeleton = BUILDERS[way]  # what Supernet.plan and extract call
    try:
        with tempfile.TemporaryDirectory(prefix="supernet_step_") as out:
            result = train_supernet(space, config, Path(out) / "supernet", seed=seed, progress=False)
    finally:
        elastic.build_skeleton = BUILDERS["now"]
    return [e["seconds"] for e in result.epochs], [h["loss"] for h in result.history]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", nargs="+", choices=sorted(BENCHMARK_SPACES), default=sorted(BENCHMARK_SPACES))
    parser.add_argument("--epochs", type=int, default=1, help="epochs per training run")
    parser.add_argument("--rounds", type=int, default=3, help="training runs of each way, alternating")
    parser.add_argument("--archs", type=int, default=40, help="random architectures whose skeletons are timed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    summary = []
    for name in args.spaces:
        space = make_space(name, **BENCHMARK_SPACES[name], num_classes=10)
        rng = np.random.default_rng(args.seed)
        archs = [space.sample(rng) for _ in range(args.archs)]
        skeleton_ms(space, archs[:3], BUILDERS["before"])  # warm-up: first-call costs of both ways
        skeleton_ms(space, archs[:3], BUILDERS["now"])
        build = {way: skeleton_ms(space, archs, builder) for way, builder in BUILDERS.items()}
        print(f"{name}: skeleton of a new architecture, median of {len(archs)}: "
              f"{build['before']:.1f} ms before, {build['now']:.1f} ms now")
        epochs = {way: [] for way in BUILDERS}
        losses = {}
        for _ in range(args.rounds):
            for way in BUILDERS:
                seconds, losses[way] = train_epochs(space, name, args.epochs, way, args.seed)
                epochs[way] += seconds
        if losses["before"] != losses["now"]:
            raise SystemExit(f"{name}: the two ways trained different weights (loss curves differ)")
        before, now = statistics.median(epochs["before"]), statistics.median(epochs["now"])
        print(f"{name}: supernet epoch ({NUM_RANDOM[name]} random sub-networks per step, digits, 23 steps), "
              f"median of {len(epochs['now'])}: {before:.1f} s before, {now:.1f} s now; "
              f"loss curves identical")
        summary.append(f"{name} {before / now:.2f}x")
    print(f"supernet training ({', '.join(args.spaces)}): epoch time ratio (before / now): {', '.join(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
