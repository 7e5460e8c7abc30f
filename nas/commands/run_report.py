"""``hwnas report RUN_DIR``: (re)write a search run's ``report.html`` and ``pareto.png``."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("report", help="write report.html and pareto.png for a finished search run folder")
    p.add_argument("run_dir", help="the search's output folder (holds front.json, trials.csv, recipe.yaml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas.report import dashboard_command, load_run, write_report

    html_path, png_path = write_report(args.run_dir)
    print_report_paths(html_path, png_path, dashboard_command(args.run_dir, load_run(args.run_dir).storage))
    return 0


def print_report_paths(html_path, png_path, dashboard: str | None) -> None:
    """The lines ``hwnas search`` and ``hwnas report`` end with."""
    print(f"report: {html_path}")
    print(f"Pareto plot: {png_path}")
    if dashboard:
        print(f"explore the study: {dashboard}")
