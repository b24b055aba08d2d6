"""Tasks: work one peer hands to another peer or to a group, claimed by exactly one.

Written as a third-party plugin would be: one document per task in the ``tasks`` collection,
read and written through ``hub.records``. A task is assigned to a peer, to a ``@group`` (any
peer of the group may claim it) or to nobody yet, and may belong to a #conversation.

Every change is a compare-and-set on the revision the change read, so of two claims made at
the same moment exactly one write lands: the other either lost its compare-and-set (it read
the open task before that write, on this hub or another sharing the engine) and reads again,
or read the task after it; either way it finds the task claimed and is refused with
``conflict`` naming who holds it. Each change is counted in the task's document and kept as
a small document of its own in ``task_history`` (who, what, when), so the task's document
and its ``record`` events stay small however often it changes.

The status machine (:data:`MOVES`): ``open`` -> ``claimed`` (``task_claim``) ->
``in_progress`` -> ``done``; ``blocked`` from ``claimed`` or ``in_progress`` (it unblocks
to ``in_progress``); ``cancelled`` from any live status; ``release`` gives a held
task back (``open``, unclaimed). ``done`` and ``cancelled`` are final.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.directory import check_group
from meshhub.errors import Forbidden, InvalidRequest, NotFound
from meshhub.ids import new_id
from meshhub.records import Change, Collection, Conflict, In, Range, Record
from meshhub.routing import resolve_peers

from .coordination import conversation_of, member_conversation, notify
from .task_views import HISTORY, entry_view, task_report, task_view, visible_to

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer
    from meshhub.report import ReportSection

MAX_TITLE = 200
MAX_DESCRIPTION = 8000
MAX_NOTE = 2000
PAGE = 50
HISTORY_PAGE = 100
STATUSES = ("open", "claimed", "in_progress", "blocked", "done", "cancelled")
FINAL = ("done", "cancelled")
MOVES: dict[str, tuple[str, ...]] = {
    "open": ("claimed", "cancelled"),
    "claimed": ("in_progress", "blocked", "done", "cancelled", "open"),
    "in_progress": ("blocked", "done", "cancelled", "open"),
    "blocked": ("in_progress", "done", "cancelled", "open"),
    "done": (),
    "cancelled": (),
}
ATTEMPTS = 20


def _audience(hub: Hub, change: Change) -> Iterable[str]:
    """Who hears of a task change: its creator, assignee and claimer, its group's peers and
    its conversation's members."""
    doc = change.value or change.previous or {}
    keys = {doc.get("created_by"), doc.get("assignee"), doc.get("claimed_by")}
    if doc.get("group"):
        keys |= {p.key for p in hub.directory.peers.values() if p.in_group(doc["group"])}
    conv = conversation_of(hub, doc.get("conversation"))
    if conv is not None:
        keys |= set(conv.members)
    return [k for k in keys if k]


TASKS = Collection("tasks", indexes=("status", "assignee", "created_by", "group",
                                     "claimed_by", "conversation"),
                   feed=True, notify=_audience)


PARTIES = ("title", "created_by", "assignee", "claimed_by", "group", "conversation")


async def _remember(hub: Hub, record: Record, peer: Peer, what: str, note: str = "") -> None:
    """Keep the change just written as the task's change number ``changes``, with the
    task's title and parties as they are now (who may see it in a report)."""
    doc = record.value
    entry = {"at": time.time(), "by": peer.key, "action": what, "status": doc["status"],
             "note": note, **{k: doc.get(k) for k in PARTIES}}
    await HISTORY.add(hub, record.key, doc["changes"], entry)


def _may_change(ctx: ActionContext, doc: dict[str, Any]) -> bool:
    """The creator, the claimer, a peer assignee and the hub's owner change a task."""
    me = ctx.peer.key
    return ctx.is_admin or me in (doc["created_by"], doc.get("claimed_by"), doc.get("assignee"))


def _may_claim(ctx: ActionContext, doc: dict[str, Any]) -> bool:
    """Whoever may change it, a peer of its group, or, for a task assigned to nobody, whoever
    sees it."""
    if _may_change(ctx, doc):
        return True
    if doc.get("group"):
        return ctx.peer.in_group(doc["group"])
    return doc.get("assignee") is None and visible_to(ctx.hub, ctx.peer, doc)


async def _load(ctx: ActionContext, task_id: str) -> Record:
    record = await ctx.hub.records.get(TASKS.name, task_id)
    if record is None or not (ctx.is_admin or visible_to(ctx.hub, ctx.peer, record.value)):
        raise NotFound(f"no task {task_id} that you can see; `tasks` lists yours")
    return record


