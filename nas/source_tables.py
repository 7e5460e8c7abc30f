"""Build the source tables shipped in ``predictors/source_tables/`` by measuring.

    hwnas predictor tables --space hybrid_slm|mbv3|mobiledet [--archs 150] [--configs NAME,...]

One seeded sample of the space's architectures (in the table space,
``predictors.source_tables.TABLE_SPACES``) is measured on every measurement
configuration this machine can run; each metric gets a wide CSV table
(``arch`` plus one column per configuration) and ``provenance.json`` records
the space, the sample's seed, each configuration's fingerprint and protocol,
the machine and the library versions.  :mod:`predictors.source_tables` reads
them as the real source devices of the few-shot prior.

Measurements go through the ordinary latency sources and are kept in a
measurement store (default ``$HWNAS_HOME/source_tables.db``), so an
interrupted build resumes where it stopped and a rebuild with another
``--out`` only rewrites the files (rows a busy machine left unreliable are
measured again).  The tables are written atomically, the
provenance last.
"""
from __future__ import annotations

import csv
import io
import json
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Sequence

from hardware.base import cpu_model
from hardware.store import MeasurementStore, hwnas_home, space_key
from nas.files import atomic_write_text
from nas.sources import RunContext
from nas.sources.device import TOKEN_RUNNER, measuring_source
from predictors.mixture import FEATURE_VERSION, FEATURES_FILE, FeatureCache, features_text, sample_pool
from predictors.source_tables import PROVENANCE, TABLE_DIR, TABLE_SPACES, config_name
from search_spaces import make_space

#: the sample's seed: not 0, so the pools ``device add`` draws (seed 0 by default) are other archs
TABLE_SEED = 1000


def _slm_configs() -> dict[str, dict[str, Any]]:
    configs = {}
    for prompt_len, context_len in ((256, 2048), (64, 512)):
        for threads in (1, 2):
            for batch_size in (1, 4):
                options = {"runner": TOKEN_RUNNER, "threads": threads, "batch_size": batch_size,
                           "prompt_len": prompt_len, "context_len": context_len}
                configs[config_name(options)] = options
    # the exported prefill and decode-step graphs on ONNX Runtime: the runtime of a device
    # reached through the farm, whose per-operator overheads differ from PyTorch eager's
    for threads in (1, 2):
        for batch_size in (1, 4):
            options = {"runner": TOKEN_RUNNER, "slm": "onnxruntime", "threads": threads, "batch_size": batch_size,
                       "prompt_len": 256, "context_len": 2048}
            configs[config_name(options)] = options
    return configs


def _runner_configs() -> dict[str, dict[str, Any]]:
    configs = {}
    # int8 only where a runner has an int8 path (ONNX Runtime's static quantization): int8
    # kernels change the balance between layer kinds (regular convolutions gain, depthwise
    # ones barely), a real device family the prior should span
    for runner, dtypes in (("onnxruntime", ("float32", "int8")), ("torch_cpu", ("float32",))):
        for dtype in dtypes:
            for threads in (1, 2):
                for batch_size in (1, 8):
                    options = {"runner": runner, "threads": threads, "batch_size": batch_size}
                    if dtype != "float32":
                        options["dtype"] = dtype
                    configs[config_name(options)] = options
    return configs


#: every measurement configuration of a space's table, by column name
CONFIGS: dict[str, Callable[[], dict[str, dict[str, Any]]]] = {
    "hybrid_slm": _slm_configs, "mbv3": _runner_configs, "mobiledet": _runner_configs}


def configs_of(space_name: str) -> dict[str, dict[str, Any]]:
    if space_name not in CONFIGS:
        raise ValueError(f"no source-table configurations for space {space_name!r}; "
                         f"known: {', '.join(CONFIGS)}")
    return CONFIGS[space_name]()


def build(space_name: str, out: Path = TABLE_DIR, count: int = 150, configs: Sequence[str] | None = None,
          store_path: Path | None = None, rounds: int = 5, progress: bool = True, log=print) -> Path:
    """Measure ``count`` sampled archs on every configuration and write the tables."""
    if space_name not in TABLE_SPACES:
        raise ValueError(f"no table space for {space_name!r}; known: {', '.join(TABLE_SPACES)}")
    every = configs_of(space_name)
    chosen = list(configs) if configs else list(every)
    unknown = [c for c in chosen if c not in every]
    if unknown:
        raise ValueError(f"unknown configuration(s) {unknown} for {space_name}; known: {', '.join(every)}")
    if count < 20:
        raise ValueError(f"--archs must be >= 20, got {count}")
    space = make_space(space_name, **TABLE_SPACES[space_name])
    archs = sample_pool(space, count, TABLE_SEED)
    store = MeasurementStore(store_path or hwnas_home() / "source_tables.db")
    folder = Path(out) / space_name
    skey = space_key(space)
    columns: dict[str, dict[str, list[float]]] = {}
    described: dict[str, Any] = {}
    try:
        ctx = RunContext(space, store, folder, TABLE_SEED, progress=progress)
        for name in chosen:
            options = dict(every[name])
            # the same sources ``device add`` measures with, so a table column and a device
            # measured under the same conditions share one fingerprint
            source = measuring_source(options.pop("runner"), options, {"rounds": rounds}, ctx)
            try:
                start = time.perf_counter()
                # in chunks: the store keeps each finished chunk, so a killed build resumes
                rows = [row for i in range(0, len(archs), 16) for row in source.evaluate(archs[i:i + 16])]
                log(f"{name}: {len(archs)} archs in {time.perf_counter() - start:.0f} s")
            finally:
                source.close()
            for metric in source.metrics:
                columns.setdefault(metric, {})[name] = [float(r[metric]) for r in rows]
            # rows the anchor check left flagged (kept, scaled by their batch's drift): how far
            # a column can be trusted, in its provenance
            flagged = len(archs) - len(store.get_many(source.key, skey, [str(a) for a in archs]))
            described[name] = {"options": every[name], "fingerprint": source.fingerprint(),
                               "unreliable_rows": flagged}
    finally:
        store.close()
    for metric, table in columns.items():
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["arch", *table])
        for i, arch in enumerate(archs):
            writer.writerow([str(arch), *(f"{table[c][i]:.6g}" for c in table)])
        atomic_write_text(folder / f"{metric}.csv", text.getvalue())
    extra: dict[str, Any] = {}
    if "latency_ms" in columns:  # network spaces: the features the source mixture fits on
        atomic_write_text(folder / FEATURES_FILE, features_text(archs, FeatureCache(space)))
        extra["feature_version"] = FEATURE_VERSION
    provenance = {"space": space_name, "space_options": space.options(), "seed": TABLE_SEED,
                  "archs": len(archs), "metrics": sorted(columns), "configs": described,
                  "machine": {"cpu": cpu_model(), "platform": platform.platform(),
                              "python": platform.python_version()},
                  "versions": {p: version(p) for p in ("torch", "onnxruntime", "numpy")},
                  "built": time.strftime("%Y-%m-%d", time.gmtime()),
                  "command": f"hwnas predictor tables --space {space_name} --archs {count}", **extra}
    # the provenance last: tables without it are an unfinished build
    atomic_write_text(folder / PROVENANCE, json.dumps(provenance, indent=1, default=str) + "\n")
    log(f"wrote {folder} ({', '.join(sorted(columns))}; {len(described)} configurations)")
    return folder
