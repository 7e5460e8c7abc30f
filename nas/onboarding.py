"""``hwnas device add``: onboard a device from a handful of measurements.

Measure an informative reference set on the device (greedy k-center over the
source devices' predictions of a sampled pool, so it spans the behaviours the
sources disagree about), adapt a latency predictor of :mod:`predictors` to
it (for a token model, ``--runner slm``: one predictor per metric, decode and
prefill latency and memory, in one multi-metric checkpoint), report held-out
and cross-validated quality next to a MACs fit (with a warning when the
predictor is no better; outlier rows are named and left out,
see :func:`predictors.quality.adapt`), and save the device folder
(:mod:`nas.devices`).  The pool's layer costs are counted once and kept under
``$HWNAS_HOME/cache/pool_features`` for the next run.  Two predictors can be
adapted (``auto``, the default, adapts both and keeps the one whose
cross-validated ranking of the reference measurements is best):

* ``fewshot``: the meta-learned few-shot predictor, meta-trained on the
  source bank's latencies of the pool (the bank: the configurations of the
  space's shipped source table, the store's runner sources, analytic devices);
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

from hardware.base import Fingerprint
from hardware.store import MeasurementStore, hwnas_home, without_password
from nas.devices import PREDICTOR_FILE, device_dir
from nas.files import atomic_write_text
from nas.sources import RunContext, make_progress
from nas.sources.device import TOKEN_RUNNER, measuring_source
from nas.sources.slm import SLMLatency
from predictors.base import Predictor
from predictors.fewshot import FewShotPredictor
from predictors.mixture import (FEATURE_VERSION, FeatureCache, RealSource, SourceMixture, fewshot_from_bank,
                                make_mixture, quality, sample_pool, select_reference, table_sources)
from predictors.multi import MultiMetricPredictor
from predictors.quality import adapt, choose_by_cross_validation, find_outliers
from predictors.source_tables import SourceTables, load_tables, meta_train
from search_spaces import make_space

logger = logging.getLogger(__name__)

#: ``auto`` adapts both and keeps the one whose cross-validation on the reference set is best
PREDICTOR_KINDS = ("auto", "fewshot", "mixture")
#: runner options never written to disk (secrets come from the environment instead)
_SECRET_OPTIONS = ("token",)


def onboard(name: str, runner: str, runner_options: Mapping[str, Any], space_name: str,
            space_options: Mapping[str, Any], samples: int = 20, holdout: int = 10, pool: int = 200,
            seed: int = 0, protocol_options: Mapping[str, Any] | None = None, store_path: str | Path | None = None,
            home: Path | None = None, replace: bool = False, analytic_per_family: int = 8,
            predictor_kind: str = "auto", progress: bool = True, log=print) -> dict[str, Any]:
    """Measure an informative reference set on the device, adapt the predictor, save both.

    ``runner`` is a network runner (``latency_ms``) or ``slm`` for a token model
    (``decode_ms``, ``prefill_ms``, ``memory_mb``, one few-shot predictor per metric,
    meta-trained on the shipped source tables, :func:`token_model_priors`; with ``auto``
    each metric's prior is the :data:`TOKEN_PRIOR_VARIANTS` entry that cross-validates best
    on the reference measurements)."""
    home = home or hwnas_home()
    folder = device_dir(name, home)
    if (folder / "device.json").exists() and not replace:
        raise ValueError(f"device {name!r} already exists ({folder}); pass --replace to onboard it again")
    if predictor_kind not in PREDICTOR_KINDS:
        raise ValueError(f"unknown onboarding predictor {predictor_kind!r}; valid: {', '.join(PREDICTOR_KINDS)}")
    token_model = runner == TOKEN_RUNNER
    if token_model and predictor_kind == "mixture":
        raise ValueError(f"--predictor {predictor_kind} prices whole networks from layer costs; a token model "
                         f"(--runner {TOKEN_RUNNER}) onboards the fewshot predictor")
    if samples < 3:
        raise ValueError(f"--samples must be >= 3, got {samples}")
    if holdout < 0 or pool < samples + holdout:
        raise ValueError(f"--pool ({pool}) must be >= --samples + --holdout ({samples + holdout})")
    space = make_space(space_name, **dict(space_options))
    store = MeasurementStore(store_path or home / "measurements.db")
    try:
        ctx = RunContext(space, store, folder, seed, progress=progress)
        source = measuring_source(runner, runner_options, dict(protocol_options or {}), ctx, device=name)
        fingerprint = source.fingerprint()
        described = device_fingerprint(source)
        log(f"device {name!r}: {described.describe()}")
        t0 = time.perf_counter()
        archs = sample_pool(space, pool, seed)
        if len(archs) < samples + holdout:
            raise ValueError(f"space {space_name!r} has only {len(archs)} distinct archs; "
                             f"lower --samples/--holdout")
        result: dict[str, Any] = {}
        if token_model:
            variants = token_model_variants(space, list(source.metrics), fingerprint, seed, predictor_kind, log)
            priors = {m: by_kind["fewshot"] for m, by_kind in variants.items()}
            # where the source configurations disagree, for every metric
            basis = np.hstack([np.maximum(p.source_predictions(archs), 1e-9) for p in priors.values()])
            result["method"] = "fewshot"
        else:
            cache = featurised_pool(space, archs, seed, pool, home, progress, log)
            shipped = shipped_sources(space, fingerprint)
            bank = make_mixture(space, store, source.runner.batch_size, exclude=[source.key],
                                analytic_per_family=analytic_per_family, seed=seed, cache=cache, shipped=shipped)
            basis = bank.basis(archs)
            log(f"source devices: {len(shipped)} real from the shipped table, {len(bank.real) - len(shipped)} "
                f"real from the store, {len(bank.analytic)} analytic; pool of {len(archs)} archs featurized "
                f"in {time.perf_counter() - t0:.1f} s")
            candidates: dict[str, Predictor] = {}
            if predictor_kind in ("auto", "fewshot"):
                t1 = time.perf_counter()
                candidates["fewshot"] = fewshot_from_bank(space, archs, basis, bank.source_names, seed)
                result.update(pretrain_s=round(time.perf_counter() - t1, 2))
            if predictor_kind in ("auto", "mixture"):
                candidates["mixture"] = bank
        chosen = select_reference(basis, samples)
        rest = [i for i in range(len(archs)) if i not in set(chosen)]
        held = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))[:holdout]]
        log(f"measuring {samples} reference + {len(held)} held-out archs on the device")
        measured = chosen + held
        rows = source.evaluate([archs[i] for i in measured])
        # the reference rows decide (the held-out rows stay unseen for the figures below)
        reference = [archs[i] for i in chosen]
        if not token_model:
            kind = next(iter(candidates))
            if len(candidates) > 1:
                kind, scores = _choose(candidates, reference, rows[:samples], "latency_ms", "predictor", seed, log)
                result["choice"] = {"requested": predictor_kind, "cross_validated": scores}
            predictor, result["method"] = candidates[kind], kind
        else:
            for metric, by_kind in variants.items():
                if len(by_kind) > 1:
                    kind, scores = _choose(by_kind, reference, rows[:samples], metric, f"{metric}: prior", seed, log)
                    priors[metric] = by_kind[kind]
                    result.setdefault("choice", {})[metric] = {"prior": kind, "cross_validated": scores}
            predictor = MultiMetricPredictor(space, priors)
        metrics = list(predictor.metrics)
        values = {m: np.array([r[m] for r in rows]) for m in metrics}
        members = predictor.members if token_model else {"latency_ms": predictor}
        for metric, member in members.items():
            y = values[metric]
            # MACs explain a network's latency, so a row far off its trend is a broken timing;
            # they do not explain decode time or memory, so token models keep every row
            bad = set() if token_model else {measured[i] for i in find_outliers(space, [archs[i] for i in measured], y)}
            quality_of = _heldout(space, member, archs, measured, y, samples, bad, metric, log)
            # the saved predictor learns from every (non-outlier) measurement; cross-validation
            # over all of them is the figure with the most samples behind it
            quality_of.update(adapt(member, [archs[i] for i in measured], y, seed=seed, emit=log,
                                    exclude_outliers=not token_model))
            if token_model:
                result.setdefault("metrics", {})[metric] = quality_of
            else:
                result.update(quality_of)
        if isinstance(predictor, SourceMixture):
            result.update(mixture_method=bank.method, loo_mape=bank.loo[bank.method])
        folder.mkdir(parents=True, exist_ok=True)
        predictor.save(folder / PREDICTOR_FILE)
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["arch", *metrics])
        for row, i in enumerate(measured):
            writer.writerow([str(archs[i]), *(f"{values[m][row]:.6f}" for m in metrics)])
        atomic_write_text(folder / "measurements.csv", table.getvalue())
        record = {"name": name, "runner": runner,
                  "runner_options": _storable(runner_options),
                  "protocol": asdict(source.options.protocol),
                  "space": {"name": space.name, "options": space.options()},
                  "fingerprint": described.to_dict(), "source_fingerprint": fingerprint,
                  "source_key": source.key, "metrics": metrics,
                  "samples": samples, "holdout": len(held), "quality": result,
                  "predictor_kind": result["method"], "predictor": PREDICTOR_FILE,
                  "created": time.time()}
        # device.json last: a folder without it is not an onboarded device
        atomic_write_text(folder / "device.json", json.dumps(record, indent=1, default=str))
        log(f"saved {folder}; use it in a recipe as  latency: {{device: {name}}}"
            + (f" (metrics {', '.join(metrics)})" if token_model else ""))
        return record
    finally:
        store.close()


def _storable(runner_options: Mapping[str, Any]) -> dict[str, Any]:
    """The runner options ``device.json`` keeps (re-measuring the device reads them): no token,
    and a farm's database URL without its password (libpq finds it in ~/.pgpass or $PGPASSWORD)."""
    return {k: (without_password(v) if k == "store" and isinstance(v, str) else v)
            for k, v in runner_options.items() if k not in _SECRET_OPTIONS}


