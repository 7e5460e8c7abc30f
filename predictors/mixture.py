"""The source-mixture latency predictor (``mixture``): onboarding a new device
from a handful of measurements (chain spaces such as ``mbv3``).

Every architecture is described by features counted on its built network
(``search_spaces.features.arch_layer_costs``, aggregated per layer kind).
Source devices turn those features into latency:

* **real** sources: every configuration of the space's shipped source table
  (``predictors/source_tables``: ONNX Runtime and PyTorch, 1 and 2 threads,
  batch 1 and 8, measured on the machine that built them) and every runner
  configuration with enough measurements of the space in the measurement store
  (other threads, batch sizes, runtimes, other onboarded devices) gets a
  non-negative per-layer-kind cost model fitted on its measurements (latency is
  close to additive over layers);
* **analytic** sources: a seeded roofline family of phone CPUs, edge GPUs and
  datacentre GPUs (``hardware.analytic``), which fill in where real devices are
  missing.

:class:`SourceMixture` encodes an architecture as the source devices'
predictions of it (its *basis* row).  Adapting to the new device from N
measurements (``fit``) fits the target latency as a non-negative combination
of the source devices' predictions plus a constant (NNLS: physically, a
device is some mix of compute-, memory- and launch-bound behaviour, and
non-negativity keeps 10 samples from overfitting 40 columns).  Leave-one-out
error on the N samples picks between that mixture and the single
best-matching source (scaled), which is the safer choice when N is tiny.

The same bank also meta-trains the few-shot predictor (``fewshot_from_bank``):
its latency table is the bank's predictions for a sampled pool.

The reference set the device measures is chosen to be informative: greedy
k-center over the sources' (log) predictions of a sampled pool
(``select_reference``), so it spans the latency behaviours the source devices
disagree about, not just MACs.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from hardware.analytic import AnalyticDevice, LayerTable, sample_devices
from hardware.store import space_key
from predictors.base import Predictor
from predictors.fewshot import FLOOR_FRACTION, FewShotPredictor
from predictors.source_tables import SourceTables

#: conv kernels are split by size: a 1x1 conv is a GEMM, a kxk one an im2col/winograd kernel
_GROUPS = ("conv1", "convk", "dwconv3", "dwconv5", "dwconv7", "dwconvk", "linear", "act", "pool", "other")
FEATURE_NAMES = tuple(f"{g}_{q}" for g in _GROUPS for q in ("macs", "elements", "count")) + ("params",)


def _group(cost) -> str | None:
    if cost.kind == "view":
        return None
    if cost.kind == "conv":
        return "conv1" if cost.kernel <= 1 else "convk"
    if cost.kind == "dwconv":
        return f"dwconv{cost.kernel}" if cost.kernel in (3, 5, 7) else "dwconvk"
    if cost.kind == "norm":
        return "act"  # elementwise, same cost behaviour
    return cost.kind if cost.kind in _GROUPS else "other"


def aggregate(costs) -> np.ndarray:
    """Per-layer-kind sums of MACs, touched elements and layer counts, plus parameters."""
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    row = np.zeros(len(FEATURE_NAMES))
    for c in costs:
        g = _group(c)
        if g is None:
            continue
        row[index[f"{g}_macs"]] += c.macs
        row[index[f"{g}_elements"]] += c.in_elements + c.out_elements
        row[index[f"{g}_count"]] += 1
        row[index["params"]] += c.params
    return row


#: bump when what ``FeatureCache`` counts changes: saved caches of another version are recounted
FEATURE_VERSION = 1


class FeatureCache:
    """Counts each architecture's layer costs once and keeps them (in memory).

    ``export``/``absorb`` turn the counted costs into plain JSON-able rows and back, so a
    caller can keep them on disk between processes (``hwnas device add`` does)."""

    def __init__(self, space):
        self.space = space
        self._costs: dict[str, list] = {}
        #: how many architectures this cache counted itself (not absorbed)
        self.computed = 0

    def missing(self, archs: Sequence[Any]) -> list[str]:
        return [str(a) for a in archs if str(a) not in self._costs]

    def costs(self, archs: Sequence[Any], progress: Callable[[int], Any] | None = None) -> list[list]:
        """Layer costs of ``archs``; ``progress(1)`` is called after each arch counted
        (counting builds the network: ~1 s each for large spaces)."""
        # torch is needed to count costs; imported here so ``import predictors`` stays light
        from search_spaces.features import arch_layer_costs

        out = []
        for arch in archs:
            key = str(arch)
            if key not in self._costs:
                arch = self.space.parse(key) if isinstance(arch, str) else arch
                self._costs[key] = arch_layer_costs(self.space, arch)
                self.computed += 1
                if progress is not None:
                    progress(1)
            out.append(self._costs[key])
        return out

    def export(self, archs: Sequence[Any]) -> dict[str, list[list]]:
        """``{arch: [[name, kind, macs, in_elements, out_elements, params, kernel], ...]}``
        for ``archs`` (counted first where missing)."""
        return {str(a): [[c.name, c.kind, c.macs, c.in_elements, c.out_elements, c.params, c.kernel]
                         for c in costs] for a, costs in zip(archs, self.costs(archs))}

    def absorb(self, rows: dict[str, list[list]]) -> None:
        """Take costs in the form ``export`` gives; a malformed row raises ValueError."""
        from search_spaces.features import LayerCost

        parsed = {}
        try:
            for arch, layers in rows.items():
                parsed[str(arch)] = [LayerCost(str(n), str(k), int(m), int(i), int(o), int(p), int(kern))
                                     for n, k, m, i, o, p, kern in layers]
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed layer-cost rows: {exc}") from None
        self._costs.update(parsed)

    def features(self, archs: Sequence[Any]) -> np.ndarray:
        return np.stack([aggregate(c) for c in self.costs(archs)])

    def table(self, archs: Sequence[Any]) -> LayerTable:
        return LayerTable.from_costs([str(a) for a in archs], self.costs(archs))


@dataclass
class RealSource:
    """A non-negative linear per-layer-kind cost model fitted on one device's measurements."""

    name: str
    coef: list[float]
    intercept: float
    count: int
    fit_mape: float

    @classmethod
    def fit(cls, name: str, features: np.ndarray, latency: np.ndarray) -> "RealSource":
        from scipy.optimize import nnls

        design, scale = _design(features)
        solution, _ = nnls(design, latency)
        coef = solution[:-1] / scale
        pred = features @ coef + solution[-1]
        mape = float(np.mean(np.abs(pred - latency) / latency))
        return cls(name, coef.tolist(), float(solution[-1]), int(len(latency)), mape)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return features @ np.asarray(self.coef) + self.intercept


