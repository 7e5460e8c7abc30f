"""The meta-learned few-shot latency predictor (``fewshot``).

Idea: on every device, latency is close to a *linear* function of a good
architecture encoding (a lookup table is one; op counts are another), and the
weight vectors of real devices are not arbitrary -- they cluster in a
low-dimensional region that the source devices reveal.  So:

* **Meta-training** fits, for each encoder view and each source device, the
  weights that explain that device's (mean-normalised) latencies.  The set of
  weight vectors is the *hardware embedding* of the source devices; their mean
  and covariance form a Gaussian prior over the weights of an unseen device.
  One extra view is learned: a small MLP trained on all source devices at
  once (shared trunk, one linear head per device), whose last hidden layer is
  a basis that captures non-additive effects (e.g. dead-op elimination).
* **Adaptation** to a new device from N measurements is Bayesian linear
  regression under that prior, in closed form: the posterior mean weights.
  The noise level, the prior's scale and how far the device may leave the
  sources' span are integrated over a grid with marginal-likelihood weights
  (integer-rounded phone timings end up with a large noise, simulators with a
  tiny one), and the views are averaged the same way (Bayesian model
  averaging).  The device's mean
  latency sets the unit, so milliseconds, microseconds or cycles all work.

Adapting costs a few 10x10 solves per view (milliseconds); predicting is one
matrix product per view.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from predictors.base import Predictor
from predictors.encoders import make_encoder

NEURAL = "neural"
#: ridge penalty when fitting the source devices' weights, per view
VIEW_RIDGE = {"pairs": 1e-2, NEURAL: 1e-4}
DEFAULT_RIDGE = 1e-3
#: prior variance along the mean weight vector: the unit of a new device is free
SCALE_VARIANCE = 1.0
#: grids for the per-device hyperparameters: relative noise variance, scale of the
#: source-device covariance, isotropic variance (departure from the sources' span)
NOISE_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1)
PRIOR_SCALE_GRID = (0.3, 1.0, 3.0, 10.0)
OFFSET_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
#: adapted predictions never go below this fraction of the fastest measured latency.
#: A clamp rather than a fit in log space: the meta-learned prior is over weights of
#: *additive* (linear) latency models, and a log-space fit would need another prior.
#: Half the fastest measurement leaves room for nets faster than any measured one
#: while ruling out the impossible (zero or negative milliseconds).
FLOOR_FRACTION = 0.5


# --- Bayesian linear regression under a meta-learned prior --------------------------
def prior_from_sources(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian prior (mean, covariance) over a new device's weights from the
    source devices' weight vectors (rows of ``weights``)."""
    mean = weights.mean(axis=0)
    cov = np.cov(weights, rowvar=False) if len(weights) > 1 else np.zeros((len(mean), len(mean)))
    return mean, cov + SCALE_VARIANCE * np.outer(mean, mean)


def _grid():
    return [(s2, g, h) for s2 in NOISE_GRID for g in PRIOR_SCALE_GRID for h in OFFSET_GRID]


