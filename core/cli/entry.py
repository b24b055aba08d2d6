"""The ``hub`` executable's entry point: ``hub hook <event>`` goes straight to its lean module
(:mod:`meshhub.cli.hook`, standard library only), everything else to the full command line
(:mod:`meshhub.cli.main`, which loads typer and the plugins)."""

from __future__ import annotations

import sys


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["hook"] and len(args) <= 2 and not any(a.startswith("-") for a in args):
        from meshhub.cli.hook import main as hook_main

        return hook_main(args[1:])
    from meshhub.cli.main import main as cli_main

    cli_main()  # exits
    return 0
