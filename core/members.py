"""Members: who is let in, how they join, how they are removed, and their bearer tokens.

A connection is admitted as one of (docs/security.md):

* an enrolled member key, or a session key attested by one (:mod:`meshhub.builtins.hello_auth`);
* a key that comes with a valid invite code (``hub join``), which enrolls it;
* any key of a process of the hub's own OS user on the hub's machine, through the local socket
  (:mod:`meshhub.admission`), which enrolls it too;
* a bearer token of an enrolled member;
* a peer some plugin vouched for (its ``meshhub_authenticate_hello`` proof names no member key,
  or a connector such as Telegram admits a paired person inside the hub).

Everything else is refused with ``not_enrolled`` and nothing about it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from .admission import hash_token, invite_hash, new_invite_code, new_token
from .directory import NameTaken, check_group, check_name
from .errors import AuthFailed, Forbidden, InvalidRequest, MeshError, NotFound, Unauthorized
from .models import Invite, Member
from .store import CAPS, TokenInfo

if TYPE_CHECKING:
    from .hub import Hub
    from .models import Peer

log = logging.getLogger(__name__)
NOT_ENROLLED = ("this key is not a member of this hub: ask the hub's owner for an invite "
                "(`hub invite`), then run `hub join CODE --hub URL --name NAME`")
CLOSE_REMOVED = 4003
CLOSE_REVOKED = 4001
MAX_USES = 1000


def allows(held: str, needed: str) -> bool:
    return CAPS.index(held) >= CAPS.index(needed)


def member_cap(hub: Hub, peer: Peer) -> str:
    return "admin" if hub.is_admin(peer) else "send"


# -- admission ----------------------------------------------------------------------------------
async def admit(hub: Hub, proof: dict[str, Any], hello: dict[str, Any], *,
                local: bool) -> Member | None:
    """The member a verified hello is admitted as; ``None`` when a plugin vouched for it.

    Raises :class:`AuthFailed` (``not_enrolled``, ``removed``, ``bad_invite``...) or
    :class:`NameTaken` before anything is stored.
    """
    member_key = proof.get("member_key")
    if member_key is None:
        return None
    directory = hub.directory
    member = directory.member(member_key)
    if member is not None:
        return member
    code = hello.get("invite")
    invited = isinstance(code, str) and bool(code)
    if invited:
        usable_invite(hub, str(code))  # a bad code is told so before anything about names
    else:
        known = directory.members.get(member_key)
        if known is not None and known.removed_at is not None:
            raise AuthFailed("this key was removed from the hub; only a new invite lets it "
                             "back in", code="removed")
        if not local:
            raise AuthFailed(NOT_ENROLLED, code="not_enrolled")
    # it is going to be enrolled: its names must be possible before anything is stored
    peer_name = name = check_name(hello.get("name"))
    wanted = hello.get("member_name")  # a session's hello names its member too
    if isinstance(wanted, str) and wanted != name:
        with contextlib.suppress(MeshError):
            _check_free(hub, check_name(wanted), member_key)
            name = wanted
    directory.claim_name(peer_name, member_key)  # the peer this hello goes on to register
    if invited:
        return await redeem_invite(hub, str(code), member_key, name)
    _check_free(hub, name, member_key)
    member = await directory.enroll(Member(key=member_key, name=name, via="local",
                                           created_at=time.time()))
    await hub.audit.append("member_joined", member, subject=member.name, via="local")
    return member


def _check_free(hub: Hub, name: str, member_key: str) -> None:
    """The name a new member asks for is free, reads as nobody else's session, and no other
    member's peer already reads as one of its sessions (``ann`` after ``ann-b`` exists)."""
    directory = hub.directory
    directory.claim_name(name, member_key)  # refuses a name another member or peer holds
    prefix = name.lower() + "-"
    if any(p.name.lower().startswith(prefix) and p.member_key != member_key
           for p in directory.peers.values()):
        raise NameTaken(f"another member's peer is named {name}-...; a member named {name!r} "
                        "would seem to own it: choose another with --name", name=name)


