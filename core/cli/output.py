"""Printing for the CLI: readable tables by default, JSON with ``--json``."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

import typer


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def clock(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def message_line(m: dict[str, Any]) -> str:
    sender = m.get("from") or m.get("sender_name") or m.get("sender")
    text = m.get("text", m.get("body", ""))
    where = m.get("conversation", "")
    where = "" if where == "dm" else f" in {where}"
    thread = f" (reply to {m['reply_to']})" if m.get("reply_to") else ""
    flag = " [now]" if m.get("priority") == "now" else ""
    return f"{clock(m.get('created_at', 0))} {sender}{where}{thread}{flag}: {text}  [{m['id']}]"
