"""``hub web``: sign in to the web page (a one-time link, opened where a browser can be), and
``hub web invite``: a link that lets someone join through the web page."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from meshhub.cli import common

web_app = typer.Typer(invoke_without_command=True, add_completion=False,
                      help="Open the web page: a one-time sign-in link.")


def can_open_browser() -> bool:
    """A graphical browser is likely to be there: a desktop session, macOS or Windows. On a
    server, opening a "browser" would start a text one inside this terminal."""
    return (sys.platform in ("darwin", "win32")
            or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")))


@web_app.callback()
def web(
    ctx: typer.Context,
    member: Annotated[str | None, typer.Option(
        "--for", help="Sign in as this member (owner only).")] = None,
    no_open: Annotated[bool, typer.Option(
        "--no-open", help="Print the link only; do not open a browser.")] = False,
) -> None:
    """Print (and open, where a browser can be) a one-time link that signs a browser in as
    you. It works once, within ten minutes."""
    if ctx.invoked_subcommand is not None:
        return
    result = common.call("web_login_create", member=member)
    url = common.config().url.rstrip("/") + result["path"]
    typer.echo(url)
    if not no_open and can_open_browser():
        import webbrowser

        webbrowser.open(url)
    typer.echo(f"  signs a browser in as {result['peer']}; works once, within ten minutes",
               err=True)


@web_app.command("invite")
def invite(
    uses: Annotated[int, typer.Option(help="How many people may join with it.")] = 1,
    expires: Annotated[str, typer.Option(help="How long it works: 24h, 7d, 90m or never.")]
    = "24h",
    role: Annotated[str, typer.Option(help="The role its members' peers start with.")] = "",
) -> None:
    """A link for someone to join this hub in their browser (owner only): they choose a name
    and are in."""
    result = common.call("invite_create", uses=uses, expires=expires, role=role, groups={})
    base = common.config().url.rstrip("/")
    typer.echo(f"{base}/web/join?code={result['code']}")
    typer.echo(f"  invite {result['id']}: {result['uses']} use(s); give them the hub's address "
               "as they reach it (see docs/webui.md)", err=True)


def register_all(register: Callable[..., None]) -> None:
    register(web_app, "web")
