"""``hub plugins list``, ``hub pair`` and the commands plugins add."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from meshhub.config import ConfigError, home_dir, load_config
from meshhub.errors import MeshError

from .common import JsonOpt, call, config, with_client
from .output import emit_json, table

plugins_app = typer.Typer(help="Inspect the hub's plugins.", no_args_is_help=True)


@plugins_app.command("list")
def plugins_list(as_json: JsonOpt = False) -> None:
    """The plugins, from the running hub if there is one, else as this install loads them."""
    import aiohttp

    cfg = config()
    rows: list[dict[str, Any]]
    source = "hub"
    try:
        rows = asyncio.run(with_client(False, lambda c: c.call("plugins_list")))
    except (OSError, ConnectionError, aiohttp.ClientError, MeshError, FileNotFoundError):
        from meshhub.plugins import build_plugin_host

        rows = build_plugin_host(cfg.disabled_plugins).table()
        source = "local"
    if as_json:
        emit_json(rows)
        return
    if source == "local":
        typer.echo(f"(no hub at {cfg.url}: showing what this install loads)")
    typer.echo(table(
        [[r["name"], r["version"], r["source"],
          r["status"] + (f": {r['error']}" if r["error"] else ""),
          ", ".join(h.removeprefix("meshhub_") for h in r["hooks"])]
         for r in rows],
        ["name", "version", "source", "status", "hooks"],
    ))


def pair(
    connector: Annotated[str, typer.Argument(help="the chat connector, e.g. telegram")]
    = "telegram",
    new_person: Annotated[bool, typer.Option(
        "--new-person", help="Let someone else in as a person of their own (owner only).")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a one-time code (10 minutes) that links your own chat account to you, or with
    --new-person lets someone else in."""
    result = call("pair_create", connector=connector, new_person=new_person)
    if result.get("warning"):  # the code is made anyway: the bot may be started later
        typer.echo(f"warning: {result['warning']}", err=True)
    if as_json:
        emit_json(result)
        return
    typer.echo(result["code"])
    typer.echo(f"  {result['how']} ({result['attempts']} attempts)")
    if result.get("links_to"):
        typer.echo(f"  the account becomes one more surface of {result['links_to']} "
                   "(--new-person lets someone else in instead)")


def add_plugin_commands(app: typer.Typer) -> None:
    from meshhub.plugins import build_plugin_host

    try:
        disabled = load_config(home_dir()).disabled_plugins
    except ConfigError:  # the command that runs says so; its plugin commands stay available
        disabled = []
    # only entry-point plugins add commands: skip the built-ins' imports (CLI start-up time)
    host = build_plugin_host(disabled, builtins=False)

    def add(sub: typer.Typer, name: str, plugin: str) -> str:
        app.add_typer(sub, name=name)
        return name

    host.collect("meshhub_register_commands", "commands", add)


def register(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")
    app.command("pair")(pair)
