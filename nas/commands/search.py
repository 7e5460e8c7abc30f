"""``hwnas search RECIPE``: run (or resume) a search and print its Pareto front."""
from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("search", help="run or resume a search recipe")
    p.add_argument("recipe", help="YAML recipe file (see recipes/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set search.trials=20 (repeatable)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars; one status line per batch is still logged")
    p.add_argument("--force", action="store_true",
                   help="resume even though the recipe changed in a way that changes results")
    p.set_defaults(func=run)


def completed_trials(recipe) -> int | None:
    """Completed trials of the recipe's study, read from its storage after an interrupt
    (``None`` for an in-memory study or one that cannot be read)."""
    import optuna
    from optuna.trial import TrialState

    from nas.report import study_storage

    url = study_storage(recipe.run_dir(), recipe.search.storage)
    if url is None:
        return None
    try:
        study = optuna.load_study(study_name=recipe.name, storage=url)
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    except Exception:  # noqa: BLE001 - no study yet (interrupted while starting): nothing done
        return 0


def run(args: argparse.Namespace) -> int:
    from nas.commands.report import print_exports, print_front
    from nas.commands.run_report import print_report_paths
    from nas.export import export_run
    from nas.recipe import load_recipe
    from nas.logs import run_log
    from nas.report import dashboard_command, study_storage, write_report
    from nas.search import run_search

    recipe = load_recipe(args.recipe, args.overrides)
    with run_log(recipe.run_dir()):
        log.debug("hwnas search %s: run folder %s", args.recipe, recipe.run_dir())
        try:
            result = run_search(recipe, progress=not args.no_progress, force=args.force)
        except KeyboardInterrupt:
            done = completed_trials(recipe)
            at = f"{done}/{recipe.search.trials}" if done is not None else f"?/{recipe.search.trials}"
            log.debug("interrupted at %s trials", at)  # run.log; the console gets the line below
            print(f"interrupted at {at} trials; re-run the same command to resume", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - only the study storage's errors are translated
            if type(exc).__module__.startswith("sqlalchemy") and hasattr(exc, "orig"):
                where = study_storage(recipe.run_dir(), recipe.search.storage)
                if "full" in str(exc.orig):
                    raise ValueError(f"{where}: {exc.orig}: free some space and re-run the same command "
                                     "(finished trials are kept)") from exc
                raise ValueError(f"{where}: cannot use the Optuna study database ({exc.orig}); if it is "
                                 "corrupt, move it aside to start the study over (measurements stay in "
                                 "the store)") from exc
            raise
    if not result.final:  # a worker of a shared study; the worker that finished it wrote the run's files
        return 0
    print_front(result)
    html_path, png_path = write_report(result.run_dir)
    print_report_paths(html_path, png_path, dashboard_command(result.run_dir, recipe.search.storage))
    if recipe.export.top:
        print_exports(export_run(result.run_dir, recipe.export.top, progress=not args.no_progress),
                      recipe.export.top)
    return 0
