"""``hwnas spaces``: list registered search spaces."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("spaces", help="list the registered search spaces")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np
    from rich.table import Table

    from nas.commands.report import console
    from search_spaces import SPACES, make_space

    table = Table(title="Search spaces")
    for c in ("name", "decisions", "combinations", "example architecture"):
        table.add_column(c, overflow="fold")
    for name in SPACES:
        space = make_space(name)
        example = space.sample(np.random.default_rng(0))
        table.add_row(name, str(len(space.decisions())), f"{float(space.size()):.2e}", str(example))
    console.print(table)
    return 0
