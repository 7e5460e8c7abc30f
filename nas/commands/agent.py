"""``hwnas device-agent``: the pull farm's device side (see :mod:`hardware.remote.agent`).

The same options as ``python -m hardware.remote.agent`` (one definition,
:func:`hardware.remote.agent.add_agent_arguments`); nothing heavy is imported
until it runs, and never torch.
"""
from __future__ import annotations


def register(sub) -> None:
    from hardware.remote.agent import add_agent_arguments

    p = sub.add_parser("device-agent", help="measure jobs of the 'farm' runner taken from the shared database",
                       description="Run on the device: take measurement jobs of the 'farm' runner from the "
                                   "shared database (no inbound connection needed), measure them like "
                                   "serve-device, and write the answers back. Stops on SIGTERM/Ctrl-C after "
                                   "putting an unfinished job back.")
    add_agent_arguments(p)
    p.set_defaults(func=run_agent)


def run_agent(args) -> int:
    from hardware.remote.agent import agent_from_args

    return agent_from_args(args)