def adapt(X: np.ndarray, t: np.ndarray, mean: np.ndarray, cov: np.ndarray,
          form: str = "auto") -> tuple[float, np.ndarray]:
    """Posterior mean weights for targets ``t`` under the prior N(mean, g*cov + h*I)
    and noise variance s2, averaged over the (s2, g, h) grid with marginal-likelihood
    weights; returns (log evidence, weights).

    ``g`` says how much the device varies like the source devices do, ``h`` how
    far it may leave their span (simulators and new accelerators do).  ``form``
    picks n x n ("function") or d x d ("weight") algebra; both give the same
    answer, "auto" takes the cheaper."""
    n, d = X.shape
    if form not in ("auto", "function", "weight"):
        raise ValueError(f"form must be auto, function or weight, got {form!r}")
    resid = t - X @ mean
    XC = X @ cov
    grid = _grid()
    lls, weights = [], []
    if form == "function" or (form == "auto" and n <= d):  # n x n systems
        gram_src, gram_iso = XC @ X.T, X @ X.T
        for s2, g, h in grid:
            K = g * gram_src + h * gram_iso + s2 * np.eye(n)
            L = np.linalg.cholesky(K)
            a = np.linalg.solve(L, resid)
            lls.append(-0.5 * a @ a - np.log(np.diag(L)).sum() - 0.5 * n * np.log(2 * np.pi))
            alpha = np.linalg.solve(L.T, a)
            weights.append(mean + g * (XC.T @ alpha) + h * (X.T @ alpha))
    else:  # d x d systems, for many measurements
        xtx, xtr = X.T @ X, X.T @ resid
        for s2, g, h in grid:
            prior = g * cov + h * np.eye(d)
            Lp = np.linalg.cholesky(prior)
            A = np.linalg.inv(prior) + xtx / s2
            L = np.linalg.cholesky(A)
            b = np.linalg.solve(L, xtr / s2)
            logdet = 2 * np.log(np.diag(L)).sum() + 2 * np.log(np.diag(Lp)).sum() + n * np.log(s2)
            lls.append(-0.5 * (resid @ resid / s2 - b @ b + logdet + n * np.log(2 * np.pi)))
            weights.append(mean + np.linalg.solve(L.T, b))
    # average over the grid (a uniform hyperprior) instead of picking the best point:
    # with 10 measurements several settings explain the data about equally well
    lls = np.array(lls)
    top = lls.max()
    post = np.exp(lls - top)
    evidence = top + np.log(post.mean())
    post /= post.sum()
    return float(evidence), np.tensordot(post, np.array(weights), axes=1)


