"""``hub send``, ``inbox``, ``peers``, ``watch``, ``call`` and ``actions``: talking on the mesh."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meshhub.config import load_signing_key
from meshhub.errors import MeshError
from meshhub.local import default_name
from meshhub.models import PRIORITIES
from meshhub.views import presence_text

from .common import JsonOpt, choice_option, config, fail, run, usage_error, with_client
from .output import emit_json, event_line, message_line, table

if TYPE_CHECKING:
    from meshhub.client import MeshClient


def send(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="name, key, @group, #conversation, * or a list")],
    text: Annotated[str | None, typer.Argument(
        help="the message; - reads it from stdin", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", help="Read the message from this file (- for stdin) instead of TEXT.",
        allow_dash=True)] = None,
    reply_to: Annotated[str | None, typer.Option("--reply-to", help="root message id")] = None,
    priority: Annotated[str, typer.Option(
        help="now, next or low", callback=choice_option(*PRIORITIES))] = "next",
    client_id: Annotated[str | None, typer.Option("--client-id", help="idempotency key")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a message: TEXT, or - for stdin, or --file PATH."""
    body = _message_body(ctx, text, file)

    async def go(c: MeshClient) -> dict[str, Any]:
        return await c.send(target, body, reply_to=reply_to, priority=priority,
                            client_id=client_id)

    result = run(with_client(False, go))
    if as_json:
        emit_json(result)
        return
    note = " (already sent earlier)" if result["duplicate"] else ""
    queued = f"; queued for {', '.join(result['queued'])}" if result["queued"] else ""
    typer.echo(f"sent {result['id']} to {', '.join(result['recipients'])}{note}{queued}")


def _message_body(ctx: typer.Context, text: str | None, file: Path | None) -> str:
    """The text to send: TEXT, stdin for ``-``, or the file; one of them, and not empty."""
    if text is not None and file is not None:
        raise usage_error("give the message as TEXT or --file PATH, not both", ctx)
    if text is None and file is None:
        raise usage_error("missing argument 'TEXT' (or give --file PATH; - reads stdin)", ctx)
    source = file if file is not None else text
    if str(source) == "-":
        try:
            body, where = sys.stdin.buffer.read().decode("utf-8"), "stdin"
        except UnicodeDecodeError:
            raise fail("stdin is not UTF-8 text; nothing was sent") from None
    elif file is not None:
        try:
            body, where = file.read_text(encoding="utf-8"), str(file)
        except UnicodeDecodeError:
            raise fail(f"{file} is not UTF-8 text; nothing was sent") from None
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
    else:
        body, where = str(text), "TEXT"
        try:
            body.encode("utf-8")  # bytes that are not UTF-8 arrive as lone surrogates
        except UnicodeEncodeError:
            raise fail("TEXT is not UTF-8 text; nothing was sent") from None
    body = body.rstrip("\n")
    if not body.strip():
        raise fail(f"the message from {where} is empty; nothing was sent")
    return body


def inbox(
    show_all: Annotated[bool, typer.Option(
        "--all", help="Include messages already read (the unread ones are marked *).")]
    = False,
    limit: Annotated[int, typer.Option(help="At most this many (1-500).", min=1, max=500)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show messages addressed to you (and mark them read)."""
    result = run(with_client(False, lambda c: c.inbox(unread_only=not show_all, limit=limit)))
    if as_json:
        emit_json(result)
        return
    if not result["messages"]:
        typer.echo("no unread messages" if not show_all else "no messages")
    unread = set(result["unread"]) if show_all else set()
    for m in result["messages"]:
        typer.echo(("* " if m["id"] in unread else "") + message_line(m))
    if result["more"]:
        typer.echo(f"... more: hub inbox --limit {limit * 2}")


def peers(as_json: JsonOpt = False) -> None:
    """List the peers of the mesh, and how a message to each arrives now."""
    result = run(with_client(False, lambda c: c.peers()))
    if as_json:
        emit_json(result)
        return
    rows = [
        [("* " if p["you"] else "  ") + p["name"], p["key"], p["kind"], p["connector"],
         presence_text(p), ",".join("@" + g for g in p["groups"]), p["summary"]]
        for p in result
    ]
    typer.echo(table(rows, ["name", "key", "kind", "via", "presence", "groups", "summary"]))


def watch(
    as_json: JsonOpt = False,
    no_read: Annotated[bool, typer.Option(
        "--no-read", help="Leave shown messages unread (for `hub inbox`).")] = False,
) -> None:
    """Stream arriving messages and who joins, comes and goes until Ctrl-C.

    A message shown here counts as read (unless --no-read). With --json, every line is one of
    the hub's frames (a message or an event) as docs/protocol.md describes them.
    """

    from meshhub.client import MeshClient

    async def go() -> None:
        cfg = config()
        c = MeshClient(cfg.url, load_signing_key(cfg.home), name=cfg.name or default_name(),
                       kind="human", connector="cli", receive=True, reconnect=True)
        async with c:
            if not as_json:
                typer.echo(f"watching as {c.peer['name']} ({c.peer['key']}); Ctrl-C to stop")

            async def events() -> None:
                while True:
                    event = await c.events.get()
                    typer.echo(json.dumps(event) if as_json else event_line(event))
                    sys.stdout.flush()

            task = asyncio.create_task(events())
            try:
                async for m in c.messages():
                    typer.echo(json.dumps({"type": "message", "message": m}) if as_json
                               else message_line(m))
                    sys.stdout.flush()
                    # a connection lost here is redialled: the message then stays unread
                    with contextlib.suppress(ConnectionError, MeshError):
                        await c.ack(m["id"])
                        if not no_read:
                            await c.call("mark_read", ids=[m["id"]])
            finally:
                task.cancel()
            if c.shut_out:  # removed from the hub, say: retrying cannot help
                raise fail(f"the hub closed this watch: {c.shut_out}")

    with contextlib.suppress(KeyboardInterrupt):
        run(go())


def _param(text: str, ctx: typer.Context) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise usage_error(f"parameters are name=value, got {text!r}", ctx)
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def call_action(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="an action name (see `hub actions`)")],
    params: Annotated[list[str] | None, typer.Argument(help="name=value (JSON values allowed)")]
    = None,
) -> None:
    """Run any action on the hub, e.g. `hub call join_group group=backend`; prints JSON."""
    args = dict(_param(p, ctx) for p in params or [])
    emit_json(run(with_client(False, lambda c: c.call(action, **args))))


def list_actions(as_json: JsonOpt = False) -> None:
    """List the actions this install serves (each is also an HTTP endpoint and MCP tool)."""
    from meshhub.hub import installed_actions

    described = installed_actions(config())
    if as_json:
        emit_json(described)
        return
    typer.echo(table([[a["name"], a["summary"]] for a in described], ["action", "summary"]))


def hook(event: Annotated[str, typer.Argument(
        help="user-prompt-submit, stop, post-tool-use or post-tool-use-failure")] = "") -> None:
    """Hand an agent tool's hook event to its session (Claude Code runs this; always exits 0)."""
    from .hook import main as hook_main

    hook_main([event])


def register(app: typer.Typer) -> None:
    for command in (send, inbox, peers, watch):
        app.command()(command)
    app.command("hook")(hook)
    app.command("call")(call_action)
    app.command("actions")(list_actions)
