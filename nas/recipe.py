"""Recipes: YAML files loaded into validated dataclasses.

Unknown keys are rejected and every error names the file and the key, e.g.
``recipes/x.yaml: search.trails: unknown key (did you mean 'trials'?)``.
``--set a.b=value`` overrides are applied before validation (values parsed
as YAML).  Validation covers every section: the space and its options, the
latency and accuracy sources' typed options (each source's ``Options``
dataclass, parsed by :func:`nas.options.parse_section`), the supernet
settings.  Input paths are made absolute, and the resolved recipe (defaults
filled in, secrets left out) is written beside every run, so ``hwnas export``
and a resumed run read exactly what the search used, from any directory.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from hardware.store import is_url, redact
from nas.files import atomic_write_text
from nas.options import RecipeError, parse_section
from nas.sources import ACCURACY_SOURCES, LATENCY_SOURCES, parse_source
from nas.supernet.config import parse_supernet_config
from nas.supernet.elastic import SUPERNETS
from search_spaces import make_space

#: recipe keys whose change changes results: a run refuses to resume across them
RESULT_KEYS = ("space", "seed", "latency", "accuracy", "search.controller", "search.options",
               "search.objectives", "search.constraints", "search.screen", "search.warm_start",
               "search.roofline")


@dataclass
class SpaceSection:
    name: str
    options: dict = field(default_factory=dict)


@dataclass
class ScreenSection:
    """Cheap-objective screening (``search.screen``): ask the controller for ``factor``
    times the batch, evaluate the (cheap) latency source on all of them and send only the
    most promising batch to the accuracy source; ``factor: 1`` is off.  Aging evolution
    screens its own proposals instead where it can (one objective, constraints on cheap
    metrics, or accuracy and latency; ``search.options.pool`` candidates each, see
    ``nas.search``).  Unset (the default): evolution screens its own proposals whenever
    the latency source is cheap, and nothing else screens."""
    factor: int | None = None

    def __post_init__(self):
        if self.factor is not None and self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")


@dataclass
class HeartbeatSection:
    """Several workers on one study (``search.heartbeat``, PostgreSQL storage only): each
    worker records a heartbeat for its running trials every ``interval_s``; a trial whose
    heartbeat is older than ``grace_s`` belongs to a dead worker and is retried, at most
    ``retries`` times.  Measurement claims in the store use ``grace_s`` as their lease."""
    interval_s: float = 5.0
    grace_s: float = 30.0
    retries: int = 2

    def __post_init__(self):
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")
        if not self.grace_s > self.interval_s:
            raise ValueError(f"grace_s must exceed interval_s ({self.interval_s}), got {self.grace_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")


@dataclass
class SearchSection:
    #: random | evolution (multi-objective aging evolution, nas/controllers.py) | tpe | nsga2
    controller: str = "evolution"
    trials: int = 40
    batch_size: int = 8
    #: metric names; default: the accuracy source's metric then the latency source's
    objectives: list | None = None
    #: metric -> upper bound (hard constraint)
    constraints: dict = field(default_factory=dict)
    #: controller options (population, sample_size, ...)
    options: dict = field(default_factory=dict)
    #: cheap-objective screening, e.g. ``{factor: 4}`` (needs a cheap latency source) or ``{factor: 1}`` (off)
    #: (predictor, device, table); only candidates sent to the accuracy source count as trials
    screen: ScreenSection = field(default_factory=ScreenSection)
    #: a named analytic device (``analytic_<family>_<NN>``, :mod:`hardware.analytic`): its
    #: roofline latency of each candidate is the metric ``roofline_ms``, an objective or a
    #: constraint like ``macs`` (computed before training, never measured)
    roofline: str | None = None
    #: seed the search with another run's front: a run folder (its ``front.json``), a
    #: ``front.json`` or a CSV with an ``arch`` column; relative to the current directory
    warm_start: str | None = None
    #: Optuna storage URL; default: SQLite file in the run folder (one process);
    #: ``postgresql://...`` for several workers on one study; ":memory:" keeps the
    #: study in memory (fast, not resumable: benchmarks)
    storage: str | None = None
    #: several workers on one study: heartbeats and retries of dead workers' trials
    heartbeat: HeartbeatSection = field(default_factory=HeartbeatSection)


@dataclass
class ExportSection:
    top: int = 0


@dataclass
class Recipe:
    name: str
    space: SpaceSection
    latency: dict
    accuracy: dict
    search: SearchSection = field(default_factory=SearchSection)
    export: ExportSection = field(default_factory=ExportSection)
    seed: int = 0
    #: run folder; relative paths resolve against the current directory
    output: str | None = None
    #: measurement store: a SQLite file or ``postgresql://...`` (shared by workers);
    #: default: $HWNAS_HOME/measurements.db
    store: str | None = None
    #: supernet training settings, validated by ``nas.supernet.config``
    supernet: dict | None = None
    description: str = ""
    #: where the recipe was read from (not a YAML key)
    source: str | None = field(default=None, metadata={"internal": True})
    #: (section, key) of option values that are secrets (not YAML keys)
    secrets: tuple = field(default=(), metadata={"internal": True})

    def to_dict(self, public: bool = False) -> dict[str, Any]:
        """The recipe as YAML data; ``public`` leaves secrets (tokens) out."""
        data = asdict(self)
        data.pop("source")
        data.pop("secrets")
        data["space"] = {"name": self.space.name, **self.space.options}
        if public:
            for section, key in self.secrets:
                data[section].pop(key, None)
            # database passwords stay out of recipe.yaml (libpq also reads ~/.pgpass, $PGPASSWORD)
            if self.store and is_url(self.store):
                data["store"] = redact(self.store)
            if self.search.storage and is_url(self.search.storage):
                data["search"]["storage"] = redact(self.search.storage)
        return data

    def run_dir(self) -> Path:
        return Path(self.output or f"runs/{self.name}")

    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path(".")


def load_recipe(recipe: str | Path | dict | Recipe, overrides: Sequence[str] = ()) -> Recipe:
    if isinstance(recipe, Recipe):
        if overrides:
            data = recipe.to_dict()
            return _validate(_apply_overrides(data, overrides, recipe.source or "<recipe>"), recipe.source)
        return recipe
    if isinstance(recipe, dict):
        return _validate(_apply_overrides(copy.deepcopy(recipe), overrides, "<recipe>"), None)
    path = Path(recipe)
    if not path.is_file():
        raise FileNotFoundError(f"recipe file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return _validate(_apply_overrides(data, overrides, str(path)), str(path))


def _apply_overrides(data: dict, overrides: Sequence[str], where: str) -> dict:
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        target = data
        for key in keys[:-1]:
            node = target.get(key)
            if node is None:
                node = target[key] = {}
            if not isinstance(node, dict):
                raise RecipeError(f"{where}: --set {dotted}: {key!r} is not a mapping")
            target = node
        try:
            target[keys[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise RecipeError(f"--set {item!r}: value is not valid YAML") from None
    return data


def _validate(data: dict, source: str | None) -> Recipe:
    where = source or "<recipe>"
    data = dict(data)
    space = data.get("space")
    if isinstance(space, str):
        data["space"] = {"name": space, "options": {}}
    elif isinstance(space, dict):
        space = dict(space)
        if "name" not in space:
            raise RecipeError(f"{where}: space.name: required key is missing")
        name = space.pop("name")
        data["space"] = {"name": name, "options": space}
    recipe = parse_section(Recipe, data, where, "")
    recipe.source = source
    _check_values(recipe, where)
    try:
        make_space(recipe.space.name, **recipe.space.options)
    except (KeyError, ValueError) as exc:
        raise RecipeError(f"{where}: space: {exc.args[0] if exc.args else exc}") from None
    base = recipe.base_dir()
    for name, registry in (("latency", LATENCY_SOURCES), ("accuracy", ACCURACY_SOURCES)):
        cls, options = parse_source(getattr(recipe, name), registry, where, name, base)
        setattr(recipe, name, cls.section(options))
        recipe.secrets += tuple((name, key) for key in cls.secret_keys(options))
    if recipe.supernet is not None:
        try:
            supernet = parse_supernet_config(recipe.supernet, where)
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
        # caught here, before training writes anything, not when the supernet is built
        if recipe.space.name in SUPERNETS:
            try:
                SUPERNETS.get(recipe.space.name).check_options(supernet.share_block_types)
            except ValueError as exc:
                raise RecipeError(f"{where}: {exc}") from None
    if recipe.store and not is_url(recipe.store):
        recipe.store = str(Path(recipe.store).expanduser().absolute())
    return recipe


def _check_values(recipe: Recipe, where: str) -> None:
    s = recipe.search
    if s.trials < 1:
        raise RecipeError(f"{where}: search.trials: must be >= 1, got {s.trials}")
    if s.batch_size < 1:
        raise RecipeError(f"{where}: search.batch_size: must be >= 1, got {s.batch_size}")
    if recipe.export.top < 0:
        raise RecipeError(f"{where}: export.top: must be >= 0")
    for metric, bound in s.constraints.items():
        if not isinstance(bound, (int, float)) or isinstance(bound, bool):
            raise RecipeError(f"{where}: search.constraints.{metric}: must be a number, got {bound!r}")
    if s.objectives is not None and (not s.objectives or not all(isinstance(o, str) for o in s.objectives)):
        raise RecipeError(f"{where}: search.objectives: must be a non-empty list of metric names")


def write_resolved(recipe: Recipe, run_dir: Path) -> Path:
    return atomic_write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.to_dict(public=True), sort_keys=False))


def result_changes(old: Recipe, new: Recipe) -> list[str]:
    """Dotted keys under :data:`RESULT_KEYS` whose values differ between two resolved recipes."""
    a, b = _flatten(old.to_dict(public=True)), _flatten(new.to_dict(public=True))
    keys = sorted(set(a) | set(b))
    return [k for k in keys if any(k == r or k.startswith(r + ".") for r in RESULT_KEYS) and a.get(k) != b.get(k)]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}