def _design(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.abs(features).max(axis=0)
    scale[scale == 0] = 1.0
    return np.hstack([features / scale, np.ones((len(features), 1))]), scale


class SourceMixture(Predictor):
    """Source bank (real + analytic) plus the target device's non-negative mixture.

    ``encode``/``basis`` give every source's prediction (archs x sources, ms);
    ``fit`` adapts the mixture to the device's measurements and keeps the
    leave-one-out MAPE of both candidate fits in ``loo``.
    """

    name = "mixture"
    min_measurements = 3

    def __init__(self, space, real: Sequence[RealSource] = (), analytic: Sequence[AnalyticDevice] = (),
                 batch_size: int = 1):
        super().__init__(space)
        self.real = list(real)
        self.analytic = list(analytic)
        self.batch_size = int(batch_size)
        self.cache = FeatureCache(space)
        #: "mixture" (NNLS over all sources) or "single" (one scaled source); "" until fitted
        self.method = ""
        self.weights: list[float] = []
        self.intercept = 0.0
        self.samples = 0
        #: predictions never go below it: a fraction of the fastest measured latency
        self.floor_ms = 1e-6
        #: leave-one-out MAPE of each candidate fit at the last ``fit``
        self.loo: dict[str, float] = {}

    # -- source bank ----------------------------------------------------------------
    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.real] + [d.name for d in self.analytic]

    def basis(self, archs: Sequence[Any]) -> np.ndarray:
        """Every source's latency prediction for ``archs`` (archs x sources), in ms."""
        columns = []
        if self.real:
            feats = self.cache.features(archs)
            columns += [np.maximum(s.predict(feats), 1e-6) for s in self.real]
        if self.analytic:
            table = self.cache.table(archs)
            columns += [d.latency_ms(table, self.batch_size) for d in self.analytic]
        if not columns:
            raise ValueError("the predictor has no source devices")
        return np.stack(columns, axis=1)

    def encode(self, archs: Sequence[Any]) -> np.ndarray:
        return self.basis(archs)

    # -- adaptation -----------------------------------------------------------------
    def fit_encoded(self, basis: np.ndarray, latency_ms: Sequence[float]) -> "SourceMixture":
        """Fit the target from its measured latency of the archs behind ``basis``; the
        leave-one-out MAPE of the candidate fits is kept in ``self.loo``."""
        y = np.asarray(latency_ms, dtype=float)
        if len(y) < 3:
            raise ValueError(f"adapting needs at least 3 measurements, got {len(y)}")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise ValueError("measured latencies must be finite and > 0")
        loo = {"mixture": _loo_mape(basis, y, _fit_mixture), "single": _loo_mape(basis, y, _fit_single)}
        self.method = min(loo, key=loo.get)
        fit = _fit_mixture if self.method == "mixture" else _fit_single
        weights, intercept = fit(basis, y)
        self.weights, self.intercept, self.samples = weights.tolist(), float(intercept), int(len(y))
        self.floor_ms = FLOOR_FRACTION * float(y.min())
        self.loo = loo
        return self

    def predict_encoded(self, basis: np.ndarray) -> np.ndarray:
        if not self.weights:
            raise ValueError("the predictor has not been adapted to a device yet")
        # a negative intercept can push small nets below zero: keep them at the floor
        return np.maximum(basis @ np.asarray(self.weights) + self.intercept, self.floor_ms)

    @property
    def adapted_to_device(self) -> bool:
        return bool(self.weights)

    # -- persistence ------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        # plain JSON: Python floats round-trip exactly, so predictions are identical
        meta = {"batch_size": self.batch_size, "method": self.method, "weights": self.weights,
                "intercept": self.intercept, "samples": self.samples, "loo": self.loo, "floor_ms": self.floor_ms,
                "feature_names": list(FEATURE_NAMES),
                "real": [vars(s) for s in self.real], "analytic": [d.to_dict() for d in self.analytic]}
        return meta, {}

    @classmethod
    def from_state(cls, space, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "SourceMixture":
        if meta["feature_names"] != list(FEATURE_NAMES):
            raise ValueError("mixture predictor saved with other layer features; onboard the device again")
        model = cls(space, [RealSource(**s) for s in meta["real"]],
                    [AnalyticDevice(**a) for a in meta["analytic"]], meta["batch_size"])
        model.method, model.weights = meta["method"], [float(w) for w in meta["weights"]]
        model.intercept, model.samples = float(meta["intercept"]), int(meta["samples"])
        model.loo = {k: float(v) for k, v in meta["loo"].items()}
        model.floor_ms = float(meta.get("floor_ms", 1e-6))
        return model


def _fit_mixture(basis: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    from scipy.optimize import nnls

    design, scale = _design(basis)
    # relative errors matter (MAPE, ranking of fast and slow nets alike): weight rows by 1/y
    solution, _ = nnls(design / y[:, None], np.ones_like(y))
    return solution[:-1] / scale, float(solution[-1])


def _fit_single(basis: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Best single source, scaled (a * source + b, a >= 0), chosen by relative error."""
    from scipy.optimize import nnls

    best = None
    for j in range(basis.shape[1]):
        design = np.stack([basis[:, j], np.ones_like(y)], axis=1) / y[:, None]
        # nnls on [x, 1, -1] lets the intercept take either sign while a stays >= 0
        sol = nnls(np.hstack([design, -design[:, 1:]]), np.ones_like(y))[0]
        a, b = sol[0], sol[1] - sol[2]
        err = float(np.mean(np.abs(a * basis[:, j] + b - y) / y))
        if best is None or err < best[0]:
            best = (err, j, a, b)
    _, j, a, b = best
    weights = np.zeros(basis.shape[1])
    weights[j] = a
    return weights, float(b)


def _loo_mape(basis: np.ndarray, y: np.ndarray, fit) -> float:
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w, b = fit(basis[keep], y[keep])
        pred = max(float(basis[i] @ w + b), 1e-6)
        errors.append(abs(pred - y[i]) / y[i])
    return float(np.mean(errors))


# --------------------------------------------------------------------------------------
# building the source bank and choosing what the new device measures
# --------------------------------------------------------------------------------------
def real_sources_from_store(store, space, cache: FeatureCache, exclude: Sequence[str] = (),
                            min_results: int = 30, max_results: int = 400) -> list[RealSource]:
    """One cost model per runner source in the store with enough results for ``space``."""
    skey = space_key(space)
    sources = []
    for key in store.source_keys():
        if key in exclude:
            continue
        description = store.source_description(key) or {}
        if description.get("kind") != "runner":
            continue
        rows = store.all_results(key, skey)[-max_results:]
        rows = [(a, m["latency_ms"]) for _, a, m, _ in rows if m.get("latency_ms", 0) > 0]
        if len(rows) < min_results:
            continue
        archs = [space.parse(a) for a, _ in rows]
        y = np.array([v for _, v in rows])
        name = (f"{description.get('runner')}/t{description.get('threads')}/b{description.get('batch_size')}"
                f"/{key[:6]}")
        sources.append(RealSource.fit(name, cache.features(archs), y))
    return sources


def table_sources(tables: SourceTables, cache: FeatureCache, exclude: Sequence[str] = ()) -> list[RealSource]:
    """One cost model per configuration of a shipped ``latency_ms`` table (``exclude`` left
    out).  ``cache`` counts the table's archs in the table's own space; the per-layer-kind
    features mean the same in any space of that name, so the models price the user's archs."""
    archs, values, names = tables.columns("latency_ms", exclude)
    features = shipped_features(tables)
    if features is None:
        features = cache.features(archs)
    return [RealSource.fit(f"table/{name}", features, values[:, j]) for j, name in enumerate(names)]


#: the file beside a network space's source tables holding its archs' features
FEATURES_FILE = "features.csv"


def features_text(archs: Sequence[Any], cache: FeatureCache) -> str:
    """``features.csv``'s text: ``arch`` plus one column per :data:`FEATURE_NAMES` entry."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["arch", *FEATURE_NAMES])
    writer.writerows([str(a), *(repr(float(v)) for v in row)] for a, row in zip(archs, cache.features(archs)))
    return text.getvalue()


def shipped_features(tables: SourceTables) -> np.ndarray | None:
    """The tables' archs' features as shipped (rows in the tables' arch order), or None when
    the file is absent or holds other features (then they are counted)."""
    path = tables.root / FEATURES_FILE
    if not path.is_file() or tables.provenance.get("feature_version") != FEATURE_VERSION:
        return None
    lines = list(csv.reader(io.StringIO(path.read_text())))
    if not lines or lines[0] != ["arch", *FEATURE_NAMES]:
        return None
    rows = {}
    for number, row in enumerate(lines[1:], start=2):
        arch, values = (row or [""])[0], row[1:]
        try:
            rows[arch] = [float(v) for v in values]
        except ValueError:
            raise ValueError(f"{path} line {number}: a feature is not a number") from None
        if len(values) != len(FEATURE_NAMES):
            raise ValueError(f"{path} line {number}: {len(values)} features, expected {len(FEATURE_NAMES)}")
    archs = [str(a) for a in tables.tables["latency_ms"].archs]
    missing = [a for a in archs if a not in rows]
    if missing:
        raise ValueError(f"{path}: no features for {len(missing)} table arch(s), e.g. {missing[0]}")
    return np.array([rows[a] for a in archs])


def make_mixture(space, store, batch_size: int = 1, exclude: Sequence[str] = (), analytic_per_family: int = 8,
                 seed: int = 0, min_results: int = 30, cache: FeatureCache | None = None,
                 shipped: Sequence[RealSource] = ()) -> SourceMixture:
    """The un-adapted mixture: the ``shipped`` tables' sources (:func:`table_sources`), real
    sources from ``store`` (a ``hardware.store.MeasurementStore``, or None for none; sources
    in ``exclude`` left out), then the seeded analytic family.  ``cache``: costs already counted (e.g.
    loaded from disk) to use instead of an empty cache."""
    mixture = SourceMixture(space, analytic=sample_devices(analytic_per_family, seed), batch_size=batch_size)
    if cache is not None:
        mixture.cache = cache
    # the mixture's own cache: features counted for the real sources are reused by ``basis``
    stored = real_sources_from_store(store, space, mixture.cache, exclude, min_results) if store is not None else []
    mixture.real = list(shipped) + stored
    return mixture


def sample_pool(space, count: int, seed: int) -> list:
    """``count`` distinct sampled architectures (fewer if the space is smaller)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, Any] = {}
    for _ in range(count * 20):
        if len(seen) >= count:
            break
        arch = space.sample(rng)
        seen.setdefault(str(arch), arch)
    return list(seen.values())


def select_reference(basis: np.ndarray, count: int) -> list[int]:
    """Greedy k-center over standardized log source predictions (diverse behaviours)."""
    if count >= len(basis):
        return list(range(len(basis)))
    z = np.log(np.maximum(basis, 1e-9))
    z = (z - z.mean(axis=0)) / np.maximum(z.std(axis=0), 1e-9)
    centre = np.linalg.norm(z - np.median(z, axis=0), axis=1)
    chosen = [int(np.argmin(centre))]
    distance = np.linalg.norm(z - z[chosen[0]], axis=1)
    while len(chosen) < count:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(z - z[nxt], axis=1))
    return chosen


def fewshot_from_bank(space, pool: Sequence[Any], pool_basis: np.ndarray, source_names: Sequence[str],
                      seed: int = 0) -> FewShotPredictor:
    """The meta-learned few-shot predictor, meta-trained on the source bank's latencies
    of the pool (archs x sources), ready for ``fit`` on the new device."""
    return FewShotPredictor.pretrain(space, [str(a) for a in pool], pool_basis, list(source_names), seed=seed)


def quality(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return {"spearman": float(spearmanr(p, m)[0]) if len(m) > 2 else float("nan"),
            "mape": float(np.mean(np.abs(p - m) / m)), "count": int(len(m))}
