"""HELP's few-shot evaluation protocol (Lee et al., NeurIPS 2021), in one place.

Device splits and HELP's published Spearman numbers (10 samples) per space.
For each test device and seed, ``samples`` architectures are drawn from that
device's table as the adaptation set; the predictor is fitted on them and
scored on the query set:

* ``remaining`` (default): every architecture not drawn -- the strictest
  reading, and what a search over the whole space needs;
* ``help-split``: HELP's own split, for a like-for-like comparison with its
  published numbers: adaptation samples from the first 900 (NAS-Bench-201) /
  4000 (FBNet) architectures, queries the next 1000, both with each device's
  lowest and highest 10% latencies removed (HELP's ``remove_outlier``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from predictors.base import take

QUERY_MODES = ("remaining", "help-split")


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]
    #: HELP's Spearman with 10 samples, per test device
    published: dict[str, float] = field(default_factory=dict)
    #: size of HELP's meta-training pool (help-split adaptation samples come from it)
    pool: int = 900

    @property
    def sources(self) -> tuple[str, ...]:
        """Devices a predictor may learn from: meta-train plus meta-validation."""
        return self.train + self.valid


HELP = {
    "nb201": Split(
        train=("1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r", "samsung_a50",
               "pixel3", "essential_ph_1", "samsung_s7"),
        valid=("titanx_1", "titanx_32", "titanx_256", "gold_6240"),
        test=("titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss"),
        published={"titan_rtx_256": 0.987, "gold_6226": 0.989, "fpga": 0.985, "pixel2": 0.802,
                   "raspi4": 0.890, "eyeriss": 0.940},
        pool=900),
    "fbnet": Split(
        train=("1080ti_1", "1080ti_32", "1080ti_64", "silver_4114", "silver_4210r", "samsung_a50",
               "pixel3", "essential_ph_1", "samsung_s7"),
        valid=("titanx_1", "titanx_32", "titanx_64", "gold_6240"),
        test=("fpga", "raspi4", "eyeriss"),
        published={"raspi4": 0.887, "eyeriss": 0.943, "fpga": 0.892},
        pool=4000),
}
HELP_PUBLISHED_MEAN = {"nb201": 0.932, "fbnet": 0.910}


def help_split(space: str) -> Split:
    if space not in HELP:
        raise ValueError(f"HELP's protocol covers spaces {sorted(HELP)}, not {space!r}")
    return HELP[space]


def episodes(latency: np.ndarray, samples: int, seeds: Sequence[int], queries: str = "remaining",
             pool: int = 900) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(seed, adaptation rows, query rows) per seed for one device's latency column."""
    if queries not in QUERY_MODES:
        raise ValueError(f"unknown query mode {queries!r}; valid: {', '.join(QUERY_MODES)}")
    n = len(latency)
    if queries == "remaining":
        candidates = np.arange(n)
        query_pool = None
    else:
        if n < pool + 1000:
            raise ValueError(f"help-split needs at least {pool + 1000} architectures, table has {n}")
        candidates = _trim(np.arange(pool), latency)
        query_pool = _trim(np.arange(pool, pool + 1000), latency)
    if samples < 2 or samples >= len(candidates):
        raise ValueError(f"samples must be in [2, {len(candidates) - 1}], got {samples}")
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        fit_rows = np.sort(rng.choice(candidates, size=samples, replace=False))
        if query_pool is None:
            mask = np.ones(n, dtype=bool)
            mask[fit_rows] = False
            query = np.flatnonzero(mask)
        else:
            query = query_pool
        out.append((int(seed), fit_rows, query))
    return out


def _trim(rows: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Drop the 10% fastest and 10% slowest of ``rows`` (HELP's outlier removal)."""
    order = rows[np.argsort(latency[rows], kind="stable")]
    cut = int(len(rows) * 0.1)
    return np.sort(order[cut:len(rows) - cut])


def spearman(pred: np.ndarray, true: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(pred, true)[0])


def mape(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true) / true) * 100.0)


@dataclass
class DeviceScore:
    device: str
    spearman: list[float]
    mape: list[float]

    @property
    def mean_spearman(self) -> float:
        return float(np.mean(self.spearman))

    @property
    def mean_mape(self) -> float:
        return float(np.mean(self.mape))


def evaluate_device(device: str, latency: np.ndarray, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    samples: int, seeds: Sequence[int], queries: str = "remaining",
                    pool: int = 900) -> DeviceScore:
    """``fit_predict(rows, latency[rows])`` -> predictions for every row of the table."""
    rho, err = [], []
    for _, fit_rows, query in episodes(latency, samples, seeds, queries, pool):
        pred = np.asarray(fit_predict(fit_rows, latency[fit_rows]), dtype=float)
        rho.append(spearman(pred[query], latency[query]))
        err.append(mape(pred[query], latency[query]))
    return DeviceScore(device, rho, err)


def predictor_fit_predict(predictor, encoded_all) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Adapt ``predictor`` on the drawn rows and predict every row, reusing one encoding."""
    def run(rows: np.ndarray, y: np.ndarray) -> np.ndarray:
        predictor.fit_encoded(take(encoded_all, rows), y)
        return predictor.predict_encoded(encoded_all)

    return run
