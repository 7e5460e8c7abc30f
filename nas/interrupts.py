"""Ctrl-C that a long loop cannot lose.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to
be.  When that is inside a callback whose exceptions CPython only prints and drops
(a weakref callback such as importlib's module-lock cleanup, a ``__del__``, a
garbage-collection callback), the interrupt is gone and the loop runs on: a CI run
saw a search finish all its trials after its Ctrl-C was printed as "Exception
ignored in: <function _get_module_lock.<locals>.cb ...>  KeyboardInterrupt".

:class:`CtrlC` keeps Python's behaviour (the interrupt is raised at once) and
also records it, so the loop raises it again at its next :meth:`CtrlC.check`.
"""
from __future__ import annotations

import signal
import threading


class CtrlC:
    """Context manager around a loop; call :meth:`check` between units of work.

    It only takes over where Python's own handler is installed, in the main thread:
    a SIGINT that the process inherited as ignored (a command started with ``&`` by
    a non-interactive shell) stays ignored, and a custom handler stays in place."""

    def __init__(self):
        self.pending = False
        self._previous = None

    def __enter__(self) -> "CtrlC":
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _interrupt(self, signum, frame) -> None:
        self.pending = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a Ctrl-C came in and was dropped on the way."""
        if self.pending:
            raise KeyboardInterrupt
