"""The run report: ``report.html`` and ``pareto.png`` in a search run folder.

Built only from the files a finished search writes (``front.json``, ``trials.csv``,
``recipe.yaml`` and, when the front was re-measured on a device,
``front_remeasured.csv``), so ``hwnas report RUN_DIR`` regenerates it at any time,
on any machine, without the study database, the sources or the device.

``report.html`` is self-contained so that it can be mailed or archived and still open
offline: inline CSS, figures embedded as base64 PNG data URIs, no JavaScript, nothing
fetched.  Every text taken from the run (arch strings, metric names, paths) goes through
:func:`html.escape`.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas.files import atomic_write_bytes, atomic_write_text

REPORT_HTML = "report.html"
PARETO_PNG = "pareto.png"
#: length of the short arch id (hex chars of the SHA-1 of the canonical arch string):
#: 40 bits, so ids of a few thousand trials collide with negligible probability
SHORT_ID_CHARS = 10
#: ``search.storage`` value for an in-memory study (not resumable)
MEMORY = ":memory:"
#: columns shown after the objectives, when present
EXTRA_COLUMNS = ("latency_ms", "memory_mb", "macs", "params")
UNITS = {"macs": 1e6, "params": 1e6}
LABELS = {"macs": "MACs (M)", "params": "params (M)", "latency_ms": "latency (ms)"}


def arch_id(arch: str) -> str:
    """A short, stable id of an arch string (used in tables, anchors and file names)."""
    return hashlib.sha1(arch.encode()).hexdigest()[:SHORT_ID_CHARS]


def study_storage(run_dir: str | Path, storage: str | None) -> str | None:
    """The Optuna storage URL of a run's study (the same default as ``nas.search``: a
    SQLite file in the run folder), or ``None`` for an in-memory study (nothing to open)."""
    if storage == MEMORY:
        return None
    return storage or f"sqlite:///{(Path(run_dir) / 'study.db').resolve()}"


def dashboard_command(run_dir: str | Path, storage: str | None) -> str | None:
    """The ``optuna-dashboard`` command that opens the run's study, or ``None``."""
    url = study_storage(run_dir, storage)
    return None if url is None else f"optuna-dashboard {url}"


@dataclass
class RunFiles:
    """What a finished search left in its run folder, parsed and checked."""
    run_dir: Path
    name: str
    objectives: list[str]
    directions: list[str]
    front: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    constraints: dict[str, float] = field(default_factory=dict)
    storage: str | None = None
    #: rows of ``front_remeasured.csv`` (``None`` when the run reached no device)
    remeasured: list[dict[str, Any]] | None = None
    #: ``{metric: (predicted column, measured column)}`` found in ``front_remeasured.csv``
    remeasured_pairs: dict[str, tuple[str, str]] = field(default_factory=dict)
    agreement: dict[str, Any] = field(default_factory=dict)
    nearest: list[dict[str, Any]] | None = None


def _number(text: str) -> Any:
    """CSV cell -> float, bool or the text itself (``""`` -> ``None``: a missing value)."""
    if text is None or text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = [{k: _number(v) for k, v in row.items() if k is not None} for row in reader]
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot be read as CSV ({exc})") from None
    if "arch" not in columns:
        raise ValueError(f"{path}: no 'arch' column (columns: {', '.join(columns) or 'none'})")
    return rows


