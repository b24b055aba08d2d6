"""Printing for the CLI: readable tables by default, JSON with ``--json``."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

import typer

from meshhub.sanitize import for_terminal


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [
        ["" if c is None else for_terminal(str(c), one_line=True) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def clock(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def message_line(m: dict[str, Any]) -> str:
    """One message as a terminal line (the shape of docs/protocol.md). What a peer wrote is
    made harmless (:mod:`meshhub.sanitize`), and the lines of a long text are indented, so no
    line of it can pass for a message of someone else."""
    where = m["conversation"]
    where = "" if where == "dm" else f" in {for_terminal(where, one_line=True)}"
    thread = f" (reply to {m['reply_to']})" if m.get("reply_to") else ""
    flag = " [now]" if m.get("priority") == "now" else ""
    text = for_terminal(m["text"]).replace("\n", "\n    ")
    sender = for_terminal(m["from"], one_line=True)
    return f"{clock(m['created_at'])} {sender}{where}{thread}{flag}: {text}  [{m['id']}]"


_CHANGES = {
    "joined": "joined the mesh",
    "online": "is online",
    "offline": "went offline (messages wait in its inbox)",
}


def event_line(event: dict[str, Any]) -> str:
    """A presence event as a terminal line: ``-- bob joined the mesh``."""
    peer = event.get("peer", {})
    name, change = peer.get("name", "?"), event.get("change", "")
    if change == "status":
        what = f"is now {peer.get('status')}"
    elif change == "summary":
        what = f"is working on: {peer.get('summary')}" if peer.get("summary") else \
            "cleared its summary"
    elif change == "groups":
        what = "is in " + (", ".join("@" + g for g in peer.get("groups", {})) or "no groups")
    else:
        what = _CHANGES.get(change, change)
    return for_terminal(f"-- {name} {what}", one_line=True)