async def enroll_owner(hub: Hub, key: str, name: str) -> None:
    """The hub's own key is always a member (``owner``), under the hub's configured name. When
    that name is held by someone else (a hub from before admission, where a stranger took it),
    the owner gets it back and the other holder is renamed, with a warning."""
    directory = hub.directory
    known = directory.members.get(key)
    if known is not None and known.via == "owner":
        return
    # first start as the owner: a new hub, or one upgraded from before admission (where the
    # owner may have been enrolled as an existing key under a numbered name)
    if not directory.name_free(name, key):
        log.warning("the owner's name %r was held by another member or peer; it is the "
                    "owner's again and the other holder was renamed (see hub members list)",
                    name)
        for held, renamed in await directory.give_up_name(name, keep=key):
            await hub.audit.append("owner_name_reclaimed", None, subject=name, key=held,
                                   renamed_to=renamed)
    owner = await directory.enroll(Member(key=key, name=name, via="owner",
                                          created_at=known.created_at if known else time.time()))
    await hub.audit.append("member_joined", owner, subject=owner.name, via="owner")


# -- invites ------------------------------------------------------------------------------------
async def create_invite(hub: Hub, creator: Peer, *, uses: int, expires_in: float | None,
                        role: str, groups: dict[str, str]) -> tuple[Invite, str]:
    if not 1 <= uses <= MAX_USES:
        raise InvalidRequest(f"uses must be between 1 and {MAX_USES}")
    if expires_in is not None and expires_in <= 0:
        raise InvalidRequest("an invite must expire in the future")
    groups = {check_group(g): r for g, r in groups.items()}
    code = new_invite_code()
    now = time.time()
    invite = Invite(id=secrets.token_hex(4), code_hash=invite_hash(code), created_by=creator.key,
                    uses=uses, role=role, groups=groups,
                    expires_at=None if expires_in is None else now + expires_in, created_at=now)
    await hub.directory.save_invite(invite)
    await hub.audit.append("invite_created", creator, subject=invite.id, uses=uses,
                           groups=len(groups))
    return invite, code


def usable_invite(hub: Hub, code: str) -> Invite:
    """The invite with this code, if it can still be used; else why not."""
    invite = hub.directory.invites.get(invite_hash(code))
    if invite is None:
        raise AuthFailed("no invite has this code; check it with the person who gave it",
                         code="bad_invite")
    problem = invite.problem(time.time())
    if problem is not None:
        raise AuthFailed(f"{problem}; ask for a new one", code="invite_refused")
    return invite


async def redeem_invite(hub: Hub, code: str, member_key: str, name: str) -> Member:
    directory = hub.directory
    invite = usable_invite(hub, code)
    _check_free(hub, name, member_key)
    invite.used += 1  # counted before the first await: two joins cannot share the last use
    member = Member(key=member_key, name=name, via="invite", role=invite.role,
                    groups=dict(invite.groups), invite=invite.id, created_at=time.time())
    directory.members[member_key] = member
    await directory.save_invite(invite)
    enrolled = await directory.enroll(member)
    await hub.audit.append("member_joined", enrolled, subject=enrolled.name, via="invite",
                           invite=invite.id)
    return enrolled


def find_invite(hub: Hub, id_or_code: str) -> Invite:
    invites = hub.directory.invites
    found = invites.get(invite_hash(id_or_code)) or next(
        (i for i in invites.values() if i.id == id_or_code), None)
    if found is None:
        raise NotFound(f"no invite {id_or_code!r} (see `hub invites list`)")
    return found


# -- removal ------------------------------------------------------------------------------------
def find_member(hub: Hub, who: str) -> Member:
    """A member by its name, its key (or a prefix of 8 or more), or the name of one of its
    peers."""
    text = who.strip().lstrip("@")
    members = [m for m in hub.directory.members.values() if m.removed_at is None]
    for member in members:
        if member.name.lower() == text.lower() or member.key == text:
            return member
    if len(text) >= 8:
        prefixed = [m for m in members if m.key.startswith(text.lower())]
        if len(prefixed) == 1:
            return prefixed[0]
    peer = hub.directory.find(text)
    owner = hub.directory.member(peer.member_key) if peer is not None else None
    if owner is not None:
        return owner
    raise NotFound(f"no member {who!r} (see `hub members list`)")


