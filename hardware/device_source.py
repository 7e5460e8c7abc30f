"""Onboarded devices: ``hwnas device add`` and the ``device`` latency source.

A device lives under ``$HWNAS_HOME/devices/NAME/`` (default home ``~/.hwnas``)::

    device.json        runner + options, protocol, space, fingerprint, held-out quality
    predictor.npz      the adapted few-shot predictor (predictors/), or
    predictor.json     the adapted transfer predictor (hardware.onboarding)
    measurements.csv   arch,latency_ms of everything measured while onboarding

and its measurements sit in the measurement store under the runner's source
key, with the name bound to that fingerprint (the store refuses to mix).

In a recipe, ``latency: {device: NAME}`` predicts with the adapted predictor;
an architecture already measured on the device gets its measurement instead
(real measurements win).  After the search, ``remeasure_front`` measures the
Pareto front on the real device so predicted and measured latency can be
reported side by side.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nas.sources import LATENCY_SOURCES, MINIMIZE, LatencySource, RunContext, reject_unknown

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: runner options never written to disk (secrets come from the environment instead)
_SECRET_OPTIONS = ("token",)
#: onboarding predictor kind -> the file it is saved to in the device folder
PREDICTOR_FILES = {"fewshot": "predictor.npz", "transfer": "predictor.json"}


def hwnas_home() -> Path:
    return Path(os.environ.get("HWNAS_HOME", "~/.hwnas")).expanduser()


def device_dir(name: str, home: Path | None = None) -> Path:
    if not _NAME.match(name or ""):
        raise ValueError(f"bad device name {name!r}: use letters, digits, '_', '-', '.' (max 64)")
    return (home or hwnas_home()) / "devices" / name


def load_record(name: str, home: Path | None = None) -> dict[str, Any]:
    path = device_dir(name, home) / "device.json"
    if not path.is_file():
        known = list_devices(home)
        raise ValueError(f"unknown device {name!r} (no {path}); onboard it with "
                         f"'hwnas device add {name} ...'; known devices: {', '.join(known) or 'none'}")
    return json.loads(path.read_text())


def list_devices(home: Path | None = None) -> list[str]:
    root = (home or hwnas_home()) / "devices"
    return sorted(p.name for p in root.iterdir() if (p / "device.json").is_file()) if root.is_dir() else []


def onboard(name: str, runner: str, runner_options: Mapping[str, Any], space_name: str,
            space_options: Mapping[str, Any], samples: int = 20, holdout: int = 10, pool: int = 200,
            seed: int = 0, protocol_options: Mapping[str, Any] | None = None, store_path: str | Path | None = None,
            home: Path | None = None, replace: bool = False, analytic_per_family: int = 8,
            predictor_kind: str = "fewshot", progress: bool = True, log=print) -> dict[str, Any]:
    """Measure an informative reference set on the device, adapt the predictor, save both."""
    from hardware import make_runner
    from hardware.onboarding import FeatureCache, make_predictor, quality, sample_pool, select_reference
    from hardware.protocol import Protocol
    from hardware.store import MeasurementStore
    from nas.latency import RunnerLatency
    from search_spaces import make_space

    home = home or hwnas_home()
    folder = device_dir(name, home)
    if (folder / "device.json").exists() and not replace:
        raise ValueError(f"device {name!r} already exists ({folder}); pass --replace to onboard it again")
    if predictor_kind not in PREDICTOR_FILES:
        raise ValueError(f"unknown onboarding predictor {predictor_kind!r}; valid: {', '.join(PREDICTOR_FILES)}")
    if samples < 3:
        raise ValueError(f"--samples must be >= 3, got {samples}")
    if holdout < 0 or pool < samples + holdout:
        raise ValueError(f"--pool ({pool}) must be >= --samples + --holdout ({samples + holdout})")
    space = make_space(space_name, **dict(space_options))
    protocol = Protocol(**dict(protocol_options or {}))
    store = MeasurementStore(store_path or home / "measurements.db")
    try:
        ctx = RunContext(space, store, folder, seed, progress=progress)
        latency = RunnerLatency(make_runner(runner, **dict(runner_options)), protocol, ctx, device=name)
        fingerprint = latency.runner.fingerprint()
        log(f"device {name!r}: {fingerprint.describe()}")
        cache = FeatureCache(space)
        t0 = time.perf_counter()
        predictor = make_predictor(space, store, cache, latency.runner.batch_size, exclude=[latency.key],
                                   analytic_per_family=analytic_per_family, seed=seed)
        archs = sample_pool(space, pool, seed)
        if len(archs) < samples + holdout:
            raise ValueError(f"space {space_name!r} has only {len(archs)} distinct archs; "
                             f"lower --samples/--holdout")
        basis = predictor.basis(cache, archs)
        log(f"source devices: {len(predictor.real)} real (from the store), {len(predictor.analytic)} analytic; "
            f"pool of {len(archs)} archs featurized in {time.perf_counter() - t0:.1f} s")
        chosen = select_reference(basis, samples)
        rest = [i for i in range(len(archs)) if i not in set(chosen)]
        held = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))[:holdout]]
        log(f"measuring {samples} reference + {len(held)} held-out archs on the device")
        metrics = latency.evaluate([archs[i] for i in chosen + held])
        y = np.array([m["latency_ms"] for m in metrics])
        y_ref, y_held = y[:samples], y[samples:]
        model = _OnboardingModel(predictor_kind, predictor, space, archs, basis, seed)
        result: dict[str, Any] = model.fit(chosen, y_ref)
        if held:
            q = quality(model.predict(held), y_held)
            macs = np.array([space.features(archs[i])["macs"] for i in chosen + held])
            a, b = np.polyfit(macs[:samples], y_ref, 1)
            q_macs = quality(a * macs[samples:] + b, y_held)
            result.update(heldout=q, macs_proxy=q_macs)
            log(f"held-out quality on {len(held)} archs: Spearman {q['spearman']:.3f}, MAPE {q['mape'] * 100:.1f}% "
                f"(MACs proxy: Spearman {q_macs['spearman']:.3f}, MAPE {q_macs['mape'] * 100:.1f}%)")
            # the saved predictor learns from every measurement; the quality above is the honest one
            model.fit(chosen + held, y)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in PREDICTOR_FILES.values():
            (folder / stale).unlink(missing_ok=True)
        model.save(folder / PREDICTOR_FILES[predictor_kind])
        with open(folder / "measurements.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["arch", "latency_ms"])
            for i, value in zip(chosen + held, y):
                writer.writerow([str(archs[i]), f"{value:.6f}"])
        record = {"name": name, "runner": runner,
                  "runner_options": {k: v for k, v in runner_options.items() if k not in _SECRET_OPTIONS},
                  "protocol": asdict(protocol), "space": {"name": space.name, "options": space.options()},
                  "fingerprint": fingerprint.to_dict(), "source_key": latency.key,
                  "samples": samples, "holdout": len(held), "quality": result,
                  "predictor_kind": predictor_kind, "predictor": PREDICTOR_FILES[predictor_kind],
                  "created": time.time()}
        (folder / "device.json").write_text(json.dumps(record, indent=1, default=str))
        log(f"saved {folder}; use it in a recipe as  latency: {{device: {name}}}")
        return record
    finally:
        store.close()


class _OnboardingModel:
    """The predictor being adapted during onboarding, over the pool's indices."""

    def __init__(self, kind: str, bank, space, pool: list, basis: np.ndarray, seed: int):
        from hardware.onboarding import fewshot_from_bank

        self.kind, self.bank, self.pool, self.basis = kind, bank, pool, basis
        self.fewshot = None
        if kind == "fewshot":
            t0 = time.perf_counter()
            self.fewshot = fewshot_from_bank(space, pool, basis, bank.source_names, seed)
            self.pretrain_s = time.perf_counter() - t0

    def fit(self, indices: list[int], latency: np.ndarray) -> dict[str, Any]:
        if self.fewshot is not None:
            self.fewshot.fit([self.pool[i] for i in indices], latency)
            return {"method": "fewshot", "pretrain_s": round(self.pretrain_s, 2)}
        loo = self.bank.adapt(self.basis[indices], latency)
        return {"method": self.bank.method, "loo_mape": loo[self.bank.method]}

    def predict(self, indices: list[int]) -> np.ndarray:
        if self.fewshot is not None:
            return self.fewshot.predict([self.pool[i] for i in indices])
        return self.bank.predict_basis(self.basis[indices])

    def save(self, path: Path) -> None:
        (self.fewshot or self.bank).save(path)


