"""Emoji reactions on messages: the ``react`` action and the ``reactions`` collection.

Written exactly as a third-party plugin would be: its own collection (one document per message,
peer and emoji), its own actions, ``hub.records`` for its data. A reaction is added or removed
by a peer that can see the message (its sender or a recipient). When one is added, the
message's sender is told with a small message of kind ``reaction`` (not for reactions to your
own messages), so a session learns "seen" or "agreed" without a reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import InvalidRequest, NotFound, QuotaExceeded, RateLimited
from meshhub.fields import MAX_EMOJI
from meshhub.records import Collection, Conflict, In

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

    from meshhub.hub import Hub

MAX_LOOKUP = 200
REACTIONS = Collection("reactions", indexes=("message_id",))


def reaction_key(message_id: str, peer: str, emoji: str) -> str:
    """One document per message, peer and emoji (an emoji has no spaces; ids and keys none
    either)."""
    return f"{message_id} {peer} {emoji}"


async def _on(hub: Hub, message_ids: list[str]) -> list[tuple[str, str, str]]:
    """(message id, emoji, peer) of every reaction on these messages, oldest first."""
    found = await hub.records.all("reactions", {"message_id": In(tuple(message_ids))},
                                  order="created_at")
    return [(r.value["message_id"], r.value["emoji"], r.value["peer"]) for r in found]


def _check_emoji(emoji: str) -> str:
    emoji = emoji.strip()
    if not emoji or len(emoji) > MAX_EMOJI or any(c.isspace() for c in emoji):
        raise InvalidRequest(
            f"emoji must be 1 to {MAX_EMOJI} characters without spaces, e.g. 👍 or :+1:"
        )
    return emoji


@action()
async def react(
    ctx: ActionContext,
    id: Annotated[str, "id of the message to react to"],
    emoji: Annotated[str, "the reaction, e.g. 👍, ✅, 👀"],
    remove: Annotated[bool, "take your reaction away instead of adding it"] = False,
) -> dict[str, Any]:
    """React to a message you can see with an emoji (or remove your reaction).

    The message's sender is told when you add one. Returns every reaction on the message.
    """
    emoji = _check_emoji(emoji)
    message = await ctx.hub.store.get_message(id)
    if message is None or (
        message.sender != ctx.peer.key and ctx.peer.key not in message.recipients
    ):
        raise NotFound(f"no message {id} that you can see")
    me = ctx.peer.key
    key = reaction_key(id, me, emoji)
    records = ctx.hub.records
    if remove:
        changed = await records.delete("reactions", key)
    else:
        try:
            await records.create("reactions", key, {"message_id": id, "peer": me,
                                                    "emoji": emoji})
            changed = True
        except Conflict:  # reacted so already
            changed = False
    rows = [(emo, peer) for _m, emo, peer in await _on(ctx.hub, [id])]
    peers = ctx.hub.directory.peers
    reactions: dict[str, list[str]] = {}
    for emo, peer in rows:
        reactions.setdefault(emo, []).append(peers[peer].name if peer in peers else peer)
    if changed:
        ctx.hub.spawn(ctx.hub.plugins.each(
            "meshhub_reaction_changed", hub=ctx.hub, message=message, peer=ctx.peer,
            emoji=emoji, added=not remove, by=[p for e, p in rows if e == emoji]))
    notified = None
    if changed and not remove and message.sender != me and message.sender in peers:
        preview = " ".join(message.body.split())[:60]
        try:
            await ctx.hub.send(
                ctx.peer, message.sender, f"reacted {emoji} to your message {id}: "
                f"\"{preview}\"", kind="reaction", data={"message_id": id, "emoji": emoji},
            )
            notified = peers[message.sender].name
        except (RateLimited, QuotaExceeded):
            pass  # the reaction stands; only the courtesy message to its author is not sent
    return {"id": id, "changed": changed, "reactions": reactions, "notified": notified}


@action(cap="read")
async def reactions(
    ctx: ActionContext, ids: Annotated[list[str], "ids of messages you can see (at most 200)"]
) -> dict[str, dict[str, list[str]]]:
    """The reactions on messages you can see: message id -> emoji -> names of who reacted.
    Messages without reactions, or that you cannot see, are left out."""
    if len(ids) > MAX_LOOKUP:
        raise InvalidRequest(f"at most {MAX_LOOKUP} ids at a time")
    me = ctx.peer.key
    visible = []
    for message_id in dict.fromkeys(ids):
        message = await ctx.hub.store.get_message(message_id)
        if message is not None and (message.sender == me or me in message.recipients):
            visible.append(message_id)
    if not visible:
        return {}
    peers = ctx.hub.directory.peers
    out: dict[str, dict[str, list[str]]] = {}
    for message_id, emoji, peer in await _on(ctx.hub, visible):
        out.setdefault(message_id, {}).setdefault(emoji, []).append(
            peers[peer].name if peer in peers else peer)
    return out


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(REACTIONS)


@hookimpl
def meshhub_register_migrations(register: Callable[[Migrations], None]) -> None:
    from .sqlite_upgrade_reactions import reaction_migrations  # it names REACTIONS

    register(reaction_migrations)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    register(react)
    register(reactions)
