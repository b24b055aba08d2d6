"""The public JSON shapes of a message and of a peer: one of each, on every surface.

A WebSocket push, every action result (HTTP, MCP, ``hub call``), ``hub inbox --json`` and
``hub watch --json`` show a message as :func:`message_view` builds it, and a peer as
:func:`peer_view` builds it; docs/protocol.md ("Messages and peers as JSON") is their
reference. ``v`` is the shape's version: a change that removes or renames a key bumps it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Message, Peer
    from .store import ThreadSummary

SHAPE_VERSION = 1


def message_view(message: Message, peers: dict[str, Peer]) -> dict[str, Any]:
    """A message as every reader sees it: the same keys, always present, for every reader."""
    # by hand, not dataclasses.asdict: this runs once per pushed message
    sender = peers.get(message.sender)
    return {
        "v": SHAPE_VERSION,
        "id": message.id,
        "from": sender.name if sender else message.sender,
        "from_key": message.sender,
        "to": message.target,
        "conversation": message.conversation,
        "text": message.body,
        "kind": message.kind,
        "reply_to": message.reply_to,
        "priority": message.priority,
        "mentions": _names(message.mentions, peers),
        "whisper": _names(message.whisper, peers),
        "attachments": list(message.attachments),
        "data": message.data,
        "created_at": message.created_at,
    }


def thread_view(summary: ThreadSummary, root_sender: str,
                peers: dict[str, Peer]) -> dict[str, Any]:
    """A thread root's summary as its reader sees it (the ``threads`` beside ``messages``):
    ``replies`` it can see, ``last_reply_at`` and ``last_reply_by`` (a name), ``participants``
    (the root's sender, then whoever replied, by first reply) and its ``unread`` replies."""
    return {
        "replies": summary.replies,
        "last_reply_at": summary.last_reply_at,
        "last_reply_by": _names([summary.last_reply_by], peers)[0]
        if summary.last_reply_by else None,
        "participants": _names(list(dict.fromkeys([root_sender, *summary.participants])),
                               peers),
        "unread": summary.unread,
    }


def _names(keys: list[str], peers: dict[str, Peer]) -> list[str]:
    return [peers[k].name if k in peers else k for k in keys] if keys else []


def peer_view(peer: Peer, *, online: bool, reach: str, surfaces: list[str] | None = None,
              you: bool = False) -> dict[str, Any]:
    """A peer as others see it (its secret identity string is never shown).

    ``status``: what it set (``offline`` once it has gone, for a peer that connects to
    receive). ``online``: it has a receiving connection (or lost it less than the grace window ago).
    ``reach``: how a message sent to it now arrives: ``live`` (pushed at once), ``connector``
    (a chat connector such as Telegram hands it over) or ``inbox`` (it waits until the peer
    connects or reads its inbox). ``surfaces``: what it is live on now, from its receiving
    connections (``["cli", "web"]``); ``connector`` is the surface it joined on. ``you``: this
    is the peer asking.
    """
    return {
        "v": SHAPE_VERSION,
        "key": peer.key,
        "name": peer.name,
        "kind": peer.kind,
        "connector": peer.connector,
        "role": peer.role,
        "groups": dict(peer.groups),
        "status": peer.status,
        "online": online,
        "reach": reach,
        "surfaces": list(surfaces or ()),
        "summary": peer.summary,
        "public_key": peer.public_key,
        "member_key": peer.member_key,
        "created_at": peer.created_at,
        "last_seen": peer.last_seen,
        "you": you,
    }


def presence_text(peer: dict[str, Any], now: float | None = None) -> str:
    """How a peer (in the peer shape) can be reached now, in a few words for people: its status
    while connected; ``via telegram`` for a peer a connector bridges; else ``inbox, seen 3 min
    ago`` (messages wait in its inbox: it is reachable, not broken)."""
    if peer["reach"] == "live" or peer["online"]:
        return str(peer["status"])
    if peer["reach"] == "connector":
        status = "" if peer["status"] in ("online", "offline") else f", {peer['status']}"
        return f"via {peer['connector']}{status}"
    seen = f", seen {ago(peer['last_seen'], now)}" if peer.get("last_seen") else ""
    return f"inbox{seen}"


def ago(ts: float, now: float | None = None) -> str:
    """``just now``, ``40 s ago``, ``3 min ago``, ``2 h ago``, ``4 d ago``."""
    seconds = max(0.0, (time.time() if now is None else now) - ts)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now" if seconds < 5 else f"{int(seconds)} s ago"
