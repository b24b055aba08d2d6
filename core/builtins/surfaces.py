"""``surfaces`` and ``surfaces_set``: where a member is reached (:mod:`meshhub.reach`).

A member's surfaces are its sessions (terminal, web page, agent sessions) and the chat accounts
it linked to itself (``hub pair telegram``). ``surfaces_set`` chooses when the linked accounts
get what is addressed to the member (``auto``, ``always``, ``never``) and switches one of them
off or on again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.directory import is_linked_surface
from meshhub.errors import Forbidden, InvalidRequest, NotFound
from meshhub.reach import reach_mode

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Member, Peer


def _member(ctx: ActionContext) -> Member:
    member = ctx.hub.directory.member(ctx.peer.member_key)
    if member is None:
        raise Forbidden("only a member has surfaces; you are reached as yourself")
    return member


def _row(hub: Hub, member: Member, peer: Peer) -> dict[str, Any]:
    linked = is_linked_surface(peer)
    return {
        "name": peer.name, "key": peer.key, "connector": peer.connector, "kind": peer.kind,
        "type": "linked" if linked else "session",
        "online": hub.presence.is_online(peer.key) if not linked else None,
        "on": peer.key not in member.prefs.get("muted", ()),
    }


def listing(hub: Hub, member: Member) -> dict[str, Any]:
    peers = sorted(hub.directory.peers_of(member.key),
                   key=lambda p: (is_linked_surface(p), p.name))
    return {"member": member.name, "reach": reach_mode(member),
            "surfaces": [_row(hub, member, p) for p in peers]}


@action(read_only=True)
async def surfaces(ctx: ActionContext) -> dict[str, Any]:
    """Your surfaces: your sessions and the chat accounts you linked, and when the linked
    accounts get what is sent to you (``reach``)."""
    return listing(ctx.hub, _member(ctx))


@action()
async def surfaces_set(
    ctx: ActionContext,
    reach: Annotated[Literal["auto", "always", "never"] | None,
                     "when your linked chat accounts get messages sent to you: auto (while "
                     "none of your terminals or web pages is live), always, never"] = None,
    surface: Annotated[str | None, "a linked account to switch off or on (its name, e.g. "
                       "ann-telegram)"] = None,
    on: Annotated[bool | None, "with surface: true to switch it on, false off"] = None,
) -> dict[str, Any]:
    """Choose where messages sent to you arrive."""
    hub = ctx.hub
    member = _member(ctx)
    if ctx.peer.kind == "agent":
        raise Forbidden("an agent session cannot change where its member is reached")
    if reach is None and surface is None:
        raise InvalidRequest("say what to change: reach, or a surface and on")
    prefs = dict(member.prefs)
    if reach is not None:
        prefs["reach"] = reach
    if surface is not None:
        if on is None:
            raise InvalidRequest("say on=true or on=false for the surface")
        peer = hub.directory.find(surface)
        if peer is None or peer.member_key != member.key or not is_linked_surface(peer):
            names = ", ".join(p.name for p in hub.directory.peers_of(member.key)
                              if is_linked_surface(p))
            raise NotFound(f"{surface!r} is not a chat account you linked; yours: "
                           f"{names or 'none (link one with `hub pair telegram`)'}")
        muted = [k for k in prefs.get("muted", []) if k != peer.key]
        prefs["muted"] = muted if on else [*muted, peer.key]
    member.prefs = prefs
    await hub.directory.enroll(member)  # written through
    return listing(hub, member)


ALL: list[Action] = [surfaces, surfaces_set]


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)
