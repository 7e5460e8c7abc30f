"""Measured source tables shipped with the package: the real source devices of
the few-shot prior for the project's own spaces.

``source_tables/SPACE/`` holds one wide CSV per metric (``arch`` plus one
column per measurement configuration: runtime, threads, batch size and, for
token models, prompt and context length), for network spaces
``features.csv`` (each arch's per-layer-kind costs, the features the source
mixture's cost models are fitted on, so ``device add`` need not build the
networks to count them) and ``provenance.json`` (the space's
options, the sample's seed, every configuration's fingerprint and protocol,
the machine and library versions, the command that rebuilt them:
``hwnas predictor tables --space SPACE``, see :mod:`nas.source_tables`).

The tables' architectures belong to the *table space* (``TABLE_SPACES``);
predictors meta-trained on them encode those archs in that space and the
user's archs in the user's space, which is why the encoders of these spaces
describe an arch by its physical costs rather than by its decisions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hardware.analytic import latency_matrix, layer_table, sample_devices
from predictors.data import LatencyTable
from predictors.fewshot import FewShotPredictor
from search_spaces import make_space

TABLE_DIR = Path(__file__).resolve().parent / "source_tables"
PROVENANCE = "provenance.json"

#: the options of each table space: for hybrid_slm, those of its shipped recipe (a test keeps them equal)
TABLE_SPACES: dict[str, dict[str, Any]] = {
    "hybrid_slm": {"vocab_sizes": [256], "widths": [64, 96, 128], "heads": [2, 4], "kv_heads": [1, 2],
                   "depths": [4, 6], "ops": ["attn", "swa", "mamba", "delta", "ffn"], "windows": [64, 256],
                   "ffn_ratios": [2, 4], "seq_len": 256, "context_len": 2048},
    # the spaces of benchmarks/onboarding_quality.py; mobiledet at half MobileDets' depth and
    # small inputs, so every configuration's table builds in minutes on a 2-core machine (the
    # cost models fitted on it price layers, which transfer to larger options)
    "mbv3": {"resolutions": [96, 128, 160]},
    "mobiledet": {"resolutions": [96, 128], "layers_per_stage": 2},
}

#: the phase of the analytic device model that times each metric; memory is counted, not
#: timed, so its prior has real sources only
ANALYTIC_PHASES = {"latency_ms": "prefill", "prefill_ms": "prefill", "decode_ms": "decode"}

#: the options that name a configuration, in column-name order, with their short labels
_LABELS = (("threads", "t"), ("batch_size", "b"), ("prompt_len", "p"), ("context_len", "c"))


def config_name(options: Mapping[str, Any]) -> str:
    """The column name of a measurement configuration (its ``runner`` and options), e.g.
    ``slm_t1_b1_p256_c2048``, ``onnxruntime_t2_b8`` or ``onnxruntime_t1_b1_int8``
    (float32, the default dtype, is left out of the name), and for a token model timed by a
    runner rather than PyTorch eager, its engine: ``slm_onnxruntime_t1_b1_p256_c2048``."""
    parts = [options["runner"]]
    if options.get("slm", "cpu") != "cpu":
        parts.append(str(options["slm"]))
    parts += [f"{label}{options[key]}" for key, label in _LABELS if key in options]
    if options.get("dtype", "float32") != "float32":
        parts.append(str(options["dtype"]))
    return "_".join(parts)


@dataclass
class SourceTables:
    """The shipped tables of one space."""

    space: Any
    provenance: dict[str, Any]
    tables: dict[str, LatencyTable]
    #: the folder the tables were read from
    root: Path

    @property
    def metrics(self) -> list[str]:
        return list(self.tables)

    @property
    def configs(self) -> list[str]:
        return list(self.provenance["configs"])

    def configs_measured_as(self, fingerprint: Mapping[str, Any]) -> list[str]:
        """The configurations measured under exactly ``fingerprint`` (a latency source's):
        on the machine that built the tables, these *are* the device being onboarded, so a
        prior meant to predict an unseen device leaves them out."""
        mine = json.loads(json.dumps(dict(fingerprint), default=str))  # as the provenance holds it
        return [name for name, described in self.provenance["configs"].items()
                if described.get("fingerprint") == mine]

    def columns(self, metric: str, exclude: Sequence[str] = ()) -> tuple[list[Any], np.ndarray, list[str]]:
        """(archs, values (archs x configs), config names) of ``metric``, without ``exclude``."""
        if metric not in self.tables:
            raise KeyError(f"no shipped {self.space.name} table for metric {metric!r}; have {self.metrics}")
        table = self.tables[metric]
        keep = [i for i, d in enumerate(table.devices) if d not in set(exclude)]
        return table.archs, table.values[:, keep], [table.devices[i] for i in keep]


def load_tables(space_name: str, folder: Path | None = None) -> SourceTables | None:
    """The shipped tables of ``space_name`` (``None`` when none ship); a malformed
    table raises ValueError naming the file and line."""
    root = (folder or TABLE_DIR) / space_name
    provenance_path = root / PROVENANCE
    if not provenance_path.is_file():
        return None
    try:
        provenance = json.loads(provenance_path.read_text())
        options, metrics = provenance["space_options"], provenance["metrics"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{provenance_path}: not a source-table provenance file ({exc})") from None
    space = make_space(space_name, **options)
    tables = {m: LatencyTable.read(root / f"{m}.csv", space) for m in metrics}
    for metric, table in tables.items():
        if table.devices != list(provenance["configs"]):
            raise ValueError(f"{root / f'{metric}.csv'}: columns {table.devices} are not the configurations "
                             f"of {provenance_path}")
    return SourceTables(space, provenance, tables, root)


def meta_train(space, metric: str, tables: SourceTables | None = None, exclude: Sequence[str] = (),
               analytic_per_family: int = 2, seed: int = 0, batch_size: int = 1,
               neural: bool = True) -> FewShotPredictor:
    """The few-shot prior of ``metric`` for archs of ``space``: meta-trained on the shipped
    (or given) tables' configurations except ``exclude``, plus ``analytic_per_family``
    seeded roofline devices per family where the metric is a timing.  The real
    configurations dominate: a few analytic devices widen the prior's span (other memory
    and compute balances than this machine's), many would outvote the measured ones."""
    tables = tables or load_tables(space.name)
    if tables is None:
        raise ValueError(f"no source tables ship for space {space.name!r} (rebuild them with "
                         f"'hwnas predictor tables --space {space.name}')")
    archs, values, names = tables.columns(metric, exclude)
    columns = [values]
    if analytic_per_family and metric in ANALYTIC_PHASES:
        devices = sample_devices(analytic_per_family, seed)
        table = layer_table(tables.space, archs, ANALYTIC_PHASES[metric])
        columns.append(latency_matrix(table, devices, batch_size))
        names = names + [d.name for d in devices]
    prior = FewShotPredictor.pretrain(tables.space, archs, np.hstack(columns), names, seed=seed, neural=neural)
    return prior.for_space(space)