def load_run(run_dir: str | Path) -> RunFiles:
    """Read and check a run folder; a missing or incomplete one raises
    :class:`FileNotFoundError` / :class:`ValueError` naming the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    for name in ("front.json", "trials.csv", "recipe.yaml"):
        if not (run_dir / name).is_file():
            # front.json and trials.csv are written when a search finishes: a killed run lacks them
            raise FileNotFoundError(f"{run_dir / name}: missing; not a finished search run folder "
                                    f"(run `hwnas search` with its recipe again to finish it)")
    path = run_dir / "front.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: expected a JSON object with objectives, directions and front")
    objectives, directions, front = saved.get("objectives"), saved.get("directions"), saved.get("front")
    if not (isinstance(objectives, list) and objectives and all(isinstance(o, str) for o in objectives)):
        raise ValueError(f"{path}: 'objectives' must be a non-empty list of metric names")
    if not (isinstance(directions, list) and len(directions) == len(objectives)
            and all(d in ("minimize", "maximize") for d in directions)):
        raise ValueError(f"{path}: 'directions' must give minimize/maximize for each of {objectives}")
    if not (isinstance(front, list) and all(isinstance(r, dict) and isinstance(r.get("arch"), str) for r in front)):
        raise ValueError(f"{path}: 'front' must be a list of rows, each with an 'arch' string")

    path = run_dir / "recipe.yaml"
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    search = recipe.get("search") if isinstance(recipe, dict) else None
    search = search if isinstance(search, dict) else {}
    constraints = search.get("constraints") or {}
    if not isinstance(constraints, dict):
        raise ValueError(f"{path}: search.constraints must map a metric to an upper bound")
    for metric, bound in constraints.items():
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ValueError(f"{path}: search.constraints.{metric} must be a number, got {bound!r}")
    storage = search.get("storage")

    run = RunFiles(run_dir=run_dir, name=str(recipe.get("name", run_dir.name)), objectives=objectives,
                   directions=directions, front=front, trials=_read_csv(run_dir / "trials.csv"),
                   constraints={str(k): float(v) for k, v in constraints.items()},
                   storage=storage if isinstance(storage, str) else None,
                   agreement=saved.get("agreement") if isinstance(saved.get("agreement"), dict) else {},
                   nearest=saved.get("nearest") if isinstance(saved.get("nearest"), list) else None)
    remeasured = run_dir / "front_remeasured.csv"
    if remeasured.is_file():
        run.remeasured = _read_csv(remeasured)
        columns = {k for row in run.remeasured for k in row}
        # every predicted_X with a measured_X beside it, whatever metrics the source has
        run.remeasured_pairs = {c[len("predicted_"):]: (c, "measured_" + c[len("predicted_"):])
                                for c in sorted(columns)
                                if c.startswith("predicted_") and "measured_" + c[len("predicted_"):] in columns}
    return run


# --- figures ---------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_label(metric: str) -> str:
    """A metric's column or axis label (units spelled out)."""
    return LABELS.get(metric, metric)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def pareto_figure(run: RunFiles) -> bytes:
    """First objective (y) against each other objective (x), one panel each: every trial
    (infeasible ones grey; those never evaluated on the first objective as a grey rug at
    the bottom), the constraint bounds, and the front highlighted and connected."""
    # the figure object is used directly (no pyplot): no global backend or figure state,
    # and Agg renders it headless
    from matplotlib.figure import Figure

    y_metric = run.objectives[0]
    # a single objective has nothing to plot it against but the trial order
    x_metrics = run.objectives[1:] or ["trial"]
    fig = Figure(figsize=(5.2 * len(x_metrics), 4.2), layout="constrained")
    axes = fig.subplots(1, len(x_metrics), squeeze=False)[0]
    feasible = [r for r in run.trials if r.get("feasible") is True]
    infeasible = [r for r in run.trials if r.get("feasible") is not True]
    front = run.front
    for ax, x in zip(axes, x_metrics):
        def points(rows, need_y=True):
            kept = [r for r in rows if _finite(r.get(x)) and (_finite(r.get(y_metric)) or not need_y)]
            return [r[x] for r in kept], [r.get(y_metric) for r in kept]

        xs, ys = points(feasible)
        ax.scatter(xs, ys, s=18, color="tab:blue", alpha=0.45, label=f"feasible trials ({len(xs)})")
        xs, ys = points(infeasible)
        if xs:
            ax.scatter(xs, ys, s=18, color="0.65", marker="x", label=f"infeasible ({len(xs)})")
        # infeasible candidates are not trained/evaluated, so they have no y value: a rug
        rug = [r[x] for r in infeasible if _finite(r.get(x)) and not _finite(r.get(y_metric))]
        if rug:
            # a line (not a scatter): Axes.plot extends the x limits through a blended transform
            ax.plot(rug, [0.03] * len(rug), transform=ax.get_xaxis_transform(), linestyle="none", marker="|",
                    markersize=14, color="0.55", label=f"infeasible, {y_metric} not evaluated ({len(rug)})")
        fx, fy = points(front)
        if fx:
            order = sorted(range(len(fx)), key=lambda i: fx[i])
            ax.plot([fx[i] for i in order], [fy[i] for i in order], "-o", color="tab:red", markersize=6,
                    markeredgecolor="black", linewidth=1.5, zorder=3, label=f"Pareto front ({len(fx)})")
        if x in run.constraints:
            ax.axvline(run.constraints[x], color="tab:orange", linestyle="--", label=f"{x} ≤ {run.constraints[x]:g}")
        if y_metric in run.constraints:
            ax.axhline(run.constraints[y_metric], color="tab:orange", linestyle=":",
                       label=f"{y_metric} ≤ {run.constraints[y_metric]:g}")
        direction = dict(zip(run.objectives, run.directions))
        ax.set_xlabel(f"{metric_label(x)} ({direction[x]})" if x in direction else metric_label(x))
        ax.set_ylabel(f"{metric_label(y_metric)} ({run.directions[0]})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{run.name}: {len(run.trials)} trials, front of {len(run.front)}")
    return _png(fig)


