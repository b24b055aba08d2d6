"""Conversations: list (with counts and unread), create, join, leave, topic, invite,
archive, unarchive and members with their presence.

A conversation's figures are counted as the peer asking may see them: its whispers to others
are left out, and its unread messages are its own. An archived conversation refuses sends
(routing names ``conversation_unarchive``) but stays readable and searchable; ``conversations``
hides it unless asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.directory import check_group
from meshhub.errors import Forbidden, InvalidRequest, NotFound, QuotaExceeded, RateLimited
from meshhub.fields import MAX_NAMES, MAX_TOPIC
from meshhub.models import Conversation
from meshhub.routing import refuse_archived, resolve_peers


def _member_or_admin(ctx: ActionContext, conv: Conversation, doing: str) -> None:
    if ctx.peer.key not in conv.members and not ctx.is_admin:
        raise Forbidden(f"join #{conv.name} to {doing}")


def _view(ctx: ActionContext, conv: Conversation) -> dict[str, Any]:
    """The conversation's public shape, members by name (in name order)."""
    peers = ctx.hub.directory.peers
    view = conv.public()
    view["members"] = sorted((peers[k].name for k in view["members"] if k in peers),
                             key=str.lower)
    view["joined"] = ctx.peer.key in conv.members
    return view


@action(read_only=True)
async def conversations(
    ctx: ActionContext,
    include_archived: Annotated[bool, "list archived conversations too"] = False,
) -> list[dict[str, Any]]:
    """List conversations: whether you are a member, ``member_count``, ``message_count`` and
    ``last_activity`` (its messages but whispers to others) and your ``unread`` in each."""
    convs = sorted((c for c in ctx.hub.directory.conversations.values()
                    if include_archived or not c.archived), key=lambda c: c.name)
    stats = await ctx.hub.store.conversation_stats([c.name for c in convs], ctx.peer.key)
    out = []
    for conv in convs:
        view = _view(ctx, conv)
        figures = stats.get(conv.name)
        view["member_count"] = len(view["members"])
        view["message_count"] = figures.messages if figures else 0
        view["last_activity"] = figures.last_activity if figures else None
        view["unread"] = figures.unread if figures else 0
        out.append(view)
    return out


@action()
async def conversation_create(
    ctx: ActionContext,
    name: Annotated[str, "conversation name, with or without #"],
    topic: Annotated[str, "what it is about", Field(max_length=MAX_TOPIC)] = "",
) -> dict[str, Any]:
    """Create a #conversation and join it."""
    bare = name.lstrip("#").lower()
    check_group(bare, "name")
    if bare in ctx.hub.directory.conversations:
        raise InvalidRequest(f"#{bare} already exists; join it instead", code="exists")
    conv = Conversation(name=bare, topic=topic, created_by=ctx.peer.key, created_at=time.time())
    await ctx.hub.directory.save_conversation(conv)
    await ctx.hub.directory.join(conv, ctx.peer.key)
    return conv.public()


@action()
async def conversation_join(
    ctx: ActionContext, name: Annotated[str, "conversation name"]
) -> dict[str, Any]:
    """Join a #conversation."""
    conv = ctx.hub.directory.conversation(name)
    await ctx.hub.directory.join(conv, ctx.peer.key)
    return conv.public()


@action()
async def conversation_leave(
    ctx: ActionContext, name: Annotated[str, "conversation name"]
) -> dict[str, Any]:
    """Leave a #conversation."""
    conv = ctx.hub.directory.conversation(name)
    if not await ctx.hub.directory.leave(conv, ctx.peer.key):
        raise NotFound(f"you are not in #{conv.name}")
    return conv.public()


@action()
async def conversation_topic(
    ctx: ActionContext,
    name: Annotated[str, "conversation name"],
    topic: Annotated[str, "the new topic", Field(max_length=MAX_TOPIC)],
) -> dict[str, Any]:
    """Set a #conversation's topic (members only)."""
    conv = ctx.hub.directory.conversation(name)
    _member_or_admin(ctx, conv, "set its topic")
    conv.topic = topic
    await ctx.hub.directory.save_conversation(conv)
    return conv.public()


@action()
async def conversation_invite(
    ctx: ActionContext,
    name: Annotated[str, "conversation name"],
    peers: Annotated[list[str], "names or keys of the peers to add",
                     Field(min_length=1, max_length=MAX_NAMES)],
) -> dict[str, Any]:
    """Add peers to a #conversation you are a member of. Each one added gets a message
    saying who added them (kind ``conversation_invite``). Returns the conversation and
    ``added``: the names of those who were not members yet."""
    conv = ctx.hub.directory.conversation(name)
    _member_or_admin(ctx, conv, "invite others")
    refuse_archived(ctx.hub, conv.name)
    keys = await resolve_peers(ctx.hub, peers, ctx.peer, "peers")
    added = [k for k in keys if await ctx.hub.directory.join(conv, k)]
    told = [k for k in added if k != ctx.peer.key]
    if told:
        try:
            await ctx.hub.send(
                ctx.peer, told, f"{ctx.peer.name} added you to #{conv.name}"
                + (f" ({conv.topic})" if conv.topic else ""),
                kind="conversation_invite",
                data={"conversation": "#" + conv.name, "by": ctx.peer.name})
        except (RateLimited, QuotaExceeded):
            pass  # they are members all the same; only the note saying so is not sent
    peers_by_key = ctx.hub.directory.peers
    return dict(_view(ctx, conv), added=[peers_by_key[k].name for k in added])


async def _set_archived(ctx: ActionContext, name: str, archived: bool) -> dict[str, Any]:
    conv = ctx.hub.directory.conversation(name)
    if conv.created_by != ctx.peer.key and not ctx.is_admin:
        raise Forbidden(f"only the creator of #{conv.name} or the hub's owner may "
                        f"{'archive' if archived else 'unarchive'} it")
    conv.archived = archived
    await ctx.hub.directory.save_conversation(conv)
    return _view(ctx, conv)


@action()
async def conversation_archive(
    ctx: ActionContext, name: Annotated[str, "conversation name"]
) -> dict[str, Any]:
    """Archive a #conversation (its creator or the hub's owner): nobody can send to it any
    more; it stays readable and searchable, and ``conversations`` lists it only with
    ``include_archived``."""
    return await _set_archived(ctx, name, True)


@action()
async def conversation_unarchive(
    ctx: ActionContext, name: Annotated[str, "conversation name"]
) -> dict[str, Any]:
    """Bring an archived #conversation back (its creator or the hub's owner)."""
    return await _set_archived(ctx, name, False)


@action(read_only=True)
async def conversation_members(
    ctx: ActionContext, name: Annotated[str, "conversation name"]
) -> list[dict[str, Any]]:
    """The members of a #conversation, each as a peer (with its status, whether it is online
    and how a message reaches it now), by name."""
    conv = ctx.hub.directory.conversation(name)
    peers = ctx.hub.directory.peers
    members = sorted((peers[k] for k in conv.members if k in peers),
                     key=lambda p: p.name.lower())
    return [ctx.hub.peer_view(peer, ctx.peer) for peer in members]


ALL: list[Action] = [
    conversations, conversation_create, conversation_join, conversation_leave,
    conversation_topic, conversation_invite, conversation_archive, conversation_unarchive,
    conversation_members,
]


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)
