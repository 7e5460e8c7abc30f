"""The ``table`` latency source: look latencies up in a CSV (a tabular benchmark).

``latency: {table: ../shared/data/nb201/latency_ms.csv, column: pixel2}``

The latency counterpart of the ``table`` accuracy source, with the same
strictness (it reads the file with that source's parser): the CSV needs an
``arch`` column of canonical strings and one numeric column per device; every
row is parsed by the run's space up front, so a table for the wrong space fails
at once with the line named, and a candidate missing from the table fails with
its arch named (never a silent default).  Lookups are instant, so the source is
*cheap*: ``search.screen`` may evaluate it on many more candidates than it sends
to the accuracy source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nas.sources.base import LATENCY_SOURCES, MINIMIZE, LatencySource, RunContext
from nas.sources.table import TableAccuracy, TableOptions


#: the last table parsed, keyed by file identity, column and space (a benchmark runs
#: hundreds of searches on one table; parsing 15,625 rows each time would dominate)
_LOADED: dict[tuple, tuple[dict[str, float], str]] = {}


class TableLatency(LatencySource):
    kind = "table"
    metrics = {"latency_ms": MINIMIZE}
    #: the same options as the accuracy table: the CSV file and the column (a device's latency, ms)
    Options = TableOptions
    cheap = True

    def __init__(self, options: TableOptions, ctx: RunContext):
        super().__init__(options, ctx)
        path = Path(options.table)
        if not path.is_file():
            raise FileNotFoundError(f"latency table {str(path)!r} does not exist")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, options.column, ctx.space)
        if key not in _LOADED:
            # one parser for every table: the accuracy source's, which checks every row
            table = TableAccuracy(TableOptions(table=str(path), column=options.column), ctx)
            if any(v < 0 for v in table.values.values()):
                raise ValueError(f"{path}: column {options.column!r} holds negative latencies")
            _LOADED.clear()  # keep one table: searches over one device run back to back
            _LOADED[key] = (table.values, table.digest)
        self.values, self.digest = _LOADED[key]
        self.path, self.column = str(path), options.column

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "table_latency", "column": self.column, "table_sha1": self.digest}

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        out = []
        for arch in archs:
            key = str(arch)
            if key not in self.values:
                raise ValueError(f"latency table {self.path} has no row for arch {key}")
            out.append({"latency_ms": self.values[key]})
        return out


LATENCY_SOURCES.register("table", TableLatency)
