"""``hub``: the admin and user command line.

Every command that talks to a running hub finds it from ``--hub URL``, then ``MESHHUB_URL``, then
the hub this ``MESHHUB_HOME`` started (while it runs), then ``[hub] url`` in its config, then the
host and port settings (:attr:`meshhub.config.Config.url`).

Every error is one line on stderr, never a traceback: ``error: ...`` with exit code 1 for an error
(a hub that does not answer, a refused message, a bad setting), and with exit code 2 for a usage
error, a command line the parser refuses (an unknown command or option, a missing argument, a
value of the wrong type or out of its range). :func:`main` turns click's usage errors into that
one line, once for every command. This module only wires the command groups together: set-up and
the server (:mod:`.server`), messaging (:mod:`.messaging`), plugins (:mod:`.plugins`) and
admission (:mod:`.admin`).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated

import typer

from meshhub import __version__
from meshhub.config import ConfigError

from . import admin, approvals, audit, messaging, plugins, server
from .common import ClickException, UsageError, hub_url_option, state

app = typer.Typer(
    name="hub",
    help="meshhub: one hub where AI coding agents and people message each other.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"meshhub {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    hub: Annotated[str | None, typer.Option(
        "--hub", help="The hub's URL: http(s)://HOST[:PORT] or HOST:PORT (default: see "
        "MESHHUB_URL, then the hub this MESHHUB_HOME runs, then config.toml).",
        callback=hub_url_option)] = None,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", callback=_print_version,
        is_eager=True)] = False,
) -> None:
    state.hub_url = hub


server.register(app)
messaging.register(app)
plugins.register(app)
approvals.register(app)
audit.register(app)
admin.register(app)


def usage_line(exc: Exception) -> str:
    """click's message for a usage error as one line, pointing to the command's help."""
    message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split()).rstrip(".")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "hub"
    return f"error: {message} (see `{command} --help`)"


def main(argv: list[str] | None = None) -> None:
    """Run ``hub``: exit 0 on success, 1 on an error, 2 on a usage error, 130 on Ctrl-C."""
    with contextlib.suppress(Exception):  # a broken plugin must not take the CLI down
        plugins.add_plugin_commands(app)
    try:
        code = app(args=argv, prog_name="hub", standalone_mode=False)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `hub`, `hub token`: the help is shown
            code = 2
        else:
            typer.echo(usage_line(exc), err=True)
            code = 2
    except ClickException as exc:  # a file option that cannot be opened, say
        typer.echo(f"error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 1
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
