"""The typed options parser shared by recipes, sources, runners and supernets.

Every configurable component declares its options as a dataclass; a mapping
from a recipe (or ``--set`` overrides, or the command line) is turned into
that dataclass by :func:`parse_section`, which checks every key against the
type hints.  Unknown keys, missing keys, wrong types and values that the
dataclass's own ``__post_init__`` refuses all raise :class:`RecipeError` with
one line naming the file and the dotted key, before anything runs or is
written.

Fields holding input paths carry ``metadata=PATH`` (always a path),
``metadata=path_except("stdlib")`` (a path, or one of a few fixed words) or
``metadata=PATH_OR_NAME`` (a path when such a file exists, else a name such as
a shipped checkpoint's); :func:`resolve_paths` makes them absolute
so a resolved recipe works from any working directory.  Fields with
``metadata=SECRET`` are never written back to disk.
"""
from __future__ import annotations

import collections.abc
import difflib
import types
import typing
from dataclasses import MISSING, Field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from hardware.base import PATH, SECRET

PATH_OR_NAME = {"path": "if_exists"}


def path_except(*names: str) -> dict:
    """Metadata of a path field that also accepts the fixed ``names`` (kept as they are)."""
    return {"path": "always", "keep": names}


class RecipeError(ValueError):
    """A recipe problem, with the file and key in the message."""


def parse_section(cls, data: Any, where: str, prefix: str, keys: Mapping[str, str] | None = None):
    """Build dataclass ``cls`` from a mapping, checked against its type hints: unknown
    and missing keys, wrong types and values ``cls`` refuses raise :class:`RecipeError`
    naming ``where: prefix<key>``.  ``keys`` maps field names to the keys a recipe
    uses for them where the two differ."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where}: {prefix.rstrip('.') or 'recipe'}: expected a mapping, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    keys = keys or {}
    known = {keys.get(f.name, f.name): f for f in fields(cls) if not f.metadata.get("internal")}
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
        kwargs[f.name] = _coerce(hints[f.name], data[name], where, key)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        if isinstance(exc, RecipeError):
            raise
        # the dataclass's own range checks: name the section they belong to
        raise RecipeError(f"{where}: {prefix.rstrip('.') or 'recipe'}: {exc}") from None


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
    if hint is Any:
        return value
    if is_dataclass(hint):
        if isinstance(value, hint):  # already parsed (a source assembling its options)
            return value
        return parse_section(hint, value if value is not None else {}, where, f"{key}.")
    expected = origin or hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (int, float) and isinstance(value, bool):
        raise RecipeError(f"{where}: {key}: expected {expected.__name__}, got {value!r}")
    if expected is collections.abc.Sequence and isinstance(value, str):
        # a bare string is a Sequence in Python, never a list of values in a recipe
        raise RecipeError(f"{where}: {key}: expected a list, got str {value!r}")
    if not isinstance(value, expected):
        raise RecipeError(f"{where}: {key}: expected {getattr(expected, '__name__', expected)}, "
                          f"got {type(value).__name__} {value!r}")
    return value


def resolve_paths(options, base_dir: Path):
    """``options`` with its path fields made absolute against ``base_dir``."""
    changes = {}
    for f in fields(options):
        mode = f.metadata.get("path")
        value = getattr(options, f.name)
        if not mode or not isinstance(value, str) or not value or value in f.metadata.get("keep", ()):
            continue
        path = Path(value).expanduser()
        if path.is_absolute():
            continue
        candidate = (Path(base_dir) / path).absolute()
        if mode == "always" or candidate.exists():
            changes[f.name] = str(candidate)
    return replace(options, **changes) if changes else options


def option_fields(options) -> list[Field]:
    """The fields of an options dataclass that a recipe sets (not the internal ones)."""
    return [f for f in fields(options) if not f.metadata.get("internal")]


def reject_unknown(options: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


__all__ = ["PATH", "PATH_OR_NAME", "SECRET", "RecipeError", "parse_section", "option_fields", "path_except",
           "reject_unknown", "resolve_paths"]