def _holder(ctx: ActionContext, doc: dict[str, Any]) -> str:
    peer = ctx.hub.directory.peers.get(doc.get("claimed_by") or "")
    return peer.name if peer is not None else str(doc.get("claimed_by"))


def _move(ctx: ActionContext, record: Record, to: str, what: str) -> None:
    """Check the move from the task's status to ``to``; a claim lost to another claimer is a
    conflict naming the holder."""
    doc = record.value
    now = doc["status"]
    if what == "claim" and now != "open":
        holder = _holder(ctx, doc) if doc.get("claimed_by") else None
        lost = Conflict(f"task {doc['id']} is {now}" + (f", held by {holder}" if holder else "")
                        + "; only an open task can be claimed", current=record)
        lost.details.update(status=now, held_by=holder)
        raise lost
    if to not in MOVES[now]:
        allowed = ", ".join(MOVES[now]) or "nothing: it is final"
        raise InvalidRequest(f"task {doc['id']} is {now}: it cannot become {to} (from {now} "
                             f"it can become {allowed})", code="invalid_move")


async def _change(ctx: ActionContext, task_id: str, to: str, what: str,
                  edit: Callable[[dict[str, Any]], None], note: str = "") -> dict[str, Any]:
    """Apply one move to a task against the revision read, reading again when another
    change landed first (so a second claimer finds it claimed)."""
    for _ in range(ATTEMPTS):
        record = await _load(ctx, task_id)
        doc = record.value
        allowed = _may_claim(ctx, doc) if what == "claim" else _may_change(ctx, doc)
        if not allowed:
            raise Forbidden(f"task {task_id}: only its creator, its assignee or claimer, or "
                            f"the hub's owner may {what} it")
        _move(ctx, record, to, what)
        holder = doc.get("claimed_by")
        if to != "blocked":
            doc["blocked_reason"] = None
        edit(doc)
        doc["status"] = to
        doc["changes"] += 1
        try:
            written = await ctx.hub.records.put(TASKS.name, task_id, doc,
                                                revision=record.revision)
        except Conflict as lost:
            if lost.current is None:
                raise NotFound(f"task {task_id} is gone") from None
            continue
        await _remember(ctx.hub, written, ctx.peer, what, note)
        await _tell(ctx, written.value, what, also=holder)
        return task_view(ctx.hub, written)
    raise Conflict(f"task {task_id} kept changing; try again", current=None)


async def _tell(ctx: ActionContext, doc: dict[str, Any], what: str,
                also: str | None = None) -> None:
    """A ``task`` notice to its creator and its assignee, claimer or (unclaimed) group's
    peers, and ``also`` (the holder a release or cancel took it from), never the actor."""
    keys = {doc["created_by"], doc.get("assignee"), doc.get("claimed_by"), also}
    if doc.get("group") and not doc.get("claimed_by"):
        keys |= {p.key for p in ctx.hub.directory.peers.values() if p.in_group(doc["group"])}
    told = sorted(k for k in keys if k and k != ctx.peer.key)
    text = f"{ctx.peer.name} {_VERBS.get(what, what)} task {doc['id']}: {doc['title']}"
    await notify(ctx.hub, ctx.peer, told, f"{text} (now {doc['status']})", kind="task",
                 data={"task_id": doc["id"], "status": doc["status"]})


_VERBS = {"create": "created", "claim": "claimed", "release": "released", "block": "blocked",
          "complete": "completed", "update": "updated"}


def _assign(ctx: ActionContext, assignee: str | None) -> tuple[str | None, str | None]:
    """``(peer key, None)``, ``(None, group)`` or ``(None, None)`` for a task's assignee."""
    if not assignee or not assignee.strip():
        return None, None
    text = assignee.strip()
    if text.startswith("@") and ctx.hub.directory.find(text[1:]) is None:
        group = check_group(text[1:], "assignee")
        if not any(p.in_group(group) for p in ctx.hub.directory.peers.values()):
            known = ", ".join("@" + g for g in sorted(ctx.hub.directory.groups())) or "none"
            raise InvalidRequest(f"assignee: nobody is in @{group}; known groups: {known}")
        return None, group
    return text, None


