"""``hub audit`` (the owner's audit log: verify the chain, read its tail) and ``hub report``
(a Markdown summary of a time window). Both go through the running hub, as ``hub call`` does:
the hub is the one writer of its database, and its owner's key is what may read the log."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

import typer

from meshhub.sanitize import for_terminal

from . import common as cli
from .common import JsonOpt
from .output import emit_json, table

audit_app = typer.Typer(help="The hub's audit log: who joined, was removed, made tokens...",
                        no_args_is_help=True)
FOLLOW_EVERY = 2.0  # seconds between two reads of the log with --follow


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _details(details: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in details.items() if v not in (None, "", []))


def _row(entry: dict[str, Any]) -> list[Any]:
    # the table makes every cell one harmless line (names are peers' own text)
    return [entry["seq"], _when(entry["at"]), entry["event"], entry["actor_name"],
            entry["subject"], _details(entry["details"])]


HEADERS = ["seq", "at", "event", "actor", "subject", "details"]


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the whole hash chain: exit 0 when every row holds, 1 naming the first that
    does not and why."""
    verdict = cli.call("audit_verify")
    if as_json:
        emit_json(verdict)
    elif verdict["ok"]:
        head = verdict.get("head")
        typer.echo(f"{verdict['checked']} rows, chain intact"
                   + (f" (head: row {head['seq']}, sha256 {head['hash']})" if head else ""))
    else:
        typer.echo(f"chain broken at row {verdict['seq']}: "
                   f"{for_terminal(verdict['reason'], one_line=True)} "
                   f"({verdict['checked']} rows before it hold)", err=True)
    if not verdict["ok"]:
        raise typer.Exit(1)


@audit_app.command("tail")
def audit_tail(
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many of the newest rows.")]
    = 20,
    event: Annotated[str | None, typer.Option(help="Only this event (token_created...).")]
    = None,
    actor: Annotated[str | None, typer.Option(help="Only what this peer or member did.")]
    = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new rows.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """The newest rows of the audit log, oldest first (the hub's owner only)."""
    rows = cli.call("audit", limit=lines, event=event, actor=actor)
    if as_json and not follow:
        emit_json(rows)
        return
    _show(rows, as_json, header=True)
    if follow:
        cli.run(_follow(rows[-1]["seq"] if rows else 0, event, actor, as_json))


def _show(rows: list[dict[str, Any]], as_json: bool, *, header: bool) -> None:
    if as_json:
        for row in rows:
            emit_json(row)
    elif rows:
        text = table([_row(e) for e in rows], HEADERS)
        typer.echo(text if header else "\n".join(text.splitlines()[2:]))
    elif header:
        typer.echo("no audit rows")


async def _follow(last: int, event: str | None, actor: str | None, as_json: bool) -> None:
    """Read the log every few seconds over one connection and print the rows after ``last``
    (Ctrl-C stops)."""
    async with cli.client(cli.config(), receive=False) as c:
        while True:
            await asyncio.sleep(FOLLOW_EVERY)
            while rows := await c.call("audit", limit=1000, event=event, actor=actor,
                                       after_seq=last):
                _show(rows, as_json, header=False)
                last = rows[-1]["seq"]


@audit_app.command("export")
def audit_export() -> None:
    """Every row of the audit log, oldest first, one JSON object a line: to keep elsewhere,
    or to check the chain with another tool (docs/coordination.md)."""
    cli.run(_export())


async def _export() -> None:
    async with cli.client(cli.config(), receive=False) as c:
        last = 0
        while rows := await c.call("audit", limit=1000, after_seq=last):
            for row in rows:
                # one line each; non-ASCII escaped, so a name cannot drive the terminal
                typer.echo(json.dumps(row, separators=(",", ":")))
            last = rows[-1]["seq"]


def report(
    since: Annotated[str, typer.Option(help="The window's start: 2h, 3d, epoch seconds or "
                                       "an ISO 8601 time.")] = "2h",
    until: Annotated[str | None, typer.Option(help="Its end (same forms; default: now).")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """A Markdown summary of a time window as you may see it: participants, messages per
    conversation, tasks, decisions, approvals, files..."""
    result = cli.call("report", since=since, until=until)
    if as_json:
        emit_json(result)
        return
    typer.echo(for_terminal(result["markdown"]))


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
    app.command("report")(report)
