"""Rebuild the files shipped in ``predictors/``: checkpoints and protocol tables.

    python -m predictors.assets --data-root ../shared/data

For each space of HELP's protocol this runs exactly what

    hwnas predictor pretrain --space SPACE --data ROOT/SPACE/latency_ms.csv \\
        --devices <HELP meta-train + meta-validation devices> --seed 0 \\
        --out predictors/checkpoints/SPACE.npz

does, and stores the test devices' columns for ``hwnas predictor eval``.
Only this developer command reads the public tables; the package never does.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from predictors import CHECKPOINT_DIR, FewShotPredictor
from predictors.data import LatencyTable
from predictors.protocol import HELP
from predictors.protocol_data import PROTOCOL_DIR, write_protocol_table
from search_spaces import make_space


def build(data_root: Path, spaces=tuple(HELP), seed: int = 0) -> None:
    for name in spaces:
        split = HELP[name]
        space = make_space(name)
        csv_path = data_root / name / "latency_ms.csv"
        start = time.perf_counter()
        sources = LatencyTable.read(csv_path, space, split.sources)
        predictor = FewShotPredictor.pretrain(space, sources.archs, sources.values, sources.devices, seed=seed)
        ckpt = predictor.save(CHECKPOINT_DIR / f"{name}.npz")
        tests = LatencyTable.read(csv_path, space, split.test)
        table = write_protocol_table(tests, split.test, PROTOCOL_DIR / f"{name}.npz")
        print(f"{name}: {ckpt} ({ckpt.stat().st_size / 1024:.0f} KiB), {table} "
              f"({table.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - start:.1f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, type=Path, help="folder with <space>/latency_ms.csv")
    parser.add_argument("--spaces", default=",".join(HELP), help="comma-separated spaces")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build(args.data_root, [s for s in args.spaces.split(",") if s], args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