@action()
async def task_create(
    ctx: ActionContext,
    title: Annotated[str, "what is to be done, one line", Field(min_length=1,
                                                              max_length=MAX_TITLE)],
    description: Annotated[str, "details", Field(max_length=MAX_DESCRIPTION)] = "",
    assignee: Annotated[str | None, "a peer's name or key, or a @group (any of its peers may "
                                    "claim it); left out: nobody yet",
                        Field(max_length=200)] = None,
    conversation: Annotated[str | None, "a #conversation it belongs to (its members see it)",
                            Field(max_length=200)] = None,
) -> dict[str, Any]:
    """Create a task (open). Its assignee (or the group's peers) is told by a ``task``
    message; its conversation's members see it too. The title is one line: its runs of
    spaces and line breaks become one space."""
    line = " ".join(title.split())
    if not line:
        raise InvalidRequest("title: say what is to be done")
    peer_name, group = _assign(ctx, assignee)
    key = (await resolve_peers(ctx.hub, [peer_name], ctx.peer, "assignee"))[0] \
        if peer_name else None
    conv = None
    if conversation and conversation.strip():
        conv = "#" + member_conversation(ctx, conversation, "tasks").name
    task_id = new_id()
    doc: dict[str, Any] = {
        "id": task_id, "title": line, "description": description,
        "status": "open", "created_by": ctx.peer.key, "assignee": key, "group": group,
        "claimed_by": None, "conversation": conv, "result": None, "blocked_reason": None,
        "changes": 1}
    record = await ctx.hub.records.create(TASKS.name, task_id, doc)
    await _remember(ctx.hub, record, ctx.peer, "create")
    await ctx.hub.audit.append("task_created", ctx.peer, subject=task_id,
                               title_len=len(line))
    await _tell(ctx, doc, "create")
    return task_view(ctx.hub, record)


@action()
async def task_claim(
    ctx: ActionContext, id: Annotated[str, "the task's id", Field(max_length=64)]
) -> dict[str, Any]:
    """Claim an open task: yours alone from now on. Its assignee, any peer of its group, its
    creator or the hub's owner may claim it. When another claimed it first (even at the same
    moment), refused with ``conflict`` naming who holds it."""

    def claim(doc: dict[str, Any]) -> None:
        doc["claimed_by"] = ctx.peer.key

    view = await _change(ctx, id, "claimed", "claim", claim)
    await ctx.hub.audit.append("task_claimed", ctx.peer, subject=id)
    return view


@action()
async def task_release(
    ctx: ActionContext,
    id: Annotated[str, "the task's id", Field(max_length=64)],
    note: Annotated[str, "why", Field(max_length=MAX_NOTE)] = "",
) -> dict[str, Any]:
    """Give a claimed task back: open again, for its assignee or group to claim. Its
    claimer, creator or the hub's owner may."""

    def release(doc: dict[str, Any]) -> None:
        doc["claimed_by"] = None

    return await _change(ctx, id, "open", "release", release, note)


