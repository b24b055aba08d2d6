"""``hub``: the admin and user command line.

Every command that talks to a running hub finds it from ``--hub URL``, then ``MESHHUB_URL``, then
the config in ``MESHHUB_HOME``. A user error is one line on stderr and exit code 1, never a
traceback. This module only wires the command groups together: set-up and the server
(:mod:`.server`), messaging (:mod:`.messaging`), plugins (:mod:`.plugins`) and admission
(:mod:`.admin`).
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from meshhub import __version__

from . import admin, messaging, plugins, server
from .common import state

app = typer.Typer(
    name="hub",
    help="meshhub: one hub where AI coding agents and people message each other.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    hub: Annotated[str | None, typer.Option("--hub", help="The hub's URL.",
                                            envvar="MESHHUB_URL")] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(f"meshhub {__version__}")
        raise typer.Exit()
    state.hub_url = hub


server.register(app)
messaging.register(app)
plugins.register(app)
admin.register(app)


def main() -> None:
    with contextlib.suppress(Exception):
        plugins.add_plugin_commands(app)
    app()


if __name__ == "__main__":
    main()
