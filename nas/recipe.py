"""Recipes: YAML files loaded into validated dataclasses.

Unknown keys are rejected and every error names the file and the key, e.g.
``recipes/x.yaml: search.trails: unknown key (did you mean 'trials'?)``.
``--set a.b=value`` overrides are applied before validation (values parsed
as YAML), and the resolved recipe is written beside every run.
"""
from __future__ import annotations

import copy
import difflib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml


class RecipeError(ValueError):
    """A recipe problem, with the file and key in the message."""


@dataclass
class SpaceSection:
    name: str
    options: dict = field(default_factory=dict)


@dataclass
class SearchSection:
    controller: str = "evolution"
    trials: int = 40
    batch_size: int = 8
    #: metric names; default: the accuracy source's metric then the latency source's
    objectives: list | None = None
    #: metric -> upper bound (hard constraint)
    constraints: dict = field(default_factory=dict)
    #: controller options (population, sample_size, ...)
    options: dict = field(default_factory=dict)
    #: Optuna storage URL; default: SQLite file in the run folder
    storage: str | None = None


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
    #: measurement store (SQLite); default: $HWNAS_HOME/measurements.db
    store: str | None = None
    #: supernet training settings, validated by ``nas.supernet.config``
    supernet: dict | None = None
    description: str = ""
    #: where the recipe was read from (not a YAML key)
    source: str | None = field(default=None, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        data["space"] = {"name": self.space.name, **self.space.options}
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


def parse_section(cls, data: Any, where: str, prefix: str):
    """Build dataclass ``cls`` from a mapping, checked against its type hints: unknown
    and missing keys and wrong types raise :class:`RecipeError` naming ``where: prefix<key>``."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: {prefix.rstrip('.') or 'recipe'}: expected a mapping, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; allowed: {sorted(known)}"
            raise RecipeError(f"{where}: {prefix}{key}: unknown key{hint}")
    kwargs = {}
    for name, f in known.items():
        key = f"{prefix}{name}"
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RecipeError(f"{where}: {key}: required key is missing")
            continue
        kwargs[name] = _coerce(hints[name], data[name], where, key)
    return cls(**kwargs)


def _coerce(hint, value, where: str, key: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where, key)
            except RecipeError as exc:
                errors.append(str(exc))
        raise errors[0] if len(errors) == 1 else RecipeError(
            f"{where}: {key}: unexpected value {value!r}")
    if is_dataclass(hint):
        return parse_section(hint, value if value is not None else {}, where, f"{key}.")
    expected = origin or hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise RecipeError(f"{where}: {key}: expected an integer, got {value!r}")
    if not isinstance(value, expected):
        raise RecipeError(f"{where}: {key}: expected {getattr(expected, '__name__', expected)}, "
                          f"got {type(value).__name__} {value!r}")
    return value


def write_resolved(recipe: Recipe, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return path