@action()
async def task_update(
    ctx: ActionContext,
    id: Annotated[str, "the task's id", Field(max_length=64)],
    status: Annotated[str, "in_progress, blocked, done or cancelled (claim with task_claim, "
                           "give back with task_release)", Field(max_length=20)],
    note: Annotated[str, "what changed", Field(max_length=MAX_NOTE)] = "",
) -> dict[str, Any]:
    """Move a task to another status (its creator, assignee or claimer, or the hub's owner).
    An impossible move (a done task back to in_progress) is refused (``invalid_move``)
    naming the moves there are."""
    if status not in STATUSES:
        raise InvalidRequest(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    if status in ("claimed", "open"):
        raise InvalidRequest(f"status: use task_{'claim' if status == 'claimed' else 'release'}"
                             f" to make a task {status}")

    def update(doc: dict[str, Any]) -> None:
        if status == "blocked":
            doc["blocked_reason"] = note
        elif status == "done":
            doc["result"] = note

    return await _change(ctx, id, status, "update", update, note)


@action()
async def task_block(
    ctx: ActionContext,
    id: Annotated[str, "the task's id", Field(max_length=64)],
    reason: Annotated[str, "what it waits for", Field(min_length=1, max_length=MAX_NOTE)],
) -> dict[str, Any]:
    """Mark a claimed or in-progress task blocked, saying why (``task_update`` with
    ``in_progress`` unblocks it)."""

    def block(doc: dict[str, Any]) -> None:
        doc["blocked_reason"] = reason

    return await _change(ctx, id, "blocked", "block", block, reason)


@action()
async def task_complete(
    ctx: ActionContext,
    id: Annotated[str, "the task's id", Field(max_length=64)],
    result: Annotated[str, "what came of it", Field(max_length=MAX_DESCRIPTION)] = "",
) -> dict[str, Any]:
    """Mark a task done with its result; its creator is told."""

    def complete(doc: dict[str, Any]) -> None:
        doc["result"] = result

    return await _change(ctx, id, "done", "complete", complete, result[:MAX_NOTE])


@action(read_only=True)
async def task_get(
    ctx: ActionContext, id: Annotated[str, "the task's id", Field(max_length=64)],
    after: Annotated[int | None, "history: only the changes after this one (its seq)",
                     Field(ge=0)] = None,
) -> dict[str, Any]:
    """One task with its history: every change, who made it and when, oldest first,
    numbered (``seq``), 100 at a time (its creation and its newest 199 changes are kept);
    ``history_more`` is true when there are later ones: ask again with ``after`` set to the
    last ``seq``."""
    record = await _load(ctx, id)
    entries, more = await HISTORY.page(ctx.hub, record.key, after, HISTORY_PAGE)
    return dict(task_view(ctx.hub, record), history=[entry_view(ctx.hub, e) for e in entries],
                history_more=more)


@action(read_only=True)
async def tasks(
    ctx: ActionContext,
    status: Annotated[str | None, "only tasks in this status", Field(max_length=20)] = None,
    assignee: Annotated[str | None, "only tasks assigned to this peer or @group",
                        Field(max_length=200)] = None,
    created_by: Annotated[str | None, "only tasks this peer created",
                          Field(max_length=200)] = None,
    mine: Annotated[bool, "only tasks you created, hold, or that are assigned to you or "
                          "your groups"] = False,
    after: Annotated[str | None, "the last id of the previous page: the older tasks",
                     Field(max_length=64)] = None,
) -> dict[str, Any]:
    """The tasks you can see (you created them, they are assigned to you or your group,
    you hold them, or they are in a conversation you are in), newest first, 50 at a time;
    ``more`` is true when there are others: ask again with ``after`` set to the last id."""
    where = await _filters(ctx, status, assignee, created_by)
    if after is not None:
        where["key"] = Range(lt=after)
    found: dict[str, Record] = {}
    for branch in _branches(ctx, mine):
        query = _narrowed(where, *branch)
        if query is not None:
            page = await ctx.hub.records.find(TASKS.name, query, order="-key", limit=PAGE + 1)
            found.update((r.key, r) for r in page.records)
    newest = sorted(found.values(), key=lambda r: r.key, reverse=True)
    return {"tasks": [task_view(ctx.hub, r) for r in newest[:PAGE]], "more": len(newest) > PAGE}


def _branches(ctx: ActionContext, mine: bool) -> list[tuple[str, Any]]:
    """The indexed conditions whose union is what the caller sees (``mine``: holds, made
    or is assigned), each one query: the newest page of their union is in their pages."""
    me, hub = ctx.peer.key, ctx.hub
    groups = tuple(g for g in hub.directory.groups() if ctx.peer.in_group(g))
    out: list[tuple[str, Any]] = [("created_by", me), ("assignee", me), ("claimed_by", me),
                                  ("group", In(groups))]
    if not mine:
        convs = tuple("#" + c.name for c in hub.directory.conversations.values()
                      if me in c.members)
        out.append(("conversation", In(convs)))
    return out


def _narrowed(where: dict[str, Any], field: str, wanted: Any) -> dict[str, Any] | None:
    """``where`` and ``field`` is ``wanted``; ``None`` when they cannot both hold."""
    if field not in where:
        return {**where, field: wanted}
    given = where[field]
    holds = given in wanted.values if isinstance(wanted, In) else given == wanted
    return where if holds else None


async def _filters(ctx: ActionContext, status: str | None, assignee: str | None,
                   created_by: str | None) -> dict[str, Any]:
    where: dict[str, Any] = {}
    if status:
        if status not in STATUSES:
            raise InvalidRequest(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        where["status"] = status
    if assignee:
        peer_name, group = _assign(ctx, assignee)
        if group:
            where["group"] = group
        else:
            where["assignee"] = (await resolve_peers(ctx.hub, [str(peer_name)], ctx.peer,
                                                     "assignee"))[0]
    if created_by:
        where["created_by"] = (await resolve_peers(ctx.hub, [created_by], ctx.peer,
                                                   "created_by"))[0]
    return where


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(TASKS)
    register(HISTORY.collection)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in (task_create, task_claim, task_release, task_update, task_block,
                 task_complete, task_get, tasks):
        register(item)


@hookimpl
async def meshhub_report_sections(hub: Hub, viewer: Peer, since: float,
                                  until: float) -> ReportSection | None:
    return await task_report(hub, viewer, since, until)