def _choose(candidates: Mapping[str, Predictor], reference: Sequence[Any], rows: Sequence[Mapping[str, float]],
            metric: str, what: str, seed: int, log) -> tuple[str, dict[str, dict]]:
    """:func:`~predictors.quality.choose_by_cross_validation` on the reference rows' ``metric``, logged."""
    kind, scores = choose_by_cross_validation(candidates, reference, [r[metric] for r in rows], seed)
    log(f"{what} chosen by cross-validation on the reference set: {kind} ("
        + ", ".join(f"{k} Spearman {v['spearman']:.3f}, MAPE {v['mape'] * 100:.1f}%" for k, v in scores.items())
        + ")")
    return kind, scores


def _heldout(space, predictor: Predictor, archs: Sequence[Any], measured: Sequence[int], y: np.ndarray,
             samples: int, bad: set[int], metric: str, log) -> dict[str, Any]:
    """Fit on the reference rows, score on the held-out rows, beside a linear fit of MACs."""
    ref = [(i, v) for i, v in zip(measured[:samples], y[:samples]) if i not in bad]
    test = [(i, v) for i, v in zip(measured[samples:], y[samples:]) if i not in bad]
    if not test or len(ref) < predictor.min_measurements:
        return {}
    predictor.fit([archs[i] for i, _ in ref], [v for _, v in ref])
    y_test = np.array([v for _, v in test])
    q = quality(predictor.predict([archs[i] for i, _ in test]), y_test)
    macs = np.array([space.features(archs[i])["macs"] for i, _ in ref + test])
    a, b = np.polyfit(macs[:len(ref)], [v for _, v in ref], 1)
    q_macs = quality(a * macs[len(ref):] + b, y_test)
    log(f"{metric}: held-out quality on {len(test)} archs: Spearman {q['spearman']:.3f}, MAPE "
        f"{q['mape'] * 100:.1f}% (MACs proxy: Spearman {q_macs['spearman']:.3f}, MAPE {q_macs['mape'] * 100:.1f}%)")
    return {"heldout": q, "macs_proxy": q_macs}


