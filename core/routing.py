"""Target resolution: from a target spec as written to a deduplicated list of recipients.

Tokens (a list, or one string separated by commas or spaces):

- ``*`` or ``@all``: every peer but the sender (broadcast);
- ``@group``: every peer in the group or a subgroup (``@a`` reaches ``@a/b``), but the sender;
- ``#conversation``: its members but the sender (the sender joins it by sending);
- an 8-hex peer key or a display name (case-insensitive): that peer, the sender included, so a
  session can DM its own other sessions; a member's name also reaches the chat accounts that
  member linked, as it chose (:mod:`meshhub.reach`).

A token nobody answers to is refused with the closest known names: nothing is queued for nobody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import InvalidRequest, UnknownTarget
from .ids import is_peer_key
from .reach import member_reach

if TYPE_CHECKING:
    from .hub import Hub
    from .models import Message, Peer

MENTION_RE = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9_]|[A-Za-z0-9])")
MAX_TOKENS = 100


@dataclass
class Route:
    recipients: list[str]
    conversation: str
    target: str
    mentioned: set[str] = field(default_factory=set)
    whisper: list[str] = field(default_factory=list)


def split_targets(to: str | list[str] | None) -> list[str]:
    if to is None:
        return []
    items = [to] if isinstance(to, str) else list(to)
    tokens: list[str] = []
    for item in items:
        tokens += item.replace(",", " ").split()
    if len(tokens) > MAX_TOKENS:
        raise InvalidRequest(f"too many targets ({len(tokens)}); at most {MAX_TOKENS}")
    return tokens


def refuse_archived(hub: Hub, name: str) -> None:
    """Nobody sends to an archived conversation (it stays readable)."""
    conv = hub.directory.conversations.get(name)
    if conv is not None and conv.archived:
        raise InvalidRequest(f"#{conv.name} is archived: nothing can be sent to it; its "
                             "creator or the hub's owner can reopen it with "
                             f"conversation_unarchive #{conv.name}", code="archived")


async def resolve_token(hub: Hub, token: str, sender: Peer) -> tuple[list[str], str]:
    """Recipients and conversation label for one token."""
    if hub.plugins.has_impls("meshhub_resolve_target"):
        plugin_answer = await hub.plugins.first("meshhub_resolve_target", hub=hub, token=token,
                                                sender=sender)
        if plugin_answer is not None:
            return list(plugin_answer), token
    directory = hub.directory
    if token in ("*", "@all"):
        return [k for k in directory.peers if k != sender.key], "*"
    if token.startswith("@"):
        group = token[1:]
        members = [p.key for p in directory.peers.values() if p.in_group(group)]
        others = [k for k in members if k != sender.key]
        if not members:
            known = sorted(directory.groups())
            raise UnknownTarget(
                f"nobody is in @{group}; known groups: "
                f"{', '.join('@' + g for g in known) if known else 'none yet'}"
            )
        return others, token
    if token.startswith("#"):
        conv = directory.conversation(token)
        refuse_archived(hub, conv.name)
        await directory.join(conv, sender.key)
        return [k for k in sorted(conv.members) if k != sender.key], "#" + conv.name
    peer = directory.peers.get(token) if is_peer_key(token) else None
    peer = peer or directory.find(token)
    if directory.linked:  # some member linked a chat account: its name may reach it there
        member = directory.member_named(token)
        if member is not None and directory.linked.get(member.key):
            keys = member_reach(hub, member, peer, sender)
            if keys:
                return keys, "dm"
    if peer is None:
        close = directory.closest_names(token)
        raise UnknownTarget(
            f"no peer named {token!r}; closest known: {', '.join(close) or 'none'}",
            closest=close,
        )
    return [peer.key], "dm"


async def resolve_peers(hub: Hub, names: list[str], sender: Peer, what: str) -> list[str]:
    keys: list[str] = []
    for name in names:
        peer = hub.directory.find(name.lstrip("@"))
        if peer is None:
            close = hub.directory.closest_names(name.lstrip("@"))
            raise UnknownTarget(
                f"{what}: no peer named {name!r}; closest known: {', '.join(close) or 'none'}",
                closest=close,
            )
        if peer.key not in keys:
            keys.append(peer.key)
    return keys


async def resolve(
    hub: Hub,
    sender: Peer,
    to: str | list[str] | None,
    *,
    body: str,
    mentions: list[str] | None = None,
    whisper: list[str] | None = None,
    root: Message | None = None,
    mentions_from_body: bool = True,
) -> Route:
    """Who a message reaches. Each ``@name`` of a known peer in ``body`` is a mention and
    a recipient, unless ``mentions_from_body`` is false (only ``mentions`` count then)."""
    tokens = split_targets(to)
    recipients: list[str] = []
    labels: list[str] = []
    if tokens:
        for token in tokens:
            keys, label = await resolve_token(hub, token, sender)
            labels.append(label)
            recipients += [k for k in keys if k not in recipients]
        conversation = labels[0] if len(set(labels)) == 1 else "multi"
        target = ",".join(tokens)
    elif root is not None:
        if root.conversation.startswith("#"):
            refuse_archived(hub, root.conversation[1:])
        # a reply with no target goes to everyone in the thread but the replier
        conversation, target = root.conversation, f"thread:{root.id}"
        for key in [root.sender, *root.recipients]:
            if key != sender.key and key not in recipients and key in hub.directory.peers:
                recipients.append(key)
    else:
        raise InvalidRequest("say who the message is for: a name, key, @group, #conversation or *")

    whisper_keys: list[str] = []
    if whisper:
        whisper_keys = await resolve_peers(hub, whisper, sender, "whisper")
        outside = [hub.directory.peers[k].name for k in whisper_keys if k not in recipients]
        if outside:
            raise InvalidRequest(
                f"whisper recipients must be among the message's recipients: {', '.join(outside)}"
            )
        recipients = whisper_keys

    mentioned = set(await resolve_peers(hub, mentions or [], sender, "mention"))
    scanned = mentions_from_body and "@" in body
    for name in MENTION_RE.findall(body) if scanned else ():
        peer = hub.directory.find(name)
        if peer is not None:
            mentioned.add(peer.key)
    mentioned.discard(sender.key)
    if not whisper_keys:
        recipients += [k for k in sorted(mentioned) if k not in recipients]
    else:
        mentioned &= set(whisper_keys)
    if not recipients:
        raise UnknownTarget(
            f"{target} reaches nobody but you: nothing was sent",
            code="no_recipient",
        )
    return Route(
        recipients=recipients,
        conversation=conversation,
        target=target,
        mentioned=mentioned,
        whisper=whisper_keys,
    )
