"""``hwnas search RECIPE``: run (or resume) a search and print its Pareto front."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("search", help="run or resume a search recipe")
    p.add_argument("recipe", help="YAML recipe file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set search.trials=20 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    p.add_argument("--force", action="store_true",
                   help="resume even though the recipe changed in a way that changes results")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas.commands.report import print_exports, print_front
    from nas.export import export_run
    from nas.recipe import load_recipe
    from nas.search import run_search

    recipe = load_recipe(args.recipe, args.overrides)
    result = run_search(recipe, progress=not args.no_progress, force=args.force)
    print_front(result)
    if recipe.export.top:
        print_exports(export_run(result.run_dir, recipe.export.top, progress=not args.no_progress))
    return 0