# --- the learned basis ----------------------------------------------------------------
def mlp_forward(layers: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def train_basis(x: np.ndarray, y: np.ndarray, seed: int, hidden: int = 128, width: int = 16,
                epochs: int = 300, batch_size: int = 512, lr: float = 3e-3,
                threads: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Multi-device regression: shared MLP trunk -> ``width`` features -> one linear
    head per source device.  Returns the trunk as numpy (weights, bias) pairs."""
    import torch

    with torch.random.fork_rng(devices=[]):  # module init draws from the global RNG
        torch.manual_seed(seed)
        trunk = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                                    torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                    torch.nn.Linear(hidden, width))
        heads = torch.nn.Linear(width, y.shape[1])
    generator = torch.Generator().manual_seed(seed)
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    optimizer = torch.optim.Adam([*trunk.parameters(), *heads.parameters()], lr=lr)
    # the network is tiny: more threads only add synchronisation (and make the
    # result depend on the machine); restore the caller's setting afterwards
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=generator)
            for start in range(0, len(xt), batch_size):
                idx = order[start:start + batch_size]
                loss = ((heads(trunk(xt[idx])) - yt[idx]) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(previous)
    return [(m.weight.detach().double().numpy().T.copy(), m.bias.detach().double().numpy().copy())
            for m in trunk if isinstance(m, torch.nn.Linear)]


def ridge(X: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """Per-column ridge solutions of ``X w = Y``: (n_targets, dim)."""
    return np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ Y).T


# --- the predictor ----------------------------------------------------------------------
class FewShotPredictor(Predictor):
    name = "fewshot"

    def __init__(self, space, source_weights: dict[str, np.ndarray], devices: Sequence[str],
                 reference_ms: float, basis: list[tuple[np.ndarray, np.ndarray]] | None = None,
                 info: dict[str, Any] | None = None):
        super().__init__(space)
        self.encoder = make_encoder(space)
        self.source_weights = {v: np.asarray(w, dtype=float) for v, w in source_weights.items()}
        self.devices = list(devices)
        self.reference_ms = float(reference_ms)
        self.basis = basis
        self.info = dict(info or {})
        self.priors = {v: prior_from_sources(w) for v, w in self.source_weights.items()}
        # adaptation state: None until fit()
        self.adapted: dict[str, np.ndarray] | None = None
        self.view_weights: dict[str, float] | None = None
        self.scale_ms: float | None = None
        self.floor_ms = 0.0
        self.num_measurements = 0


    # --- encoding -------------------------------------------------------------------
    def view_names(self) -> list[str]:
        return list(self.source_weights)

    def encode(self, archs: Sequence[Any]) -> dict[str, np.ndarray]:
        views = self.encoder.encode(archs)
        if self.basis is not None:
            hidden = mlp_forward(self.basis, views[self.encoder.neural_input])
            views[NEURAL] = np.hstack([np.ones((len(archs), 1)), hidden])
        return {v: views[v] for v in self.source_weights}

    # --- meta-training ----------------------------------------------------------------
    @classmethod
    def pretrain(cls, space, archs: Sequence[Any], latency_ms: np.ndarray, devices: Sequence[str],
                 seed: int = 0, neural: bool = True, epochs: int = 300) -> "FewShotPredictor":
        """Meta-train on a table: ``latency_ms[i, j]`` = arch ``i`` on source device ``j``."""
        Y = np.asarray(latency_ms, dtype=float)
        if Y.ndim != 2 or Y.shape != (len(archs), len(devices)):
            raise ValueError(f"latency table must be (archs, devices) = ({len(archs)}, {len(devices)}), "
                             f"got {Y.shape}")
        if len(devices) < 2:
            raise ValueError(f"meta-training needs at least 2 source devices, got {list(devices)}")
        if not np.all(np.isfinite(Y)) or (Y <= 0).any():
            raise ValueError("latencies must be positive finite numbers")
        archs = [space.parse(a if isinstance(a, str) else str(a)) for a in archs]
        normalised = Y / Y.mean(axis=0)  # unit-free: each device's mean latency is 1
        encoder = make_encoder(space)
        views = encoder.encode(archs)
        basis = None
        if neural and encoder.neural_input is not None:
            basis = train_basis(views[encoder.neural_input], normalised, seed=seed, epochs=epochs)
            views[NEURAL] = np.hstack([np.ones((len(archs), 1)), mlp_forward(basis, views[encoder.neural_input])])
        weights = {v: ridge(views[v], normalised, VIEW_RIDGE.get(v, DEFAULT_RIDGE)) for v in views}
        reference = float(np.exp(np.log(Y.mean(axis=0)).mean()))
        info = {"seed": seed, "neural_epochs": epochs if basis is not None else 0, "num_archs": len(archs)}
        return cls(space, weights, devices, reference, basis, info)

    def for_space(self, space) -> "FewShotPredictor":
        """The same un-adapted prior for archs of another space of the same name (other
        options), e.g. the user's space for a prior meta-trained on a shipped table's.
        Only encoders whose views keep their meaning and size across options allow it."""
        if space.name != self.space.name:
            raise ValueError(f"a {self.space.name} prior cannot predict {space.name} archs")
        moved = FewShotPredictor(space, self.source_weights, self.devices, self.reference_ms, self.basis,
                                 self.info)
        probe = moved.encode([space.sample(np.random.default_rng(0))])
        wrong = [v for v, x in probe.items() if x.shape[1] != self.source_weights[v].shape[1]]
        if wrong:
            raise ValueError(f"the {space.name} encoder's views {wrong} change size with the space's options; "
                             f"meta-train the prior on this space's own table")
        return moved

    def source_predictions(self, archs: Sequence[Any]) -> np.ndarray:
        """Each source device's modelled latency of ``archs`` (archs x devices), in units of
        that device's mean over the meta-training archs, averaged over the views: where the
        sources disagree about ``archs`` is what a reference set should cover."""
        views = self.encode(self.parse_all(archs))
        return np.mean([views[v] @ w.T for v, w in self.source_weights.items()], axis=0)

    # --- adaptation and prediction -------------------------------------------------------
    def fit_encoded(self, views: dict[str, np.ndarray], latency_ms: np.ndarray) -> "FewShotPredictor":
        """Adapt to a device from its measurements (replaces any earlier adaptation)."""
        y = np.asarray(latency_ms, dtype=float)
        scale = float(y.mean())
        t = y / scale
        results = {v: adapt(views[v], t, *self.priors[v]) for v in self.source_weights}
        logml = np.array([results[v][0] for v in self.source_weights])
        posterior = np.exp(logml - logml.max())
        posterior /= posterior.sum()
        self.adapted = {v: results[v][1] for v in self.source_weights}
        self.view_weights = {v: float(p) for v, p in zip(self.source_weights, posterior)}
        self.scale_ms = scale
        self.floor_ms = FLOOR_FRACTION * float(y.min())
        self.num_measurements = len(y)
        return self

    def predict_encoded(self, views: dict[str, np.ndarray]) -> np.ndarray:
        if self.adapted is None:
            # un-adapted: the average source device, in its (geometric-mean) unit
            share = 1.0 / len(self.source_weights)
            return self.reference_ms * sum(share * (views[v] @ self.priors[v][0]) for v in self.source_weights)
        pred = self.scale_ms * sum(self.view_weights[v] * (views[v] @ self.adapted[v])
                                   for v in self.source_weights)
        return np.maximum(pred, self.floor_ms)

    # --- checkpoints ----------------------------------------------------------------------
    def get_state(self):
        meta = {"devices": self.devices, "reference_ms": self.reference_ms, "views": self.view_names(),
                "basis_layers": len(self.basis) if self.basis is not None else 0, "info": self.info,
                "adapted": self.adapted is not None}
        arrays = {f"source_weights/{v}": w for v, w in self.source_weights.items()}
        for i, (w, b) in enumerate(self.basis or []):
            arrays[f"basis/{i}/weight"] = w
            arrays[f"basis/{i}/bias"] = b
        if self.adapted is not None:
            meta.update(scale_ms=self.scale_ms, view_weights=self.view_weights,
                        num_measurements=self.num_measurements, floor_ms=self.floor_ms)
            arrays.update({f"adapted/{v}": w for v, w in self.adapted.items()})
        return meta, arrays

    @classmethod
    def from_state(cls, space, meta, arrays):
        try:
            weights = {v: arrays[f"source_weights/{v}"] for v in meta["views"]}
            basis = [(arrays[f"basis/{i}/weight"], arrays[f"basis/{i}/bias"])
                     for i in range(meta["basis_layers"])] or None
            predictor = cls(space, weights, meta["devices"], meta["reference_ms"], basis, meta.get("info"))
            if meta.get("adapted"):
                predictor.adapted = {v: arrays[f"adapted/{v}"] for v in meta["views"]}
                predictor.view_weights = {v: float(meta["view_weights"][v]) for v in meta["views"]}
                predictor.scale_ms = float(meta["scale_ms"])
                predictor.num_measurements = int(meta["num_measurements"])
                # checkpoints adapted before the floor existed predict as they did
                predictor.floor_ms = float(meta.get("floor_ms", 0.0))
        except KeyError as exc:
            raise ValueError(f"fewshot checkpoint is missing {exc.args[0]!r}") from None
        return predictor

    @property
    def adapted_to_device(self) -> bool:
        return self.adapted is not None

    def describe(self) -> str:
        state = (f"adapted on {self.num_measurements} measurements (views: "
                 + ", ".join(f"{v} {p:.2f}" for v, p in self.view_weights.items()) + ")"
                 if self.adapted is not None else "not adapted (average source device)")
        return (f"fewshot predictor for {self.space.name}, meta-trained on {len(self.devices)} devices "
                f"({', '.join(self.devices)}); {state}")
