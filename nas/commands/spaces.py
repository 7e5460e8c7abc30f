"""``hwnas spaces``: list registered search spaces with their options.

The options are each space class's constructor arguments with their defaults:
what a recipe's ``space:`` section or ``--space-option KEY=VALUE`` may set."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("spaces", help="list the registered search spaces")
    p.set_defaults(func=run)


def space_options(cls) -> list[tuple[str, object]]:
    """``(name, default)`` of each constructor option of a space class, in order."""
    import inspect

    params = inspect.signature(cls.__init__).parameters.values()
    return [(p.name, None if p.default is inspect.Parameter.empty else p.default)
            for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def run(args) -> int:
    import numpy as np
    from rich.table import Table

    from nas.commands.report import console
    from search_spaces import SPACES, make_space

    table = Table(title="Search spaces")
    for c in ("name", "options (default)", "decisions", "combinations", "example architecture"):
        table.add_column(c, overflow="fold")
    for name in SPACES:
        space = make_space(name)
        example = space.sample(np.random.default_rng(0))
        options = "\n".join(f"{k}={list(v) if isinstance(v, tuple) else v}"
                            for k, v in space_options(SPACES.get(name)))
        table.add_row(name, options, str(len(space.decisions())), f"{float(space.size()):.2e}", str(example))
    console.print(table)
    return 0
