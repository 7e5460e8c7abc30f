"""The ``hwnas`` command line: one subcommand per stage.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, adding its
subcommand(s) with ``parser.set_defaults(func=handler)``; a handler takes the
parsed ``argparse.Namespace`` and returns an exit code.  User errors
(``ValueError``, ``FileNotFoundError``, ``KeyError`` from registries) print one
line naming the problem instead of a traceback.  Operational failures (a corrupt
database or checkpoint, a read-only folder, a full disk) likewise become one line
naming the path and what to do, exit code 2; Ctrl-C exits with 130 (see
:func:`operational_error`).  ``-v``/``-q`` set the console log level
(:mod:`nas.logs`).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

COMMAND_MODULES = [
    "nas.commands.search",
    "nas.commands.spaces",
    "nas.commands.measure",
    "nas.commands.export",
    "nas.commands.quantize",
    "nas.commands.device",
    "nas.commands.agent",
    "nas.commands.supernet",
    "nas.commands.predictor",
    "nas.commands.run_report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware neural architecture search.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="count", default=0,
                      help="more log detail on stderr (debug records); run.log always has it")
    loud.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def installed_version() -> str:
    """The installed ``hwnas`` distribution's version (pyproject.toml's ``version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hwnas")
    except PackageNotFoundError:
        return "(not installed: run `pip install -e .`)"


#: what to do about an OSError, by errno
OS_ADVICE = {
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.ENOSPC: "no space left on the device; free some space and re-run the same command "
                  "(finished work is kept)",
    errno.EDQUOT: "disk quota exceeded; free some space and re-run the same command",
    errno.ENOENT: "no such file or directory; check the path",
}


def _frames(exc: BaseException):
    tb = exc.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _checkpoint_path(exc: BaseException):
    """The file ``torch.load`` was reading when ``exc`` was raised, or ``None``."""
    for frame in _frames(exc):
        if frame.f_code.co_name == "load" and frame.f_globals.get("__name__") == "torch.serialization":
            return frame.f_locals.get("f")
    return None


def operational_error(exc: BaseException) -> str | None:
    """One line naming the path and what to do for an environment failure (corrupt
    database or checkpoint, read-only folder, full disk, missing file), or ``None`` when
    ``exc`` is not one: a bug keeps its traceback."""
    if isinstance(exc, OSError) and exc.errno in OS_ADVICE:
        where = exc.filename if exc.filename is not None else "(unnamed file)"
        return f"{where}: {OS_ADVICE[exc.errno]}"
    if type(exc).__module__.startswith("sqlalchemy") and hasattr(exc, "orig"):
        # ``hwnas search`` names the study file itself (it knows the run folder)
        return (f"study storage: cannot use the Optuna study database ({exc.orig}); if it is corrupt, "
                "move it aside to start the study over")
    path = _checkpoint_path(exc)
    if path is not None and (isinstance(exc, (RuntimeError, EOFError, ValueError))
                             or type(exc).__name__ == "UnpicklingError"):
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{path}: not a readable PyTorch checkpoint ({detail}); it is truncated or corrupt: re-create it"
    return None


def main(argv: list[str] | None = None) -> int:
    from nas.logs import console_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    with console_logging(-1 if args.quiet else args.verbose):
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            # the handlers that can say more (``hwnas search``: how far it got) catch it first
            print(f"hwnas {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - classified below; anything else is re-raised
            message = operational_error(exc)
            if message is None:
                if not isinstance(exc, (ValueError, KeyError, FileNotFoundError)):
                    raise
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"hwnas {args.command}: error: {message}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
