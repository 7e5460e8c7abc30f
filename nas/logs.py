"""Logging for the ``hwnas`` command line: console verbosity and a run's ``run.log``.

Library code logs through the standard :mod:`logging` module
(``logging.getLogger(__name__)``) and never configures handlers itself; the CLI
wraps each command in :func:`console_logging` (``-v``/``-q`` pick the console level) and a
search attaches :func:`run_log` so that every run folder keeps a ``run.log``
with the full detail (DEBUG), whatever the console shows.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: -q -> warnings only; default -> status lines (INFO); -v and more -> DEBUG
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
#: third-party loggers whose INFO/DEBUG chatter is not ours to show
NOISY = ("matplotlib", "PIL", "urllib3", "filelock", "torch", "onnxscript", "asyncio", "sqlalchemy")


#: packages that log INFO through the root logger itself, so their chatter cannot be quieted
#: by logger name (ONNX Runtime's quantizer: a line per weight channel whose scale it widens)
ROOT_CHATTER = ("onnxruntime",)


class _DropRootChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or record.name != "root":
            return True
        parts = Path(record.pathname).parts
        return not any(package in parts for package in ROOT_CHATTER)


@contextlib.contextmanager
def _on_root(handler: logging.Handler) -> Iterator[None]:
    """Attach ``handler`` to the root logger for the block.  The root passes everything
    on (DEBUG); each handler filters by its own level, so run.log gets DEBUG while the
    console shows INFO."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.DEBUG)
    handler.addFilter(_DropRootChatter())
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@contextlib.contextmanager
def console_logging(verbosity: int = 0) -> Iterator[logging.Handler]:
    """Send log records at the level chosen by ``verbosity`` to stderr for the block
    (removed afterwards, so that ``main`` called twice in one process, as tests do,
    does not stack handlers)."""
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(LEVELS[max(-1, min(1, verbosity))])
    console.setFormatter(logging.Formatter("%(message)s" if verbosity <= 0 else FORMAT))
    quiet = {name: logging.getLogger(name).level for name in NOISY}
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with _on_root(console):
            yield console
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def run_log(run_dir: str | Path) -> Iterator[Path]:
    """Append every log record (DEBUG and up) to ``run_dir/run.log`` for the block.

    Appending, not truncating: a resumed run keeps the log of the attempts before it."""
    path = Path(run_dir) / "run.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    try:
        with _on_root(handler):
            yield path
    finally:
        handler.close()
