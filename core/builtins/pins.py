"""Pinned messages of a #conversation: the ``pin``, ``unpin`` and ``pins`` actions and the
``pins`` collection.

Written as a third-party plugin would be: one document per pinned message (keyed by its id)
in its own collection, read and written through ``hub.records``. A member of the conversation
who can see a message (its sender or a recipient) may pin or unpin it; ``pins`` lists the
pinned messages the caller can see. Every change reaches the conversation's connected members
as a ``record`` event through the collection's feed; a pinned whisper only reaches those it
was meant for, so nobody learns of it through its pin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden, InvalidRequest, NotFound
from meshhub.records import Change, Collection, Conflict, Record

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Message


def _audience(hub: Hub, change: Change) -> Iterable[str]:
    """Who hears of a pin change: the message's whisper party when it is a whisper, else the
    conversation's members."""
    pin = change.value or change.previous or {}
    if pin.get("audience"):
        return list(pin["audience"])
    conv = hub.directory.conversations.get(str(pin.get("conversation", "")).lstrip("#"))
    return set(conv.members) if conv is not None else ()


PINS = Collection("pins", indexes=("conversation",), feed=True, notify=_audience)


async def _visible(ctx: ActionContext, message_id: str) -> Message:
    message = await ctx.hub.store.get_message(message_id)
    me = ctx.peer.key
    if message is None or (message.sender != me and me not in message.recipients):
        raise NotFound(f"no message {message_id} that you can see")
    return message


async def _pinnable(ctx: ActionContext, message_id: str) -> Message:
    """The message, if the caller may pin or unpin it: it is in a #conversation the caller is
    a member of, and the caller can see it."""
    message = await _visible(ctx, message_id)
    if not message.conversation.startswith("#"):
        raise InvalidRequest(f"{message_id} is not in a #conversation; only a conversation's "
                             "messages can be pinned")
    conv = ctx.hub.directory.conversation(message.conversation)
    if ctx.peer.key not in conv.members:
        raise Forbidden(f"join {message.conversation} to pin or unpin its messages")
    return message


def _view(ctx: ActionContext, message: Message, record: Record) -> dict[str, Any]:
    peers = ctx.hub.directory.peers
    by = record.value["by"]
    return {"message": ctx.hub.message_view(message),
            "pinned_by": peers[by].name if by in peers else by,
            "pinned_at": record.created_at}


@action()
async def pin(
    ctx: ActionContext, message_id: Annotated[str, "id of a message in a #conversation"]
) -> dict[str, Any]:
    """Pin a message of a #conversation you are in, for its members to find with ``pins``.
    ``changed`` is false when it was pinned already."""
    message = await _pinnable(ctx, message_id)
    value = {"message_id": message.id, "conversation": message.conversation,
             "by": ctx.peer.key,
             "audience": [message.sender, *message.recipients] if message.whisper else None}
    try:
        record = await ctx.hub.records.create(PINS.name, message.id, value)
        changed = True
    except Conflict as taken:
        if taken.current is None:
            raise
        record, changed = taken.current, False
    return dict(_view(ctx, message, record), changed=changed)


@action()
async def unpin(
    ctx: ActionContext, message_id: Annotated[str, "id of a pinned message"]
) -> dict[str, Any]:
    """Unpin a message of a #conversation you are in. ``changed`` is false when it was not
    pinned."""
    message = await _pinnable(ctx, message_id)
    changed = await ctx.hub.records.delete(PINS.name, message.id)
    return {"id": message.id, "changed": changed}


@action(read_only=True)
async def pins(
    ctx: ActionContext, conversation: Annotated[str, "conversation name, with or without #"]
) -> list[dict[str, Any]]:
    """The pinned messages of a #conversation that you can see, oldest pin first: each
    message, who pinned it and when."""
    conv = ctx.hub.directory.conversation(conversation)
    me = ctx.peer.key
    out = []
    for record in await ctx.hub.records.all(PINS.name, {"conversation": "#" + conv.name},
                                            order="created_at"):
        message = await ctx.hub.store.get_message(record.key)
        if message is not None and (message.sender == me or me in message.recipients):
            out.append(_view(ctx, message, record))
    return out


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(PINS)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in (pin, unpin, pins):
        register(item)
