"""Actions for who may get in: invites and members (the owner's), and bearer tokens (each
member's own). The rules themselves live in :mod:`meshhub.members`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from meshhub import hookimpl, members
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden
from meshhub.fields import MAX_GROUPS, MAX_LABEL, MAX_ROLE

Duration = Annotated[str | None, "how long it lasts: 30d, 24h, 90m, 45s, or never"]


def _not_with_a_token(ctx: ActionContext) -> None:
    """Tokens are managed with the member's key (`hub token ...`), never with a token: a token
    cannot outlive itself through a child, nor wipe out its member's other tokens."""
    if ctx.token is not None:
        raise Forbidden("tokens are created and revoked with your key (hub token ...), not "
                        "with a token")


@action(admin=True)
async def invite_create(
    ctx: ActionContext,
    uses: Annotated[int, "how many people may join with it"] = 1,
    expires: Duration = "24h",
    role: Annotated[str, "the role its members' peers start with", Field(max_length=MAX_ROLE)]
    = "",
    groups: Annotated[dict[str, Annotated[str, Field(max_length=MAX_ROLE)]] | None,
                      "groups its members start in (group: role)",
                      Field(max_length=MAX_GROUPS)] = None,
) -> dict[str, Any]:
    """Create an invite code that lets new members join this hub (`hub join CODE`). The code is
    shown once; only its hash is kept."""
    invite, code = await members.create_invite(
        ctx.hub, ctx.peer, uses=uses, expires_in=members.parse_duration(expires), role=role,
        groups=groups or {},
    )
    return dict(invite.public(), code=code)


@action(admin=True)
async def invites(
    ctx: ActionContext,
    state: Annotated[Literal["usable", "all"], "only invites that still work, or all"]
    = "usable",
) -> list[dict[str, Any]]:
    """The hub's invites, newest first, with what they allow and why an unusable one is."""
    now = time.time()
    out = []
    for invite in sorted(ctx.hub.directory.invites.values(), key=lambda i: -i.created_at):
        problem = invite.problem(now)
        if state == "usable" and problem is not None:
            continue
        out.append(dict(invite.public(), usable=problem is None, problem=problem))
    return out


@action(admin=True)
async def invite_revoke(
    ctx: ActionContext, invite: Annotated[str, "the invite's id or its code"]
) -> dict[str, Any]:
    """Revoke an invite: nobody else can join with it (members who joined stay)."""
    found = members.find_invite(ctx.hub, invite)
    if found.revoked_at is None:
        found.revoked_at = time.time()
        await ctx.hub.directory.save_invite(found)
        await ctx.hub.audit.append("invite_revoked", ctx.peer, subject=found.id)
    return found.public()


@action(read_only=True)
async def members_list(
    ctx: ActionContext,
    removed: Annotated[bool, "include removed members"] = False,
) -> list[dict[str, Any]]:
    """The hub's members: name, key, how they joined, their peers and who is online."""
    hub = ctx.hub
    out = []
    for member in hub.directory.members.values():
        if member.removed_at is not None and not removed:
            continue
        peers = hub.directory.peers_of(member.key)
        out.append(dict(
            member.public(),
            owner=member.key == hub.owner_key,
            peers=[p.name for p in peers],
            online=sum(1 for p in peers if hub.presence.is_online(p.key)),
        ))
    return out


@action(admin=True)
async def member_remove(
    ctx: ActionContext, member: Annotated[str, "the member's name, key, or one of its peers"]
) -> dict[str, Any]:
    """Remove a member: its connections close now, its tokens and sessions end, its peers
    leave the mesh, and its key is refused from then on (a new invite lets it back)."""
    return await members.remove_member(ctx.hub, members.find_member(ctx.hub, member),
                                       ctx.peer)


@action()
async def token_create(
    ctx: ActionContext,
    label: Annotated[str, "what the token is for", Field(max_length=MAX_LABEL)] = "default",
    cap: Annotated[Literal["read", "send", "admin"],
                   "the most it may do: read, send (what you do), admin (owner actions too)"]
    = "send",
    expires: Duration = None,
) -> dict[str, Any]:
    """Create a bearer token that acts as you on the HTTP API and /mcp. Shown once; only its
    hash is kept."""
    _not_with_a_token(ctx)
    token, info = await members.create_token(
        ctx.hub, ctx.peer, label=label, cap=cap, held=ctx.cap,
        expires_in=members.parse_duration(expires),
    )
    return dict(info.public(), token=token, peer=ctx.peer.name)


@action(read_only=True)
async def token_list(ctx: ActionContext) -> list[dict[str, Any]]:
    """Your live bearer tokens (id, label, cap, expiry); never the tokens themselves."""
    return [t.public() for t in await ctx.hub.store.list_tokens([ctx.peer.key], time.time())]


@action()
async def token_revoke(
    ctx: ActionContext,
    label: Annotated[str | None, "revoke only tokens with this label"] = None,
    id: Annotated[str | None, "revoke only the token with this id"] = None,
) -> dict[str, Any]:
    """Revoke your bearer tokens (all, or by label or id); connections that use them close at
    once."""
    _not_with_a_token(ctx)
    return {"revoked": await members.revoke_tokens(ctx.hub, ctx.peer, label=label,
                                                   token_id=id)}


ALL: list[Action] = [invite_create, invites, invite_revoke, members_list, member_remove,
                     token_create, token_list, token_revoke]


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)