class DeviceLatency(LatencySource):
    """``latency: {device: NAME}``: the onboarded device's adapted predictor."""

    kind = "device"
    metrics = {"latency_ms": MINIMIZE}

    def __init__(self, name: str, record: dict[str, Any], ctx: RunContext, home: Path):
        from hardware.onboarding import FeatureCache, TransferPredictor
        from predictors import load_predictor

        self.name = name
        self.record = record
        self.ctx = ctx
        self.home = home
        if record["space"]["name"] != ctx.space.name:
            raise ValueError(f"device {name!r} was onboarded for space {record['space']['name']!r}, "
                             f"not {ctx.space.name!r}")
        path = device_dir(name, home) / record["predictor"]
        self.kind_of_predictor = record.get("predictor_kind", "transfer")
        if self.kind_of_predictor == "transfer":
            self.predictor = TransferPredictor.load(path)
            self.cache = FeatureCache(ctx.space)
        else:
            # the checkpoint's own space: a recipe arch outside it fails to parse, naming the token
            self.predictor = load_predictor(path)
        self.key = record["source_key"]
        # the device's measurements live under its fingerprint; bind the name in this store too
        ctx.store.register_source(self.key, {"kind": "runner", **record["fingerprint"],
                                             "protocol": record["protocol"]})
        ctx.store.register_device(name, self.key, record["fingerprint"])
        self.remeasured: list[str] = []

    @classmethod
    def from_recipe(cls, spec: Any, options: Mapping[str, Any], ctx: RunContext) -> "DeviceLatency":
        reject_unknown(options, ["home"], "latency")
        if not isinstance(spec, str):
            raise ValueError(f"device must be a device name, got {spec!r}")
        home = ctx.resolve_path(options["home"]) if "home" in options else hwnas_home()
        return cls(spec, load_record(spec, home), ctx, home)

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha1((device_dir(self.name, self.home) / self.record["predictor"]).read_bytes())
        return {"kind": self.kind, "device": self.name, "source_key": self.key,
                "predictor": digest.hexdigest()[:16]}

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        from nas.latency import space_key

        texts = [str(a) for a in archs]
        measured = self.ctx.store.get_many(self.key, space_key(self.ctx.space), texts)
        todo = [a for a, t in zip(archs, texts) if t not in measured]
        if not todo:
            predicted = {}
        elif self.kind_of_predictor == "transfer":
            predicted = dict(zip((str(a) for a in todo), self.predictor.predict(self.cache, todo)))
        else:
            predicted = dict(zip((str(a) for a in todo), self.predictor.predict([str(a) for a in todo])))
        return [{"latency_ms": float(measured[t]["latency_ms"]) if t in measured else float(predicted[t])}
                for t in texts]

    def remeasure_front(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        """Measure ``archs`` on the real device (store-cached) with the onboarding runner."""
        from hardware import make_runner
        from hardware.protocol import Protocol
        from nas.latency import RunnerLatency

        runner = make_runner(self.record["runner"], **self.record["runner_options"])
        source = RunnerLatency(runner, Protocol(**self.record["protocol"]), self.ctx, device=self.name)
        if source.key != self.key:
            raise ValueError(f"device {self.name!r} now measures under another fingerprint "
                             f"({runner.fingerprint().describe()}); onboard it again under a new name")
        metrics = source.evaluate(list(archs))
        self.remeasured.extend(source.measured)
        return [{"latency_ms": m["latency_ms"]} for m in metrics]


LATENCY_SOURCES.register("device", DeviceLatency)
