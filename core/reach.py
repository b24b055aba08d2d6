"""How a message to a member reaches the person, wherever they are.

A member links its own chat accounts (``hub pair telegram`` run by the member: see
:mod:`meshhub.bridge.pairing`); each is a peer of that member on its connector (``ann-telegram``),
so an answer from it counts as the member's. A message addressed to the member's name then
reaches, by the member's choice (``hub surfaces``):

* ``auto`` (the default): the member's own peer, and its linked chat surfaces too while none
  of its human sessions (a terminal's ``hub watch``, the web page) is live. Its agent sessions
  do not count: a Claude Code session left running says nothing about where the person is;
* ``always``: its own peer and every linked surface;
* ``never``: its own peer only (the chat surfaces still get approvals and can talk).

A linked surface the member switched off (``hub surfaces off ann-telegram``) gets nothing
addressed to the member. A message to a surface's own name (``ann-telegram``) always reaches it.
Approval requests are not routed by this choice: they go to every human surface of the
approver (:mod:`meshhub.builtins.approvals`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .directory import is_linked_surface
from .models import REACH_MODES

if TYPE_CHECKING:
    from .hub import Hub
    from .models import Member, Peer


def reach_mode(member: Member) -> str:
    mode = member.prefs.get("reach", "auto")
    return mode if mode in REACH_MODES else "auto"


def surfaces_of(hub: Hub, member: Member) -> list[Peer]:
    """The member's linked chat surfaces that it has not switched off."""
    muted = set(member.prefs.get("muted", ()))
    peers = hub.directory.peers
    keys = hub.directory.linked.get(member.key, ())
    return sorted((peers[k] for k in keys if k in peers and k not in muted),
                  key=lambda p: p.name)


def human_sessions(hub: Hub, member: Member) -> list[Peer]:
    """The member's peers a person reads directly: its own terminal and web page peers."""
    return [p for p in hub.directory.peers_of(member.key)
            if p.kind != "agent" and not is_linked_surface(p)]


def member_reach(hub: Hub, member: Member, named: Peer | None, sender: Peer) -> list[str]:
    """The peer keys a message to ``member`` goes to; ``named`` is the peer holding the
    member's name, if any."""
    base = [named.key] if named is not None else []
    mode = reach_mode(member)
    if mode == "never":
        return base
    linked = [p.key for p in surfaces_of(hub, member) if p.key != sender.key]
    if mode == "auto" and any(hub.presence.is_receiving(p.key)
                              for p in human_sessions(hub, member)):
        return base
    return base + [k for k in linked if k not in base]