#: the few-shot priors of a token-model metric that ``device add --predictor auto`` chooses
#: among by cross-validation on the device's reference measurements (meta-training options
#: of :func:`token_model_priors`): which parts of the prior help differs by metric and
#: device.  In ``benchmarks/onboarding_quality.py`` at 20 samples (two measurements of
#: the unseen configuration's test set), decode ranked 0.943 / 0.951 with the whole prior
#: and 0.956 / 0.961 with table columns only, prefill 0.980 / 0.974 whole and 0.980 /
#: 0.976 without the neural view; the cross-validated choice gave decode 0.956 / 0.961
#: and prefill 0.980 / 0.966.
TOKEN_PRIOR_VARIANTS: dict[str, dict[str, Any]] = {
    "fewshot": {}, "fewshot-tables-only": {"analytic_per_family": 0}, "fewshot-no-neural": {"neural": False}}


def token_model_variants(space, metrics: Sequence[str], fingerprint: Mapping[str, Any], seed: int,
                         predictor_kind: str = "auto", log=print) -> dict[str, dict[str, FewShotPredictor]]:
    """``metric -> {variant: prior}``: every :data:`TOKEN_PRIOR_VARIANTS` for ``auto``, the
    whole prior (``fewshot``) alone otherwise."""
    kinds = list(TOKEN_PRIOR_VARIANTS) if predictor_kind == "auto" else ["fewshot"]
    tables = shipped_token_tables(space)  # read once for every variant
    by_kind = {kind: token_model_priors(space, metrics, fingerprint, seed, log if kind == "fewshot" else _quiet,
                                        tables=tables, **TOKEN_PRIOR_VARIANTS[kind]) for kind in kinds}
    return {m: {kind: by_kind[kind][m] for kind in kinds} for m in metrics}


