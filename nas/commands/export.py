"""``hwnas export RUN_DIR --top K``."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export", help="export the top-K Pareto architectures of a run")
    p.add_argument("run_dir", help="folder of a finished search")
    p.add_argument("--top", type=int, default=3, help="how many architectures (default 3)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar; one status line per model is still logged")
    p.set_defaults(func=run)


def run(args) -> int:
    from nas.commands.report import print_exports
    from nas.export import export_run

    print_exports(export_run(args.run_dir, args.top, progress=not args.no_progress), args.top)
    return 0
