"""One timer per machine, and what the machine was doing while it timed.

Two hwnas processes timing at the same moment slow each other down by 1.5-4x,
and those numbers would be cached as facts.  :func:`timing_lock` serialises
every local timing on a machine across processes with an advisory ``flock`` on
a file in ``$HWNAS_HOME`` (the kernel releases it when a holder dies, so a
killed search never leaves the machine locked).  A process that has to wait
says so, naming the holder.

:func:`machine_conditions` reads the load average and the current CPU clock
(where Linux exposes them), stored beside every measurement so a number can be
judged later by what else was running.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from hardware.store import hwnas_home

LOCK_NAME = "timing.lock"
log = logging.getLogger("hwnas.timing")


def default_lock_path() -> Path:
    return hwnas_home() / LOCK_NAME


@contextlib.contextmanager
def timing_lock(path: Path | None = None, what: str = "measuring") -> Iterator[None]:
    """Hold the machine's timing lock for the ``with`` block; waits (and says so) while
    another process holds it."""
    path = Path(path or default_lock_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            log.warning("waiting for the machine's timing lock (%s): held by %s", path, holder)
            started = time.monotonic()
            fcntl.flock(f, fcntl.LOCK_EX)
            log.warning("got the timing lock after %.1f s", time.monotonic() - started)
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}))
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def machine_conditions() -> dict[str, float]:
    """``load_1m`` (1-minute load average per core) and ``cpu_mhz`` (mean current clock)
    where readable; an empty dict elsewhere."""
    out: dict[str, float] = {}
    try:
        out["load_1m"] = round(os.getloadavg()[0] / (os.cpu_count() or 1), 3)
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            clocks = [float(line.split(":", 1)[1]) for line in f if line.startswith("cpu MHz")]
        if clocks:
            out["cpu_mhz"] = round(sum(clocks) / len(clocks), 1)
    except (OSError, ValueError):
        pass
    return out