def _quiet(*_) -> None:
    """A log that drops its lines (the variants of a prior would repeat its own)."""


def shipped_token_tables(space) -> SourceTables:
    """The space's shipped source tables, which a token model's prior cannot do without."""
    tables = load_tables(space.name)
    if tables is None:
        raise ValueError(f"no source tables ship for space {space.name!r}; token models need them "
                         f"('hwnas predictor tables --space {space.name}')")
    return tables


def token_model_priors(space, metrics: Sequence[str], fingerprint: Mapping[str, Any], seed: int,
                       log=print, tables: SourceTables | None = None, **meta_options) -> dict[str, FewShotPredictor]:
    """One few-shot prior per metric, meta-trained on the shipped source tables of the space,
    leaving out the configuration that measures exactly like the device being onboarded
    (this machine under the same options: it would be the device itself).  ``meta_options``
    go to :func:`predictors.source_tables.meta_train` (benchmarks compare variants); ``tables``
    are the shipped ones unless given."""
    tables = tables or shipped_token_tables(space)
    same = tables.configs_measured_as(fingerprint)
    # At these model sizes a runtime's per-operator overheads shape decode time as much as
    # the model's bytes do, so configurations timed by another engine (PyTorch eager vs the
    # exported graphs on ONNX Runtime) mislead the prior: measured, on the benchmark's unseen
    # devices, they cost the eager device's decode ranking 0.02.  They stay in only when the
    # device's own engine has too few configurations to learn from.
    engine = timing_engine(fingerprint)
    other = [c for c in tables.configs
             if c not in same and timing_engine(tables.provenance["configs"][c]["fingerprint"]) != engine]
    if len(tables.configs) - len(same) - len(other) < MIN_ENGINE_CONFIGS:
        other = []
    left_out = same + other
    t0 = time.perf_counter()
    priors = {m: meta_train(space, m, tables, exclude=left_out, seed=seed, **meta_options) for m in metrics}
    log(f"priors of {', '.join(metrics)} meta-trained on {len(tables.configs) - len(left_out)} measured "
        f"configurations" + (f" (left out {', '.join(same)}: the device's own)" if same else "")
        + (f" (left out {len(other)} timed by another engine than {engine})" if other else "")
        + f" of {tables.provenance['archs']} archs, plus analytic devices ({time.perf_counter() - t0:.1f} s)")
    return priors


#: fewest configurations of the device's own timing engine a token-model prior is trained on
#: alone (with fewer, every engine's configurations are kept)
MIN_ENGINE_CONFIGS = 3


def timing_engine(fingerprint: Mapping[str, Any]) -> str:
    """What timed a token model (an ``slm`` source's fingerprint): ``eager`` for the PyTorch
    timers, else the runtime of the runner engine (a farm device's: the device's own)."""
    engine = fingerprint.get("engine")
    return str(engine["runner"]) if isinstance(engine, Mapping) else "eager"


def shipped_sources(space, fingerprint: Mapping[str, Any]) -> list[RealSource]:
    """Cost models of the space's shipped latency table (none when no table ships), without
    the configuration measured exactly as the device being onboarded."""
    tables = load_tables(space.name)
    if tables is None or "latency_ms" not in tables.metrics:
        return []
    # the table ships its archs' features; a cache counts them only if it does not
    return table_sources(tables, FeatureCache(tables.space), exclude=tables.configs_measured_as(fingerprint))


def device_fingerprint(source) -> Fingerprint:
    """The device description ``hwnas device list`` shows: the runner's fingerprint; for a
    token model its engine runner's, or the decode timer's (runner ``slm-decode``) for PyTorch eager."""
    if isinstance(source, SLMLatency):
        return source.device_fingerprint()
    return source.runner.fingerprint()


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
