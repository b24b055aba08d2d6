"""What the coordination plugins (tasks, decisions, proposals, verifications, artifacts)
share: sending a notice of a saved change, the membership check on a #conversation, and the
names shown for peers.

A notice carries peers' text (a title, a claim, a decision's value), so it goes to exactly the
keys its plugin chose: an ``@name`` written in that text must not make its owner a recipient.
And it is sent after the change is saved, so a refused notice (rate, quota, size, a peer
gone) leaves the change standing: it is logged, and the plugin's listing action still shows
the change to everyone concerned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from meshhub.actions import ActionContext
from meshhub.errors import Forbidden, MeshError

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Conversation, Peer

log = logging.getLogger(__name__)


async def notify(hub: Hub, sender: Peer, keys: Iterable[str], body: str, *, kind: str,
                 data: dict[str, Any], reply_to: str | None = None,
                 message_id: str | None = None) -> str | None:
    """Send a notice of kind ``kind`` from ``sender`` to exactly the ``keys`` that are peers
    of the mesh (no ``@name`` in ``body`` adds anyone); the id of the message sent, or
    ``None`` when there was nobody to tell or the hub refused it."""
    told = [k for k in dict.fromkeys(keys) if k in hub.directory.peers]
    if not told:
        return None
    try:
        sent = await hub.send(sender, told, body, kind=kind, data=data, reply_to=reply_to,
                              message_id=message_id, mentions_from_body=False)
    except MeshError as refused:
        log.warning("a %s notice from %s was not sent (%s): %s", kind, sender.name,
                    refused.code, refused)
        return None
    return str(sent["id"])


def conversation_of(hub: Hub, label: str | None) -> Conversation | None:
    """The conversation a stored ``#name`` label names, if it still exists."""
    return hub.directory.conversations.get(str(label or "").lstrip("#"))


def member_conversation(ctx: ActionContext, name: str, what: str) -> Conversation:
    """The #conversation ``name``, refused (``forbidden``) to whoever is neither one of its
    members nor the hub's owner: ``what`` says what its members share there."""
    conv: Conversation = ctx.hub.directory.conversation(name.strip())
    if ctx.peer.key not in conv.members and not ctx.is_admin:
        raise Forbidden(f"the {what} of #{conv.name} are for its members; join it first "
                        f"(conversation_join #{conv.name})")
    return conv


def peer_name(hub: Hub, key: str) -> str:
    """A peer's name, or its key when it is no longer in the mesh."""
    peer = hub.directory.peers.get(key)
    return peer.name if peer is not None else key
