"""The ``hwnas`` command line: one subcommand per stage.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, adding its
subcommand(s) with ``parser.set_defaults(func=handler)``; a handler takes the
parsed ``argparse.Namespace`` and returns an exit code.  User errors
(``ValueError``, ``FileNotFoundError``, ``KeyError`` from registries) print one
line naming the problem instead of a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "nas.commands.search",
    "nas.commands.spaces",
    "nas.commands.measure",
    "nas.commands.export",
    "nas.commands.device",
    "nas.commands.supernet",
    "nas.commands.predictor",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware neural architecture search.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hwnas {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
