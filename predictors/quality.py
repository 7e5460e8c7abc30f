"""Honest quality figures for adapting a predictor to a device, and robust sample cleaning.

``hwnas predictor finetune`` and ``hwnas device add`` both go through
:func:`adapt`:

1. :func:`find_outliers` flags measurements that a robust log-log fit of
   latency on MACs cannot explain (a 1,300 ms row among 1-2 ms rows is a
   broken measurement, not a slow net); they are left out of adaptation and
   named in a warning.
2. :func:`cross_validated_quality` scores the predictor by k-fold (leave-one-
   out when there are few samples) cross-validation over the kept samples,
   next to the plain MACs proxy (a linear fit of latency on MACs) on the same
   folds, and warns when the predictor is not better than MACs.
3. the predictor is fitted on every kept sample.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from predictors.base import Predictor, check_measurements, take
from predictors.baselines import MACsProxy

log = logging.getLogger(__name__)

#: at most this many folds; fewer samples than this -> leave-one-out
MAX_FOLDS = 10
#: modified z-score (Iglewicz & Hoaglin) above which a residual is an outlier
OUTLIER_Z = 3.5
#: a row within this factor of the robust trend is never an outlier: with a few tightly
#: fitting samples the robust spread is tiny, and a net 30% off the MACs trend is a real
#: net (memory-bound, say), not a broken measurement; broken rows are off by far more
MIN_OUTLIER_FACTOR = 2.0


def spearman(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Spearman's rho, NaN where it is undefined (under 3 points, constant values)."""
    from scipy.stats import spearmanr

    if len(measured) < 3 or np.ptp(predicted) == 0 or np.ptp(measured) == 0:
        return float("nan")
    return float(spearmanr(predicted, measured)[0])


def folds(count: int, seed: int = 0, max_folds: int = MAX_FOLDS) -> list[np.ndarray]:
    """Held-out index sets of a seeded k-fold split (k = min(count, max_folds); k = count is
    leave-one-out).  Every sample is held out exactly once."""
    if count < 3:
        raise ValueError(f"cross-validation needs at least 3 samples, got {count}")
    k = min(count, max_folds)
    order = np.random.default_rng(seed).permutation(count)
    return [np.sort(part) for part in np.array_split(order, k)]


def out_of_fold(predictor: Predictor, encoded: Any, y: np.ndarray, splits: Sequence[np.ndarray]) -> np.ndarray:
    """Every sample predicted by ``predictor`` fitted on the other folds (a copy is fitted,
    ``predictor`` itself is left as it was)."""
    model = copy.deepcopy(predictor)
    pred = np.empty(len(y))
    everything = np.arange(len(y))
    for held in splits:
        train = np.setdiff1d(everything, held)
        model.fit_encoded(take(encoded, train), y[train])
        pred[held] = np.asarray(model.predict_encoded(take(encoded, held)), dtype=float)
    return pred


def cross_validated_quality(predictor: Predictor, archs: Sequence[Any], latency_ms: Sequence[float],
                            seed: int = 0, max_folds: int = MAX_FOLDS,
                            emit: Callable[[str], Any] | None = None, warn: bool = True) -> dict[str, Any]:
    """Cross-validated Spearman and MAPE of ``predictor`` and of the MACs proxy on the same
    folds and samples.

    Spearman is computed over the pooled out-of-fold predictions (every sample predicted
    once, by a model that did not see it), so it is defined even for leave-one-out.
    Returns ``{"predictor": {spearman, mape}, "macs_proxy": {...}, "folds", "count",
    "better_than_macs", "line"}``; ``line`` is the printable summary.  When the predictor
    is not better than MACs (lower Spearman, or equal Spearman and no lower MAPE) a
    warning is logged and also passed to ``emit`` (the command's print), unless ``warn`` is
    False (a comparison of candidates, not a verdict on the one kept)."""
    archs = predictor.parse_all(archs)
    y = check_measurements(archs, latency_ms, minimum=3)
    splits = folds(len(y), seed, max_folds)
    scores = {}
    for label, model in (("predictor", predictor), ("macs_proxy", MACsProxy(predictor.space))):
        pred = out_of_fold(model, model.encode(archs), y, splits)
        scores[label] = {"spearman": spearman(pred, y), "mape": float(np.mean(np.abs(pred - y) / y))}
    p, m = scores["predictor"], scores["macs_proxy"]
    kind = "leave-one-out" if len(splits) == len(y) else f"{len(splits)}-fold"
    line = (f"cross-validated ({kind}, {len(y)} samples, seed {seed}): Spearman {p['spearman']:.3f}, "
            f"MAPE {p['mape'] * 100:.1f}% (MACs proxy: Spearman {m['spearman']:.3f}, MAPE {m['mape'] * 100:.1f}%)")
    # NaN Spearman (constant predictions) counts as worse than anything
    ps = p["spearman"] if np.isfinite(p["spearman"]) else -np.inf
    ms = m["spearman"] if np.isfinite(m["spearman"]) else -np.inf
    better = bool(ps > ms or (ps == ms and p["mape"] < m["mape"]))
    result = {**scores, "folds": len(splits), "count": int(len(y)), "seed": seed,
              "better_than_macs": better, "line": line}
    if emit is not None:
        emit(line)
    if not better and warn:
        warning = (f"WARNING: the {predictor.name} predictor is not better than a plain MACs fit on this device "
                   f"(cross-validated Spearman {p['spearman']:.3f} vs {m['spearman']:.3f}, "
                   f"MAPE {p['mape'] * 100:.1f}% vs {m['mape'] * 100:.1f}%); rank candidates by MACs "
                   f"or measure more samples")
        log.warning(warning)
        if emit is not None:
            emit(warning)
    return result


