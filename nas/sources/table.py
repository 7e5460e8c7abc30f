"""The ``table`` accuracy source: look accuracies up in a CSV (a tabular benchmark).

``accuracy: {table: ../shared/data/nb201/accuracy.csv, column: cifar10}``

The CSV needs an ``arch`` column of canonical strings and one numeric column
per metric.  Every row is parsed by the run's space up front, so a table for
the wrong space fails at once with the line named, and a candidate missing
from the table fails with its arch named (never a silent default).
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nas.options import PATH
from nas.sources.base import ACCURACY_SOURCES, MAXIMIZE, AccuracySource, RunContext


@dataclass(frozen=True)
class TableOptions:
    #: the CSV file
    table: str = field(metadata=PATH)
    #: which accuracy column of the table
    column: str


class TableAccuracy(AccuracySource):
    kind = "table"
    metrics = {"accuracy": MAXIMIZE}
    Options = TableOptions

    def __init__(self, options: TableOptions, ctx: RunContext):
        super().__init__(options, ctx)
        self.column = column = options.column
        path = Path(options.table)
        if not path.is_file():
            raise FileNotFoundError(f"accuracy table {str(path)!r} does not exist")
        values: dict[str, float] = {}
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if "arch" not in header:
                raise ValueError(f"{path} line 1: no 'arch' column")
            if column not in header or column in ("arch", "index"):
                numeric = [h for h in header if h not in ("arch", "index")]
                raise ValueError(f"{path}: no column {column!r}; columns: {', '.join(numeric)}")
            a, c = header.index("arch"), header.index(column)
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    arch = ctx.space.parse(row[a].strip())
                except (ValueError, IndexError) as exc:
                    raise ValueError(f"{path} line {line}: not an arch of space {ctx.space.name!r}: {exc}") from None
                try:
                    value = float(row[c])
                except (ValueError, IndexError):
                    raise ValueError(f"{path} line {line}: {column} is not a number") from None
                if not math.isfinite(value):
                    raise ValueError(f"{path} line {line}: {column} is {value}")
                values[str(arch)] = value
        self.values = values
        self.path = str(path)
        self.digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "column": self.column, "table_sha1": self.digest}

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        out = []
        for arch in archs:
            key = str(arch)
            if key not in self.values:
                raise ValueError(f"accuracy table {self.path} has no row for arch {key}")
            out.append({"accuracy": self.values[key]})
        return out


ACCURACY_SOURCES.register("table", TableAccuracy)
