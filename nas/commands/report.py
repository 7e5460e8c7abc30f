"""Terminal tables shared by the commands (rich)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()

UNITS = {"macs": 1e6, "params": 1e6}


def _fmt(key: str, value) -> str:
    if not isinstance(value, (int, float)):
        return str(value)
    if key in UNITS:
        return f"{value / UNITS[key]:.1f}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def print_front(result) -> None:
    columns = [*result.objectives]
    columns += [c for c in ("latency_ms", "memory_mb", "macs", "params") if c not in columns and
                any(c in r for r in result.front)]
    table = Table(title=f"Pareto front ({len(result.front)} of {len(result.trials)} trials) — {result.run_dir}")
    table.add_column("#", justify="right")
    for c in columns:
        label = {"macs": "MACs (M)", "params": "params (M)", "latency_ms": "latency (ms)"}.get(c, c)
        table.add_column(label, justify="right")
    table.add_column("arch", overflow="fold")
    for i, row in enumerate(result.front, 1):
        table.add_row(str(i), *[_fmt(c, row.get(c, "")) for c in columns], row["arch"])
    console.print(table)
    if result.remeasured:
        t = Table(title="Pareto front re-measured on the device: predicted vs measured")
        keys = [k for k in result.remeasured[0] if k != "arch"]
        for k in keys:
            t.add_column(k, justify="right")
        t.add_column("arch", overflow="fold")
        for row in result.remeasured:
            t.add_row(*[_fmt(k, row[k]) for k in keys], row["arch"])
        console.print(t)


def print_exports(exported) -> None:
    table = Table(title="Exported")
    for c in ("rank", "folder", "weights", "ONNX vs PyTorch max abs diff"):
        table.add_column(c)
    for e in exported:
        table.add_row(str(e.rank), str(e.folder), e.weights, f"{e.onnx_max_abs_diff:.2e}")
    console.print(table)