def agreement_figure(run: RunFiles) -> bytes | None:
    """The search's (predicted) values against the re-measured ones, one panel per metric
    found in ``front_remeasured.csv``; ``None`` when there is nothing to plot."""
    from matplotlib.figure import Figure

    panels = []
    for metric, (p_col, m_col) in run.remeasured_pairs.items():
        rows = [r for r in run.remeasured or [] if _finite(r.get(p_col)) and _finite(r.get(m_col))]
        if rows:
            panels.append((metric, p_col, m_col, rows))
    if not panels:
        return None
    on_front = {r["arch"] for r in run.front}
    fig = Figure(figsize=(4.6 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, p_col, m_col, rows) in zip(axes, panels):
        for label, color, subset in (("front", "tab:red", [r for r in rows if r.get("arch") in on_front]),
                                     ("other candidates", "tab:blue", [r for r in rows if r.get("arch") not in on_front])):
            if subset:
                ax.scatter([r[p_col] for r in subset], [r[m_col] for r in subset], s=24, color=color,
                           edgecolor="black", linewidth=0.4, label=f"{label} ({len(subset)})")
        values = [r[p_col] for r in rows] + [r[m_col] for r in rows]
        low, high = min(values), max(values)
        ax.plot([low, high], [low, high], color="0.4", linestyle="--", linewidth=1, label="measured = predicted")
        stats = run.agreement.get(metric) if isinstance(run.agreement.get(metric), dict) else {}
        title = metric
        if _finite(stats.get("spearman")):
            title += f": Spearman {stats['spearman']:.3f}"
        if _finite(stats.get("mape")):
            title += f", MAPE {stats['mape']:.1f}%"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"search's value ({p_col})")
        ax.set_ylabel(f"re-measured ({m_col})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


# --- HTML ------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
     padding:0 1rem;color:#1d1d1f}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f3f3f5}td.arch,th.arch{text-align:left}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;word-break:break-all}
img{max-width:100%;height:auto}dt{margin-top:.6rem;font-weight:600}dd{margin-left:1rem}
.muted{color:#666}:target{background:#fff6d5}
"""


def format_value(key: str, value: Any) -> str:
    """A metric for a table cell (MACs and params in millions); shared with the terminal tables."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if not math.isfinite(value):
        return str(value)
    if key in UNITS:
        return f"{value / UNITS[key]:.1f}"
    if key == "trial":
        return str(int(value))
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict], columns: list[str], link: bool, anchor_prefix: str = "arch-") -> str:
    e = html.escape
    head = "".join(f"<th>{e(metric_label(c))}</th>" for c in columns)
    out = [f'<table><thead><tr><th>#</th><th class="arch">id</th>{head}</tr></thead><tbody>']
    for i, row in enumerate(rows, 1):
        short = arch_id(str(row.get("arch", "")))
        cell = f'<a href="#{anchor_prefix}{short}"><code>{short}</code></a>' if link else f"<code>{short}</code>"
        values = "".join(f"<td>{e(format_value(c, row.get(c)))}</td>" for c in columns)
        out.append(f'<tr><td>{i}</td><td class="arch">{cell}</td>{values}</tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def render_html(run: RunFiles, pareto_png: bytes, agreement_png: bytes | None) -> str:
    e = html.escape
    feasible = sum(1 for r in run.trials if r.get("feasible") is True)
    columns = [*run.objectives] + [c for c in EXTRA_COLUMNS if c not in run.objectives
                                   and any(c in r for r in run.front)]
    objectives = ", ".join(f"{o} ({d})" for o, d in zip(run.objectives, run.directions))
    constraints = ", ".join(f"{m} ≤ {b:g}" for m, b in run.constraints.items()) or "none"
    dashboard = dashboard_command(run.run_dir, run.storage)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>hwnas report: {e(run.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>hwnas search report: {e(run.name)}</h1>",
        f'<p class="muted">run folder <code>{e(str(run.run_dir.resolve()))}</code></p>',
        "<ul>",
        f"<li>objectives: {e(objectives)}</li>",
        f"<li>constraints: {e(constraints)}</li>",
        f"<li>trials: {len(run.trials)} ({feasible} feasible); Pareto front: {len(run.front)}</li>",
        "<li>front values: " + ("re-measured on the device" if run.remeasured is not None
                                else "as the search evaluated them (the latency source reaches no device)") + "</li>",
    ]
    if dashboard:
        parts.append(f"<li>explore the study: <code>{e(dashboard)}</code></li>")
    parts.append("</ul>")
    parts.append("<h2>Pareto front</h2>")
    if run.front:
        parts.append(_table(run.front, columns, link=True))
    elif run.nearest:
        parts.append("<p><strong>No trial met the constraints.</strong> The nearest candidates:</p><ul>")
        parts += [f"<li><code>{e(str(r.get('arch')))}</code>: {e(str(r.get('misses', '')))}</li>" for r in run.nearest]
        parts.append("</ul>")
    else:
        parts.append("<p><strong>No usable trial</strong>: every trial failed or is infeasible.</p>")
    parts.append(_img(pareto_png, "Pareto front and all trials"))
    if run.remeasured is not None:
        parts.append("<h2>Search values vs re-measured</h2>")
        parts.append('<p class="muted">The front and the next candidates in line were measured again on the '
                     "device in one interleaved batch; the front above is recomputed from those values.</p>")
        if agreement_png is not None:
            parts.append(_img(agreement_png, "search values against re-measured values"))
        else:
            parts.append("<p>front_remeasured.csv holds no predicted/measured value pairs to plot.</p>")
    parts.append("<h2>Architectures on the front</h2><dl>")
    for row in run.front:
        short = arch_id(row["arch"])
        parts.append(f'<dt id="arch-{short}"><code>{short}</code></dt><dd><code>{e(row["arch"])}</code></dd>')
    parts.append("</dl>")
    trial_columns = ["trial", "feasible", *[c for c in columns if c != "trial"]]
    parts.append(f"<details><summary>All {len(run.trials)} trials</summary>")
    parts.append('<table><thead><tr>' + "".join(f"<th>{e(metric_label(c))}</th>" for c in trial_columns)
                 + '<th class="arch">arch</th></tr></thead><tbody>')
    for row in run.trials:
        cells = "".join(f"<td>{e(format_value(c, row.get(c)))}</td>" for c in trial_columns)
        parts.append(f'<tr>{cells}<td class="arch"><code>{e(str(row.get("arch", "")))}</code></td></tr>')
    parts.append("</tbody></table></details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``pareto.png`` into a finished search's run folder
    (atomically; regenerating overwrites them) and return their paths."""
    run = load_run(run_dir)
    pareto_png = pareto_figure(run)
    page = render_html(run, pareto_png, agreement_figure(run))
    png_path = atomic_write_bytes(run.run_dir / PARETO_PNG, pareto_png)
    html_path = atomic_write_text(run.run_dir / REPORT_HTML, page)
    return html_path, png_path
