"""CLI subcommands; see ``nas.cli``.  Helpers here stay import-light (no torch),
because ``serve-device`` runs on devices without it."""
from __future__ import annotations


def parse_key_values(items: list[str], flag: str) -> dict:
    """``["a=1", "b=[2,3]"]`` -> ``{"a": 1, "b": [2, 3]}`` (values parsed as YAML)."""
    import yaml

    options = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        options[key] = yaml.safe_load(value)
    return options