async def remove_member(hub: Hub, member: Member, by: Peer | None) -> dict[str, Any]:
    """End a member (``by`` whom: ``None`` is the hub itself): refused at its next hello, its
    live connections closed now, its tokens revoked and its peers taken out of the mesh (their
    names are free again)."""
    if member.key == hub.owner_key:
        raise Forbidden("the hub's owner cannot be removed")
    member.removed_at = time.time()
    await hub.directory.enroll(member)
    peers = hub.directory.peers_of(member.key)
    tokens = 0
    for peer in peers:
        tokens += len(await hub.store.revoke_tokens(peer.key))
    keys = {p.key for p in peers}
    # all at once: a peer that stopped reading must not hold up the others' close handshakes
    await asyncio.gather(*(conn.close(code=CLOSE_REMOVED, message="removed from the hub")
                           for conn in hub.presence.all_connections() if conn.peer.key in keys))
    for peer in peers:
        await hub.directory.forget(peer)
    await hub.audit.append("member_removed", by, subject=member.name, key=member.key,
                           tokens_revoked=tokens)
    return {"member": member.name, "key": member.key, "peers": [p.name for p in peers],
            "tokens_revoked": tokens}


# -- tokens -------------------------------------------------------------------------------------
async def create_token(hub: Hub, peer: Peer, *, label: str, cap: str, held: str,
                       expires_in: float | None) -> tuple[str, TokenInfo]:
    """A new token for ``peer``; it can never do more than its creator (``held``) can."""
    if hub.directory.member(peer.member_key) is None:
        raise Forbidden("tokens are for members of the hub (bridged people act through their "
                        "connector)")
    if not allows(held, cap) or not allows(member_cap(hub, peer), cap):
        raise Forbidden(f"you cannot create a token with cap {cap!r}; at most "
                        f"{min(held, member_cap(hub, peer), key=CAPS.index)!r}")
    if expires_in is not None and expires_in <= 0:
        raise InvalidRequest("a token must expire in the future")
    token, token_id = new_token()
    now = time.time()
    info = TokenInfo(id=token_id, peer=peer.key, label=label, cap=cap, created_at=now,
                     expires_at=None if expires_in is None else now + expires_in,
                     token_hash=hash_token(token))
    await hub.store.save_token(info)
    await hub.audit.append("token_created", peer, subject=info.id, label=label, cap=cap)
    return token, info


async def token_peer(hub: Hub, token: str) -> tuple[Peer, str, str]:
    """``(peer, cap, token_hash)`` for a live token of an enrolled member; raises
    :class:`Unauthorized` otherwise. Only hashes are stored; the lookup is by SHA-256 of a
    256-bit secret, so its timing tells an attacker nothing about other tokens."""
    token_hash = hash_token(token.strip())
    info = await hub.store.token_info(token_hash, time.time())
    peer = hub.directory.peers.get(info.peer) if info is not None else None
    if info is None or peer is None or hub.directory.member(peer.member_key) is None:
        raise Unauthorized("unknown, expired or revoked token (create one: hub token create)")
    cap = min(info.cap, member_cap(hub, peer), key=CAPS.index)
    return peer, cap, token_hash


async def revoke_tokens(hub: Hub, peer: Peer, *, label: str | None = None,
                        token_id: str | None = None) -> int:
    """Revoke tokens and close every connection that came in with one of them; then log it
    (a log that fails must not leave a revoked token's connection open)."""
    hashes = set(await hub.store.revoke_tokens(peer.key, label=label, token_id=token_id))
    await asyncio.gather(*(conn.close(code=CLOSE_REVOKED, message="token revoked")
                           for conn in hub.presence.all_connections()
                           if conn.token_hash in hashes))
    if hashes:
        await hub.audit.append("token_revoked", peer, subject=token_id or label or "all",
                               count=len(hashes))
    return len(hashes)


def parse_duration(text: str | None) -> float | None:
    """``30d``, ``24h``, ``90m``, ``45s`` or plain seconds; ``never``/empty for no expiry."""
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    value = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    scale = units.get(value[-1], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise InvalidRequest(f"bad duration {text!r}: write 30d, 24h, 90m or 45s") from None
    if not 0 < seconds < 100 * 365 * 86400:
        raise InvalidRequest(f"bad duration {text!r}: more than zero, less than 100 years")
    return seconds