def choose_by_cross_validation(candidates: Mapping[str, Predictor], archs: Sequence[Any],
                               latency_ms: Sequence[float], seed: int = 0) -> tuple[str, dict[str, dict]]:
    """The candidate whose cross-validated predictions of ``latency_ms`` rank best (Spearman to
    three decimals, then MAPE), and every candidate's scores.  The device's own measurements
    decide which predictor suits it, because that differs by space and device: on this
    project's 2-core machine (ONNX Runtime, 20 samples) the source mixture ranked mobiledet
    at 0.990 where the few-shot predictor ranked 0.897, and a wrong fixed choice costs more
    than a few cross-validated fits."""
    scores = {name: cross_validated_quality(p, archs, latency_ms, seed=seed, warn=False)["predictor"]
              for name, p in candidates.items()}

    def rank(name: str) -> tuple[float, float]:
        rho = scores[name]["spearman"]
        return (round(rho, 3) if np.isfinite(rho) else -np.inf, -scores[name]["mape"])

    return max(scores, key=rank), scores


def find_outliers(space, archs: Sequence[Any], latency_ms: Sequence[float],
                  threshold: float = OUTLIER_Z) -> np.ndarray:
    """Indices of measurements a robust log-log fit of latency on MACs cannot explain.

    The fit is Theil-Sen (median of pairwise slopes, median intercept), so the
    outliers themselves do not pull it; a row is an outlier when its log residual is
    more than ``threshold`` robust standard deviations (1.4826 x MAD) from the median
    residual and more than a factor ``MIN_OUTLIER_FACTOR`` off the trend.  Log space
    because latency spans orders of magnitude and a broken row is off by a factor, not
    by milliseconds."""
    y = np.asarray(latency_ms, dtype=float)
    if len(y) < 4:  # too few rows to tell an outlier from the trend
        return np.zeros(0, dtype=int)
    macs = np.array([space.features(a)["macs"] for a in archs], dtype=float)
    x, ly = np.log(np.maximum(macs, 1.0)), np.log(y)
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    usable = np.abs(dx) > 1e-12
    slope = float(np.median((ly[j] - ly[i])[usable] / dx[usable])) if usable.any() else 0.0
    resid = ly - slope * x
    resid -= np.median(resid)
    limit = max(threshold * 1.4826 * float(np.median(np.abs(resid))), np.log(MIN_OUTLIER_FACTOR))
    return np.flatnonzero(np.abs(resid) > limit)


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def adapt(predictor: Predictor, archs: Sequence[Any], latency_ms: Sequence[float], seed: int = 0,
          emit: Callable[[str], Any] | None = None, exclude_outliers: bool = True) -> dict[str, Any]:
    """Drop outlier rows (warning names them), score by cross-validation next to the MACs
    proxy, then fit ``predictor`` on the kept rows.  Returns the quality record
    (``cross_validated``, ``outliers``: list of {arch, latency_ms}, ``samples``)."""
    archs = predictor.parse_all(archs)
    y = check_measurements(archs, latency_ms, minimum=predictor.min_measurements)
    bad = find_outliers(predictor.space, archs, y) if exclude_outliers else np.zeros(0, dtype=int)
    outliers = [{"arch": str(archs[i]), "latency_ms": float(y[i])} for i in bad]
    if len(bad):
        median = float(np.median(y))
        warning = (f"WARNING: {len(bad)} measurement(s) left out of adaptation as outliers of a robust "
                   f"latency-vs-MACs fit (median {median:.4g} ms): "
                   + "; ".join(f"{_short(o['arch'])} = {o['latency_ms']:.4g} ms" for o in outliers))
        log.warning(warning)
        if emit is not None:
            emit(warning)
        keep = np.setdiff1d(np.arange(len(y)), bad)
        archs, y = [archs[i] for i in keep], y[keep]
    record: dict[str, Any] = {"outliers": outliers, "samples": int(len(y))}
    # every fold must leave the predictor enough rows to fit on
    if len(y) >= max(3, predictor.min_measurements + 1):
        cv = cross_validated_quality(predictor, archs, y, seed=seed, emit=emit)
        record["cross_validated"] = {k: v for k, v in cv.items() if k != "line"}
    elif emit is not None:
        emit(f"only {len(y)} usable measurements: no cross-validated quality figure")
    predictor.fit(archs, y)
    return record
