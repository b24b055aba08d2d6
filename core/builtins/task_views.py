"""What the tasks plugin shows: a task's public shape, who may see it, and its part of the
session report (order 30: the tasks created, claimed, completed and blocked in the window)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshhub.records import Record
from meshhub.report import ReportSection, report_text

from .coordination import conversation_of, peer_name

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

REPORTED = {"create": "created", "claim": "claimed", "complete": "completed",
            "block": "blocked"}


def visible_to(hub: Hub, peer: Peer, doc: dict[str, Any]) -> bool:
    """A peer sees the tasks it created, holds or is assigned (itself or its group), and
    those of the conversations it is in."""
    if peer.key in (doc["created_by"], doc.get("assignee"), doc.get("claimed_by")):
        return True
    if doc.get("group") and peer.in_group(doc["group"]):
        return True
    conv = conversation_of(hub, doc.get("conversation"))
    return conv is not None and peer.key in conv.members


def _name(hub: Hub, key: str | None) -> str | None:
    return peer_name(hub, key) if key else None


def task_view(hub: Hub, record: Record, *, history: bool = False) -> dict[str, Any]:
    """A task as every action returns it, peers by name; ``history`` adds its changes."""
    doc = record.value
    view = {"id": doc["id"], "title": doc["title"], "description": doc["description"],
            "status": doc["status"], "created_by": _name(hub, doc["created_by"]),
            "assignee": ("@" + doc["group"]) if doc.get("group")
            else _name(hub, doc.get("assignee")),
            "claimed_by": _name(hub, doc.get("claimed_by")),
            "conversation": doc.get("conversation"), "result": doc.get("result"),
            "blocked_reason": doc.get("blocked_reason"), "revision": record.revision,
            "created_at": record.created_at, "updated_at": record.updated_at}
    if history:
        view["history"] = [dict(entry, by=_name(hub, entry["by"])) for entry in doc["history"]]
    return view


async def task_report(hub: Hub, viewer: Peer, since: float,
                      until: float) -> ReportSection | None:
    """The tasks created, claimed, completed and blocked in ``[since, until)`` that
    ``viewer`` can see, in time order."""
    lines: list[tuple[float, str]] = []
    cursor: str | None = None
    while True:
        page = await hub.records.find("tasks", order="-updated_at", limit=200, after=cursor)
        for record in page.records:
            if record.updated_at < since:
                return _section(lines)
            if visible_to(hub, viewer, record.value):
                lines += _lines(hub, record.value, since, until)
        if page.cursor is None:
            return _section(lines)
        cursor = page.cursor


def _lines(hub: Hub, doc: dict[str, Any], since: float,
           until: float) -> list[tuple[float, str]]:
    out = []
    for entry in doc["history"]:
        if since <= entry["at"] < until and entry["action"] in REPORTED:
            who = report_text(_name(hub, entry["by"]) or "?", 60)
            line = f"- {who} {REPORTED[entry['action']]} task “{report_text(doc['title'])}”"
            if entry["action"] == "block" and entry.get("note"):
                line += f": {report_text(entry['note'])}"
            out.append((entry["at"], line))
    return out


def _section(lines: list[tuple[float, str]]) -> ReportSection | None:
    if not lines:
        return None
    lines.sort(key=lambda item: item[0])
    return ReportSection("Tasks", [line for _, line in lines], order=30)
