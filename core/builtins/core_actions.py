"""The core actions: messaging, threads, presence, groups and introspection (conversations
are :mod:`meshhub.builtins.conversation_actions`).

Each is defined once here and served on every surface (WebSocket, HTTP, MCP, CLI).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.directory import check_group
from meshhub.errors import InvalidRequest, NotFound
from meshhub.fields import (
    MAX_CLIENT_ID,
    MAX_GROUPS,
    MAX_NAMES,
    MAX_ROLE,
    MAX_SUMMARY,
    TooLong,
)
from meshhub.kinds import FIELDS_HELP, Kind, prepare
from meshhub.models import STATUSES
from meshhub.store import UNREAD_STATES, InboxItem, StateChange, ThreadSummary
from meshhub.views import thread_view

Target = Annotated[
    str | list[str] | None,
    "who gets it: a name, an 8-hex key, @group, #conversation, * (everyone), or a list of "
    "these; leave it out when replying to send to the thread's participants",
]


@action(read_only=True)
async def whoami(ctx: ActionContext) -> dict[str, Any]:
    """Your own peer: key, name, role, groups, status and summary."""
    return ctx.hub.peer_view(ctx.peer, ctx.peer)


@action(read_only=True)
async def peers(
    ctx: ActionContext,
    group: Annotated[str | None, "only peers in this @group (subgroups included)"] = None,
    status: Annotated[str | None, "only peers with this status (online, idle, ...)"] = None,
    connector: Annotated[str | None, "only peers on this surface (mcp, cli, telegram...)"] = None,
    online_only: Annotated[bool, "leave out offline peers"] = False,
) -> list[dict[str, Any]]:
    """List the peers of the mesh, yourself included (marked ``you``)."""
    out = []
    for peer in sorted(ctx.hub.directory.peers.values(), key=lambda p: p.name.lower()):
        view = ctx.hub.peer_view(peer, ctx.peer)
        if group and not peer.in_group(group.lstrip("@")):
            continue
        if status and peer.status != status:
            continue
        if connector and peer.connector != connector:
            continue
        if online_only and not view["online"]:
            continue
        for extra in await ctx.hub.plugins.each("meshhub_describe_peer", hub=ctx.hub, peer=peer):
            view.update(extra)
        out.append(view)
    return out


@action()
async def send(
    ctx: ActionContext,
    text: Annotated[str, "the message (Markdown welcome); with a structured kind, optional "
                    "words shown after its fields"] = "",
    to: Target = None,
    reply_to: Annotated[str | None, "id of a thread's root message to reply to"] = None,
    priority: Annotated[Literal["now", "next", "low"], "now = urgent, next = normal, low = FYI"]
    = "next",
    mentions: Annotated[list[str] | None, "names to flag (@name in the text works too)",
                        Field(max_length=MAX_NAMES)] = None,
    whisper: Annotated[list[str] | None, "only these recipients may see it",
                       Field(max_length=MAX_NAMES)] = None,
    client_id: Annotated[str | None, "your id for this send; a resend with it is a no-op",
                         Field(max_length=MAX_CLIENT_ID)] = None,
    kind: Annotated[Kind, "text, or a structured kind whose fields (all required) go in "
                    "data: " + FIELDS_HELP] = "text",
    data: Annotated[dict[str, Any] | None, "a structured kind's fields, e.g. {\"decision\": "
                    "\"...\", \"rationale\": \"...\"}"] = None,
) -> dict[str, Any]:
    """Send a message. The result's ``id`` means it is stored and will be delivered.

    A structured ``kind`` keeps its checked fields in the message's ``data`` and gets a text
    made from them, so every surface shows it readably."""
    body, fields = prepare(kind, data, text, ctx.hub.config.max_body_bytes)
    return await ctx.hub.send(
        ctx.peer, to, body, reply_to=reply_to, priority=priority, mentions=mentions,
        whisper=whisper, client_id=client_id, kind=kind, data=fields,
    )


@action(cap="read")
async def inbox(
    ctx: ActionContext,
    since: Annotated[str | None, "only messages after this message id"] = None,
    unread_only: Annotated[bool, "only messages not yet read"] = True,
    top_level_only: Annotated[bool, "leave out thread replies (roots show a reply count)"]
    = False,
    limit: Annotated[int, "at most this many (1-500)"] = 50,
    mark_read: Annotated[bool, "mark what is returned as read"] = True,
) -> dict[str, Any]:
    """Read messages addressed to you, oldest first.

    Beside ``messages``: ``unread`` (the ids that were unread before this call), ``mentioned``
    (the ids that mention you), ``threads`` (the summaries of the thread roots among them that
    have replies you can see) and ``replies`` (their reply counts).
    """
    if not 1 <= limit <= 500:
        raise InvalidRequest("limit must be between 1 and 500")
    items = await ctx.hub.store.inbox(
        ctx.peer.key, since=since, unread_only=unread_only, top_level_only=top_level_only,
        limit=limit + 1,
    )
    more = len(items) > limit
    items = items[:limit]
    if mark_read and items:
        await ctx.hub.store.advance(
            [StateChange(i.message.id, ctx.peer.key, "read") for i in items]
        )
    messages = [ctx.hub.message_view(i.message) for i in items]
    return {
        "messages": messages,
        "more": more,
        "next_since": messages[-1]["id"] if more else None,
        # what is yours alone rides beside the messages, so a message has one shape everywhere
        "unread": [i.message.id for i in items if i.state != "read"],
        "mentioned": [i.message.id for i in items if i.mentioned],
        "replies": {i.message.id: i.replies for i in items if i.replies},
        "threads": _threads(ctx, items),
    }


def _threads(ctx: ActionContext, items: list[InboxItem]) -> dict[str, dict[str, Any]]:
    peers = ctx.hub.directory.peers
    return {i.message.id: thread_view(i.thread, i.message.sender, peers)
            for i in items if i.thread is not None}


@action(cap="read")
async def mark_read(
    ctx: ActionContext, ids: Annotated[list[str], "message ids to mark as read"]
) -> dict[str, Any]:
    """Mark messages as read (a read receipt the sender sees in message_status)."""
    marked = await ctx.hub.store.advance([StateChange(mid, ctx.peer.key, "read") for mid in ids])
    return {"marked": marked}


@action(cap="read")
async def thread(
    ctx: ActionContext,
    root: Annotated[str, "id of the thread's root message"],
    mark_read: Annotated[bool, "mark the messages shown as read"] = True,
) -> dict[str, Any]:
    """A thread: its root message and every reply you can see, oldest first, with its
    ``summary`` (as in ``history``'s ``threads``) and ``unread``: the ids that were unread
    before this call. Reading a thread marks what it shows read, unless ``mark_read`` is
    false: its ``unread`` count (here and in ``check``'s ``by_thread``) goes to 0."""
    items = await ctx.hub.store.thread(root, ctx.peer.key)
    if not items or items[0].message.id != root:
        raise NotFound(f"no thread {root} that you can see")
    me = ctx.peer.key
    unread = [i.message.id for i in items if i.state in UNREAD_STATES]
    summary = (await ctx.hub.store.thread_summaries([root], me)).get(root)
    if mark_read and unread:
        await ctx.hub.store.advance([StateChange(mid, me, "read") for mid in unread])
        if summary is not None:
            summary.unread = 0
    view = thread_view(summary or ThreadSummary(root), items[0].message.sender,
                       ctx.hub.directory.peers)
    return {"root": ctx.hub.message_view(items[0].message),
            "replies": [ctx.hub.message_view(i.message) for i in items[1:]],
            "summary": view, "unread": unread}


@action(cap="read")
async def check(
    ctx: ActionContext,
    mark_seen: Annotated[bool, "after counting, mark everything unread as read"] = False,
) -> dict[str, Any]:
    """Unread counts: total, mentions, per sender and per thread (optionally mark all seen)."""
    counts = await ctx.hub.store.unread_counts(ctx.peer.key)
    if mark_seen and counts["total"]:
        unread = await ctx.hub.store.inbox(ctx.peer.key, since=None, unread_only=True,
                                           top_level_only=False, limit=counts["total"])
        counts["marked_seen"] = await ctx.hub.store.advance(
            [StateChange(i.message.id, ctx.peer.key, "read") for i in unread]
        )
    peers = ctx.hub.directory.peers
    counts["by_sender"] = {
        (peers[k].name if k in peers else k): n for k, n in counts["by_sender"].items()
    }
    counts["by_conversation"] = {
        (f"dm:{peers[w[3:]].name}" if w.startswith("dm:") and w[3:] in peers else w): n
        for w, n in counts.get("by_conversation", {}).items()
    }
    return counts


@action(read_only=True)
async def history(
    ctx: ActionContext,
    conversation: Annotated[str | None, "#conversation, @group, * or multi; dm:NAME for the "
                            "direct messages with one peer; leave out for everything"] = None,
    before: Annotated[str | None, "only messages older than this message id"] = None,
    after: Annotated[str | None, "only messages newer than this message id"] = None,
    top_level_only: Annotated[bool, "leave out thread replies (roots show a reply count)"]
    = True,
    limit: Annotated[int, "at most this many (1-500)"] = 50,
) -> dict[str, Any]:
    """Messages you sent or received, in one conversation or with one peer: the newest page
    (or the page before/after a message id), oldest first. Marks nothing read.

    Beside ``messages``: ``more`` (there are older ones; newer ones with ``after``),
    ``unread`` and ``mentioned`` (ids, as in ``inbox``), ``threads`` (the summaries of the
    thread roots among them that have replies) and ``replies`` (their reply counts). By
    default replies are left out: a conversation reads as its roots, each with its summary."""
    if not 1 <= limit <= 500:
        raise InvalidRequest("limit must be between 1 and 500")
    if before and after:
        raise InvalidRequest("give before or after, not both")
    conversation, partner = ctx.hub.directory.conversation_filter(conversation)
    items = await ctx.hub.store.history(
        ctx.peer.key, conversation=conversation, partner=partner, before=before, after=after,
        top_level_only=top_level_only, limit=limit + 1,
    )
    more = len(items) > limit
    items = items[:limit] if after else items[-limit:]
    return {
        "messages": [ctx.hub.message_view(i.message) for i in items],
        "more": more,
        "unread": [i.message.id for i in items if i.state in UNREAD_STATES],
        "mentioned": [i.message.id for i in items if i.mentioned],
        "replies": {i.message.id: i.replies for i in items if i.replies},
        "threads": _threads(ctx, items),
    }


@action(read_only=True)
async def message_status(
    ctx: ActionContext, id: Annotated[str, "the message id a send returned"]
) -> dict[str, Any]:
    """Each recipient's state for a message you sent: queued, pushed, delivered, read or dead."""
    message = await ctx.hub.store.get_message(id)
    if message is None or (message.sender != ctx.peer.key and not ctx.is_admin):
        raise NotFound(f"no message {id} sent by you")
    peers = ctx.hub.directory.peers
    return {
        "id": id,
        "recipients": [
            {
                "name": peers[d.recipient].name if d.recipient in peers else d.recipient,
                "key": d.recipient,
                "state": d.state,
                "attempts": d.attempts,
                "reason": d.reason,
                "updated_at": d.updated_at,
            }
            for d in await ctx.hub.store.deliveries_of(id)
        ],
    }


async def _changed(ctx: ActionContext, change: str) -> dict[str, Any]:
    await ctx.hub.presence.announce(ctx.peer, change)
    if change == "status":
        await ctx.hub.dispatcher.redrain(ctx.peer.key)
    return ctx.hub.peer_view(ctx.peer, ctx.peer)


@action()
async def set_status(
    ctx: ActionContext,
    status: Annotated[Literal["online", "idle", "working", "dnd", "away"], "your status"],
) -> dict[str, Any]:
    """Set your status; ``dnd`` holds all but ``now`` messages until you change it."""
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")
    ctx.peer.status = status
    return await _changed(ctx, "status")


@action()
async def set_summary(
    ctx: ActionContext,
    summary: Annotated[str, "one line on what you are doing", Field(max_length=MAX_SUMMARY)],
) -> dict[str, Any]:
    """Set the one-line summary others see next to your name."""
    ctx.peer.summary = " ".join(summary.split())
    return await _changed(ctx, "summary")


@action()
async def join_group(
    ctx: ActionContext,
    group: Annotated[str, "group name, e.g. backend or backend/db"],
    role: Annotated[str, "your role in the group", Field(max_length=MAX_ROLE)] = "member",
) -> dict[str, Any]:
    """Join a @group (created on first join); a peer is in at most 50 groups."""
    name = check_group(group)
    if name not in ctx.peer.groups and len(ctx.peer.groups) >= MAX_GROUPS:
        raise TooLong("groups", MAX_GROUPS, "groups (leave one to join another)")
    ctx.peer.groups[name] = role
    await ctx.hub.directory.save_peer(ctx.peer)
    return await _changed(ctx, "groups")


@action()
async def leave_group(ctx: ActionContext, group: Annotated[str, "group name"]) -> dict[str, Any]:
    """Leave a @group."""
    name = group.lstrip("@")
    if ctx.peer.groups.pop(name, None) is None:
        raise NotFound(f"you are not in @{name}")
    await ctx.hub.directory.save_peer(ctx.peer)
    return await _changed(ctx, "groups")


@action(read_only=True)
async def plugins_list(ctx: ActionContext) -> list[dict[str, Any]]:
    """The hub's plugins: version, source, hooks, what they registered, status and error."""
    return ctx.hub.plugins.table()


@action(read_only=True)
async def connectors(ctx: ActionContext) -> list[dict[str, Any]]:
    """The hub's chat connectors (telegram...) and what each is doing: running, idle (and
    why), starting, failed or stopped; whether people on that platform can be reached now."""
    # an error may name a path or a host: the owner (any of its tokens) sees it, others the state
    full = ctx.hub.is_admin(ctx.peer)
    return [state.view(full=full) for state in ctx.hub.connector_states.all()]


@action(read_only=True)
async def actions(ctx: ActionContext) -> list[dict[str, Any]]:
    """Every action this hub serves: name, description and JSON schema of its parameters."""
    return ctx.hub.actions.describe()


@action(read_only=True)
async def hub_stats(ctx: ActionContext) -> dict[str, Any]:
    """Counts from the store and the live state of the hub."""
    stats = await ctx.hub.store.stats()
    stats["peers"] = len(ctx.hub.directory.peers)
    stats["online"] = ctx.hub.presence.online_count()
    stats["actions"] = len(ctx.hub.actions.actions)
    return stats


ALL: list[Action] = [
    whoami, peers, send, inbox, mark_read, thread, check, message_status, set_status,
    set_summary, join_group, leave_group, plugins_list, connectors, actions, hub_stats, history,
]


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)
