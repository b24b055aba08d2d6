"""The CLI commands this plugin adds to ``hub``: ``mcp``, ``install``, ``uninstall``,
``launch`` (registered through ``meshhub_register_commands``). ``hub hook`` is the core's (see
:mod:`meshhub.cli.hook`); its other end, in the session, is :mod:`.hook_server`.

Heavy imports (the ``mcp`` SDK) happen inside the commands.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from meshhub.cli.common import choice_option

NameOpt = Annotated[str | None, typer.Option("--name", help="Session name (MESHHUB_SESSION_NAME); "
                                             "the same name gets the same peer back.")]
RoleOpt = Annotated[str | None, typer.Option("--role", help="Your role (MESHHUB_ROLE).")]
GroupsOpt = Annotated[str | None, typer.Option(
    "--groups", help="Groups with optional roles, e.g. backend:lead,ops (MESHHUB_GROUPS).")]
ModeOpt = Annotated[str | None, typer.Option(
    "--mode", help="push (default), inbox (counts only) or off (MESHHUB_MODE).",
    callback=choice_option("push", "inbox", "off"))]
StateOpt = Annotated[str | None, typer.Option(
    "--state", help="Shared-state changes told to the session: all (default), off, or "
    "comma-separated key prefixes such as build/,deploy (MESHHUB_STATE).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


mcp_app = typer.Typer(invoke_without_command=True, add_completion=False,
                      help="Run the stdio MCP server for one Claude Code session.")


@mcp_app.callback()
def mcp(name: NameOpt = None, role: RoleOpt = None, groups: GroupsOpt = None,
        mode: ModeOpt = None, state: StateOpt = None) -> None:
    """Run the stdio MCP server for one Claude Code session (Claude Code starts this)."""
    from .session import session_options
    from .stdio_server import main

    try:
        opts = session_options(name, role, groups, mode, state)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    if not (opts.home / "identity.key").exists():
        raise _fail(f"no identity in {opts.home}: run `hub init --name NAME` first")
    main(opts)


install_app = typer.Typer(no_args_is_help=True, add_completion=False,
                          help="Connect a client to this hub.")
uninstall_app = typer.Typer(no_args_is_help=True, add_completion=False,
                            help="Undo `hub install`.")


@install_app.command("claude-code")
def install_claude_code(
    scope: Annotated[str, typer.Option(help="user (~/.claude.json) or project (.mcp.json).",
                                       callback=choice_option("user", "project"))]
    = "user",
    project_dir: Annotated[Path | None, typer.Option(help="Project directory (default: here).")]
    = None,
) -> None:
    """Register `hub mcp` with Claude Code and add the status/unread hooks."""
    from .claude_code import install

    try:
        for line in install(scope, project=project_dir):
            typer.echo(line)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo("start a session with: hub launch --name NAME  (or restart Claude Code)")


@uninstall_app.command("claude-code")
def uninstall_claude_code(
    project_dir: Annotated[Path | None, typer.Option(help="Project directory (default: here).")]
    = None,
) -> None:
    """Remove the meshhub server and hooks from Claude Code's config."""
    from .claude_code import uninstall

    try:
        for line in uninstall(project=project_dir):
            typer.echo(line)
    except ValueError as exc:
        raise _fail(str(exc)) from None


launch_app = typer.Typer(invoke_without_command=True, add_completion=False,
                         help="Start `claude` as a meshhub session.")


@launch_app.callback()
def launch(
    name: NameOpt = None, role: RoleOpt = None, groups: GroupsOpt = None, mode: ModeOpt = None,
    state: StateOpt = None, claude_args: Annotated[list[str] | None, typer.Argument(
        help="Arguments for claude, after --")] = None,
) -> None:
    """Start `claude` with the meshhub channel enabled and this session's identity."""
    from .claude_code import installed, launch_command, launch_env

    if not installed():
        raise _fail("the meshhub MCP server is not installed for Claude Code here; run "
                    "`hub install claude-code` (or add `--scope project` for this project only)")
    argv = launch_command(list(claude_args or []))
    if shutil.which(argv[0]) is None:
        raise _fail("`claude` is not on PATH; install Claude Code first")
    env = launch_env(name, role, groups, mode, state)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


def register_all(register: Callable[..., None]) -> None:
    for sub, name in ((mcp_app, "mcp"), (install_app, "install"), (uninstall_app, "uninstall"),
                      (launch_app, "launch")):
        register(sub, name)
