"""Terminal tables shared by the commands (rich)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from nas.report import EXTRA_COLUMNS, format_value, metric_label

console = Console()


def print_front(result) -> None:
    columns = [*result.objectives]
    columns += [c for c in EXTRA_COLUMNS if c not in columns and
                any(c in r for r in result.front)]
    table = Table(title=f"Pareto front ({len(result.front)} of {len(result.trials)} trials) — {result.run_dir}")
    table.add_column("#", justify="right")
    for c in columns:
        table.add_column(metric_label(c), justify="right")
    table.add_column("arch", overflow="fold")
    for i, row in enumerate(result.front, 1):
        table.add_row(str(i), *[format_value(c, row.get(c, "")) for c in columns], row["arch"])
    console.print(table)
    if result.remeasured:
        t = Table(title=f"Front and next candidates re-measured on the device in one batch "
                        f"({len(result.remeasured)}): the search's values vs measured")
        keys = [k for k in result.remeasured[0] if k != "arch"]
        for k in keys:
            t.add_column(k, justify="right")
        t.add_column("arch", overflow="fold")
        for row in result.remeasured:
            t.add_row(*[format_value(k, row[k]) for k in keys], row["arch"])
        console.print(t)
        for metric, agreement in (result.agreement or {}).items():
            rank = "n/a (under 3 points)" if agreement["spearman"] is None else f"{agreement['spearman']:.3f}"
            console.print(f"{metric}: search vs measured on {agreement['count']} candidates: "
                          f"Spearman {rank}, MAPE {agreement['mape']:.1f}%")
        before = {r["arch"] for r in result.search_front or []}
        after = {r["arch"] for r in result.front}
        if before != after:
            console.print(f"the front was recomputed from the measured values: {len(before - after)} left it, "
                          f"{len(after - before)} joined it")
    if not result.front and result.nearest is not None:
        console.print("[bold red]no trial met the constraints[/bold red]; the nearest candidates:")
        for row in result.nearest:
            console.print(f"  {row['arch']}: {row['misses']}")
    elif not result.front:
        console.print("[bold red]no usable trial[/bold red]: every trial failed or is infeasible")


def print_exports(exported, top: int) -> None:
    """The exported models; says so when the front had fewer than the ``top`` asked for."""
    table = Table(title="Exported")
    for c in ("rank", "folder", "weights", "ONNX vs PyTorch max abs diff"):
        table.add_column(c)
    for e in exported:
        table.add_row(str(e.rank), str(e.folder), e.weights, f"{e.onnx_max_abs_diff:.2e}")
    console.print(table)
    if len(exported) < top:
        print(f"exported {len(exported)} of --top {top}: the Pareto front has {len(exported)} architectures")
