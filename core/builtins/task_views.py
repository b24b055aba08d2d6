"""What the tasks plugin shows: a task's public shape, who may see it, and its part of the
session report (order 30: the tasks created, claimed, completed and blocked in the window)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshhub.records import In, Record
from meshhub.report import ReportSection, report_text

from .coordination import conversation_of, peer_name
from .histories import History
from .report_window import window_lines

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

REPORTED = {"create": "created", "claim": "claimed", "complete": "completed",
            "block": "blocked"}
MAX_HISTORY = 200  # changes a task keeps; the oldest go first (its creation stays)
# each change, with the task's title and parties as they were then (who may see it)
HISTORY = History("task_history", keep=MAX_HISTORY, pin_first=True, indexes=("action",))


def visible_to(hub: Hub, peer: Peer, doc: dict[str, Any]) -> bool:
    """A peer sees the tasks it created, holds or is assigned (itself or its group), and
    those of the conversations it is in."""
    if peer.key in (doc["created_by"], doc.get("assignee"), doc.get("claimed_by")):
        return True
    if doc.get("group") and peer.in_group(doc["group"]):
        return True
    conv = conversation_of(hub, doc.get("conversation"))
    return conv is not None and peer.key in conv.members


def _maybe_name(hub: Hub, key: str | None) -> str | None:
    return peer_name(hub, key) if key else None


def task_view(hub: Hub, record: Record) -> dict[str, Any]:
    """A task as every action returns it, peers by name; ``changes`` counts its changes
    (``task_get`` reads them)."""
    doc = record.value
    view = {"id": doc["id"], "title": doc["title"], "description": doc["description"],
            "status": doc["status"], "created_by": peer_name(hub, doc["created_by"]),
            "assignee": ("@" + doc["group"]) if doc.get("group")
            else _maybe_name(hub, doc.get("assignee")),
            "claimed_by": _maybe_name(hub, doc.get("claimed_by")),
            "conversation": doc.get("conversation"), "result": doc.get("result"),
            "blocked_reason": doc.get("blocked_reason"), "revision": record.revision,
            "created_at": record.created_at, "updated_at": record.updated_at,
            "changes": doc["changes"]}
    return view


def entry_view(hub: Hub, entry: dict[str, Any]) -> dict[str, Any]:
    """One change of a task's history as ``task_get`` shows it."""
    return {"seq": entry["seq"], "at": entry["at"], "by": peer_name(hub, entry["by"]),
            "action": entry["action"], "status": entry["status"], "note": entry["note"]}


async def task_report(hub: Hub, viewer: Peer, since: float,
                      until: float) -> ReportSection | None:
    """The tasks created, claimed, completed and blocked in ``[since, until)`` that
    ``viewer`` could see then, in time order."""
    lines = await window_lines(hub, HISTORY.name, {"action": In(tuple(REPORTED))},
                               since=since, until=until, line=lambda r: _line(hub, r.value),
                               visible=lambda r: visible_to(hub, viewer, r.value))
    return ReportSection("Tasks", lines, order=30) if lines else None


def _line(hub: Hub, entry: dict[str, Any]) -> str:
    who = report_text(peer_name(hub, entry["by"]), 60)
    line = f"- {who} {REPORTED[entry['action']]} task “{report_text(entry['title'])}”"
    if entry["action"] == "block" and entry.get("note"):
        line += f": {report_text(entry['note'])}"
    return line
