"""HELP's few-shot latency protocol: our predictor vs baselines vs HELP's published numbers.

    python benchmarks/predictor_help_protocol.py [--seeds 10] [--spaces nb201,fbnet]

Reads the public tables in ../shared/data (see its README).  For each space:

1. meta-trains the few-shot predictor on HELP's meta-train + meta-validation
   devices (timed; the result is compared with the shipped checkpoint);
2. for each test device and seed, draws N architectures as the device's
   measurements, adapts, and scores Spearman and MAPE on *every other*
   architecture of the table (and, at N=10, on HELP's own query split);
3. does the same for the baselines: MACs proxy (MACs calibrated to ms by a
   line through the N measurements) and transfer (ridge combination of the
   source devices' measured latencies fitted on the N measurements);
4. prints each device's *ceiling*: the same predictor adapted on thousands of
   that device's own architectures instead of 10 (every architecture outside
   the query set; for ``remaining``, a random half, scored on the other half).
   No few-shot predictor with these features can be expected above it, and a
   target above it is a property of the table (measurement noise, drift), not
   of the predictor;
5. times fine-tuning on 10 measurements and predicting 15,625 archs.

All draws come from ``numpy.random.default_rng(seed)`` with seeds 0..S-1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SAMPLES = (10, 20, 50)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def ceiling(model, encoded, y: np.ndarray, queries: str, pool: int) -> float:
    """Spearman of ``model`` adapted on thousands of the device's own archs (see step 4)."""
    from predictors.base import take
    from predictors.protocol import episodes, spearman

    if queries == "remaining":
        order = np.random.default_rng(0).permutation(len(y))
        fit_rows, query = order[: len(y) // 2], order[len(y) // 2:]
    else:
        query = episodes(y, 10, [0], queries, pool)[0][2]
        fit_rows = np.setdiff1d(np.arange(len(y)), query)
    model.fit_encoded(take(encoded, fit_rows), y[fit_rows])
    return spearman(model.predict_encoded(take(encoded, query)), y[query])


def run_space(name: str, seeds: list[int]) -> dict:
    from predictors import FewShotPredictor, MACsProxy, SourceTransfer, load_predictor
    from predictors.data import LatencyTable
    from predictors.protocol import (HELP, HELP_PUBLISHED_MEAN, evaluate_device, predictor_fit_predict)
    from search_spaces import make_space

    split = HELP[name]
    space = make_space(name)
    csv_path = DATA / name / "latency_ms.csv"
    sources = LatencyTable.read(csv_path, space, split.sources)
    tests = LatencyTable.read(csv_path, space, split.test)
    archs = sources.archs

    print(f"\n=== {name}: {len(archs)} archs; sources ({len(split.sources)}): {', '.join(split.sources)}; "
          f"test: {', '.join(split.test)}")
    start = time.perf_counter()
    ours = FewShotPredictor.pretrain(space, archs, sources.values, sources.devices, seed=0)
    pretrain_s = time.perf_counter() - start
    shipped = load_predictor(name)
    probe = [str(a) for a in archs[:2000]]
    drift = float(np.max(np.abs(ours.predict(probe) / shipped.predict(probe) - 1.0)))
    print(f"pretrain: {pretrain_s:.1f} s; max relative difference to the shipped checkpoint "
          f"on 2000 archs (un-adapted): {drift:.2e}")

    models = {
        "ours": ours,
        "macs": MACsProxy(space),
        "transfer": SourceTransfer(space, archs, sources.values, sources.devices),
    }
    encoded = {k: m.encode(archs) for k, m in models.items()}
    runners = {k: predictor_fit_predict(models[k], encoded[k]) for k in models}

    results = {}  # (queries, samples, model, device) -> DeviceScore
    ceilings = {}  # (queries, device) -> Spearman
    for queries, sample_sizes in (("remaining", SAMPLES), ("help-split", (10,))):
        for n in sample_sizes:
            for device in split.test:
                y = tests.column(device)
                for key, run in runners.items():
                    results[queries, n, key, device] = evaluate_device(
                        device, y, run, n, seeds, queries, split.pool)
        for device in split.test:
            ceilings[queries, device] = ceiling(ours, encoded["ours"], tests.column(device), queries, split.pool)

    def row(queries, n, device):
        r = {k: results[queries, n, k, device] for k in models}
        return r

    for queries in ("remaining", "help-split"):
        label = ("every architecture not drawn" if queries == "remaining"
                 else "HELP's query split (archs pool..pool+1000, middle 80% by latency)")
        print(f"\n{name}, 10 samples, {len(seeds)} seeds, scored on {label}")
        print(f"{'device':<15}{'ours':>9}{'MACs':>9}{'transfer':>10}{'HELP':>8}{'ceiling':>9}   "
              f"{'ours min':>9}{'ours MAPE%':>11}{'transfer MAPE%':>15}{'MACs MAPE%':>11}  vs HELP")
        for device in split.test:
            r = row(queries, 10, device)
            help_value = split.published[device]
            verdict = "above" if r["ours"].mean_spearman >= help_value else "BELOW"
            if verdict == "BELOW" and ceilings[queries, device] < help_value:
                verdict += " (HELP's number is above this table's ceiling)"
            print(f"{device:<15}{r['ours'].mean_spearman:>9.4f}{r['macs'].mean_spearman:>9.4f}"
                  f"{r['transfer'].mean_spearman:>10.4f}{help_value:>8.3f}{ceilings[queries, device]:>9.4f}   "
                  f"{min(r['ours'].spearman):>9.4f}{r['ours'].mean_mape:>11.1f}"
                  f"{r['transfer'].mean_mape:>15.1f}{r['macs'].mean_mape:>11.1f}  {verdict}")
        means = {k: np.mean([results[queries, 10, k, d].mean_spearman for d in split.test]) for k in models}
        mean_ceiling = np.mean([ceilings[queries, d] for d in split.test])
        print(f"{'mean':<15}{means['ours']:>9.4f}{means['macs']:>9.4f}{means['transfer']:>10.4f}"
              f"{HELP_PUBLISHED_MEAN[name]:>8.3f}{mean_ceiling:>9.4f}")
    print("ceiling: the same predictor adapted on thousands of the device's own archs instead of 10 "
          "(remaining: a random half, scored on the other half; help-split: every arch outside the query set)")

    print(f"\n{name}: mean over test devices vs number of samples ({len(seeds)} seeds, all remaining archs)")
    print(f"{'samples':>7}{'ours':>9}{'MACs':>9}{'transfer':>10}{'ours MAPE%':>12}{'transfer MAPE%':>15}"
          f"{'MACs MAPE%':>12}{'ours median-device MAPE%':>26}")
    for n in SAMPLES:
        sp = {k: np.mean([results['remaining', n, k, d].mean_spearman for d in split.test]) for k in models}
        mp = {k: np.mean([results['remaining', n, k, d].mean_mape for d in split.test]) for k in models}
        med = np.median([results['remaining', n, 'ours', d].mean_mape for d in split.test])
        print(f"{n:>7}{sp['ours']:>9.4f}{sp['macs']:>9.4f}{sp['transfer']:>10.4f}{mp['ours']:>12.1f}"
              f"{mp['transfer']:>15.1f}{mp['macs']:>12.1f}{med:>26.1f}")

    # --- costs -----------------------------------------------------------------------
    text_archs = [str(a) for a in archs]
    first = split.test[0]
    y = tests.column(first)
    fit_times = []
    for seed in seeds:
        rows = np.random.default_rng(seed).choice(len(archs), 10, replace=False)
        model = load_predictor(name)
        start = time.perf_counter()
        model.fit([text_archs[i] for i in rows], y[rows])
        fit_times.append(time.perf_counter() - start)
    if len(archs) >= 15625:
        predict_archs = text_archs[:15625]
    else:
        rng = np.random.default_rng(0)
        predict_archs = [str(space.sample(rng)) for _ in range(15625)]
    predict_s = median_time(lambda: model.predict(predict_archs), 3)
    print(f"\n{name} costs: pretrain {pretrain_s:.1f} s (target <= 600 s); fine-tune on 10 samples "
          f"median {np.median(fit_times) * 1000:.1f} ms over {len(seeds)} draws (target <= 10 s); "
          f"predict 15,625 archs (from strings) median of 3: {predict_s:.2f} s (target <= 2 s)")
    return {"results": results, "pretrain_s": pretrain_s, "fit_s": float(np.median(fit_times)),
            "predict_s": predict_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="random draws per device (seeds 0..S-1)")
    parser.add_argument("--spaces", default="nb201,fbnet")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"public tables not found at {DATA}; nothing to benchmark", file=sys.stderr)
        return 1
    import torch

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name in [s for s in args.spaces.split(",") if s]:
        run_space(name, list(range(args.seeds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
