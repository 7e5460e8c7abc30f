"""A slow accuracy source for the multi-worker tests and ``benchmarks/scale_out.py``:
a tabulated accuracy behind a fixed wait per architecture, standing in for a remote
device or a trainer, that logs every computation it starts and finishes.

The log (one line per event: ``start|done PID ARCH``) is how the tests and the
benchmark count computations across worker processes: a duplicated measurement is
an arch with two ``done`` lines, a lost one a trial whose arch has none.

Run a worker with it registered: ``python -m tests.nas.sources.slow search RECIPE``
(the arguments of ``hwnas``)."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from nas.options import PATH
from nas.sources.base import ACCURACY_SOURCES, MAXIMIZE, CachedSource, Chunk, RunContext
from nas.sources.table import TableAccuracy, TableOptions


@dataclass(frozen=True)
class SlowTableOptions:
    #: the accuracy CSV (``nb201/accuracy.csv``)
    slow_table: str = field(metadata=PATH)
    column: str = "cifar10"
    #: seconds of waiting per architecture
    delay_s: float = 0.5
    #: the computation log (appended by every worker)
    log: str = field(default="", metadata=PATH)


class SlowTableAccuracy(CachedSource):
    kind = "slow_table"
    metrics = {"accuracy": MAXIMIZE}
    Options = SlowTableOptions

    def __init__(self, options: SlowTableOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.table = TableAccuracy(TableOptions(options.slow_table, options.column), ctx)

    def fingerprint(self) -> dict[str, Any]:
        return {**self.table.fingerprint(), "delay_s": self.options.delay_s}

    def _log(self, event: str, text: str) -> None:
        if self.options.log:
            # one short append per line: lines from several processes do not interleave
            with open(self.options.log, "a") as f:
                f.write(f"{event} {os.getpid()} {text}\n")

    def compute(self, todo: Mapping[str, Any]) -> Iterator[Chunk]:
        for text, arch in todo.items():
            self._log("start", text)
            time.sleep(self.options.delay_s)
            value = self.table.evaluate([arch])[0]
            self._log("done", text)
            yield Chunk({text: value})


ACCURACY_SOURCES.register("slow_table", SlowTableAccuracy)


def read_log(path) -> list[tuple[str, int, str]]:
    """``(event, pid, arch)`` lines of a computation log."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(e, int(p), a) for e, p, a in (line.split(" ", 2) for line in f.read().splitlines() if line)]


if __name__ == "__main__":
    from nas.cli import main

    sys.exit(main(sys.argv[1:]))
