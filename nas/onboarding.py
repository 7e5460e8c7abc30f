"""``hwnas device add``: onboard a device from a handful of measurements.

Measure an informative reference set on the device (greedy k-center over the
source devices' predictions of a sampled pool, so it spans the behaviours the
sources disagree about), adapt a latency predictor of :mod:`predictors` to
it, report held-out and cross-validated quality next to a MACs fit (with a
warning when the predictor is no better; outlier rows are named and left out,
see :func:`predictors.quality.adapt`), and save the device folder
(:mod:`nas.devices`).  The pool's layer costs are counted once and kept under
``$HWNAS_HOME/cache/pool_features`` for the next run.  Two predictors can be adapted:

* ``fewshot``: the meta-learned few-shot predictor, meta-trained on the
  source bank's latencies of the pool;
* ``mixture``: the source bank itself, a non-negative mixture of the source
  devices' predictions (:class:`predictors.mixture.SourceMixture`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hardware.protocol import Protocol
from hardware.store import MeasurementStore, hwnas_home
from nas.devices import PREDICTOR_FILE, device_dir
from nas.files import atomic_write_text
from nas.sources import RunContext, make_progress
from nas.sources.runner import RunnerLatency
from predictors.mixture import (FEATURE_VERSION, FeatureCache, fewshot_from_bank, make_mixture, quality,
                                sample_pool, select_reference)
from predictors.quality import adapt, find_outliers
from search_spaces import make_space

logger = logging.getLogger(__name__)

PREDICTOR_KINDS = ("fewshot", "mixture")
#: runner options never written to disk (secrets come from the environment instead)
_SECRET_OPTIONS = ("token",)


def onboard(name: str, runner: str, runner_options: Mapping[str, Any], space_name: str,
            space_options: Mapping[str, Any], samples: int = 20, holdout: int = 10, pool: int = 200,
            seed: int = 0, protocol_options: Mapping[str, Any] | None = None, store_path: str | Path | None = None,
            home: Path | None = None, replace: bool = False, analytic_per_family: int = 8,
            predictor_kind: str = "fewshot", progress: bool = True, log=print) -> dict[str, Any]:
    """Measure an informative reference set on the device, adapt the predictor, save both."""
    home = home or hwnas_home()
    folder = device_dir(name, home)
    if (folder / "device.json").exists() and not replace:
        raise ValueError(f"device {name!r} already exists ({folder}); pass --replace to onboard it again")
    if predictor_kind not in PREDICTOR_KINDS:
        raise ValueError(f"unknown onboarding predictor {predictor_kind!r}; valid: {', '.join(PREDICTOR_KINDS)}")
    if samples < 3:
        raise ValueError(f"--samples must be >= 3, got {samples}")
    if holdout < 0 or pool < samples + holdout:
        raise ValueError(f"--pool ({pool}) must be >= --samples + --holdout ({samples + holdout})")
    space = make_space(space_name, **dict(space_options))
    protocol = Protocol(**dict(protocol_options or {}))
    store = MeasurementStore(store_path or home / "measurements.db")
    try:
        ctx = RunContext(space, store, folder, seed, progress=progress)
        latency = RunnerLatency.build(runner, ctx, protocol, device=name, **dict(runner_options))
        fingerprint = latency.runner.fingerprint()
        log(f"device {name!r}: {fingerprint.describe()}")
        t0 = time.perf_counter()
        archs = sample_pool(space, pool, seed)
        if len(archs) < samples + holdout:
            raise ValueError(f"space {space_name!r} has only {len(archs)} distinct archs; "
                             f"lower --samples/--holdout")
        cache = featurised_pool(space, archs, seed, pool, home, progress, log)
        bank = make_mixture(space, store, latency.runner.batch_size, exclude=[latency.key],
                            analytic_per_family=analytic_per_family, seed=seed, cache=cache)
        basis = bank.basis(archs)
        log(f"source devices: {len(bank.real)} real (from the store), {len(bank.analytic)} analytic; "
            f"pool of {len(archs)} archs featurized in {time.perf_counter() - t0:.1f} s")
        chosen = select_reference(basis, samples)
        rest = [i for i in range(len(archs)) if i not in set(chosen)]
        held = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))[:holdout]]
        log(f"measuring {samples} reference + {len(held)} held-out archs on the device")
        metrics = latency.evaluate([archs[i] for i in chosen + held])
        y = np.array([m["latency_ms"] for m in metrics])
        y_ref, y_held = y[:samples], y[samples:]
        if predictor_kind == "fewshot":
            t1 = time.perf_counter()
            predictor = fewshot_from_bank(space, archs, basis, bank.source_names, seed)
            result: dict[str, Any] = {"method": "fewshot", "pretrain_s": round(time.perf_counter() - t1, 2)}
        else:
            predictor, result = bank, {}

        measured = chosen + held
        # broken rows (a 1,300 ms timing among 1-2 ms ones) are found once over every
        # measurement and kept out of both the held-out figure and the adaptation
        bad = {measured[i] for i in find_outliers(space, [archs[i] for i in measured], y)}
        ref = [(i, v) for i, v in zip(chosen, y_ref) if i not in bad]
        test = [(i, v) for i, v in zip(held, y_held) if i not in bad]
        if test and len(ref) >= predictor.min_measurements:
            predictor.fit([archs[i] for i, _ in ref], [v for _, v in ref])
            y_test = np.array([v for _, v in test])
            q = quality(predictor.predict([archs[i] for i, _ in test]), y_test)
            macs = np.array([space.features(archs[i])["macs"] for i, _ in ref + test])
            a, b = np.polyfit(macs[:len(ref)], [v for _, v in ref], 1)
            q_macs = quality(a * macs[len(ref):] + b, y_test)
            result.update(heldout=q, macs_proxy=q_macs)
            log(f"held-out quality on {len(test)} archs: Spearman {q['spearman']:.3f}, MAPE {q['mape'] * 100:.1f}% "
                f"(MACs proxy: Spearman {q_macs['spearman']:.3f}, MAPE {q_macs['mape'] * 100:.1f}%)")
        # the saved predictor learns from every (non-outlier) measurement; cross-validation
        # over all of them is the figure with the most samples behind it
        result.update(adapt(predictor, [archs[i] for i in measured], y, seed=seed, emit=log))
        if predictor is bank:
            result.update(method=bank.method, loo_mape=bank.loo[bank.method])
        folder.mkdir(parents=True, exist_ok=True)
        predictor.save(folder / PREDICTOR_FILE)
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["arch", "latency_ms"])
        for i, value in zip(measured, y):
            writer.writerow([str(archs[i]), f"{value:.6f}"])
        atomic_write_text(folder / "measurements.csv", table.getvalue())
        record = {"name": name, "runner": runner,
                  "runner_options": {k: v for k, v in runner_options.items() if k not in _SECRET_OPTIONS},
                  "protocol": asdict(protocol), "space": {"name": space.name, "options": space.options()},
                  "fingerprint": fingerprint.to_dict(), "source_key": latency.key,
                  "samples": samples, "holdout": len(held), "quality": result,
                  "predictor_kind": predictor_kind, "predictor": PREDICTOR_FILE,
                  "created": time.time()}
        # device.json last: a folder without it is not an onboarded device
        atomic_write_text(folder / "device.json", json.dumps(record, indent=1, default=str))
        log(f"saved {folder}; use it in a recipe as  latency: {{device: {name}}}")
        return record
    finally:
        store.close()


def pool_cache_path(space, seed: int, count: int, home: Path) -> Path:
    """Where the layer costs of the pool ``sample_pool(space, count, seed)`` are kept:
    keyed by the space and its options, the pool's seed and size and the feature version."""
    # all options, not only those that change built networks: the sampled pool depends on them all
    key = json.dumps({"space": space.name, "options": space.options(), "seed": seed, "count": count,
                      "features": FEATURE_VERSION}, sort_keys=True, default=str)
    return home / "cache" / "pool_features" / f"{space.name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def featurised_pool(space, archs: Sequence[Any], seed: int, count: int, home: Path, progress: bool = True,
                    log=print) -> FeatureCache:
    """A feature cache holding the layer costs of ``archs`` (the sampled pool).

    Counting costs builds every network (minutes for a 200-arch pool of a large space),
    so the costs are kept on disk between ``device add`` runs; an unreadable or
    mismatched file is recounted (with a warning) and rewritten atomically."""
    cache = FeatureCache(space)
    path = pool_cache_path(space, seed, count, home)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("features") != FEATURE_VERSION \
                    or not isinstance(data.get("costs"), dict):
                raise ValueError("not a pool feature cache of this version")
            cache.absorb(data["costs"])
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            message = f"WARNING: pool feature cache {path} is unreadable ({exc}); recounting"
            logger.warning(message)
            log(message)
            cache = FeatureCache(space)
    missing = cache.missing(archs)
    if missing:
        log(f"featurising {len(missing)} of {len(archs)} pool archs (kept in {path} for the next run)")
        bar = make_progress(len(missing), "featurising pool", progress)
        try:
            cache.costs(archs, progress=bar.update)
        finally:
            bar.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"space": space.name, "options": space.options(), "seed": seed, "count": count,
                   "features": FEATURE_VERSION, "costs": cache.export(archs)}
        atomic_write_text(path, json.dumps(payload, default=str))
    else:
        log(f"pool features of {len(archs)} archs read from {path}")
    return cache
