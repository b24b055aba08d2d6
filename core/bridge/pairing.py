"""Who a bridge lets in: one-time pairing codes, paired identities, linked group chats, and each
bridged person's current target. A built-in plugin (``pairing``) with its own tables.

Pairing: a member runs ``hub pair telegram`` (action ``pair_create``) and gets a code such as
``K7MX-4QPA``, valid for 10 minutes. Whoever sends it to the bot (``/pair K7MX-4QPA``) is let in
as the peer ``telegram:<user id>``:

* by default the account is **linked to the member who made the code**: its peer carries that
  member's key and is named after it (``ann-telegram``), so it is one more way to reach the
  member (:mod:`meshhub.reach`) and what it answers counts as the member's. Only a person's own
  terminal or web page makes such a code (never an agent session, which a peer's message could
  talk into handing one out);
* with ``new_person`` (``hub pair telegram --new-person``, the owner only) the account becomes
  a person of its own, a human named after their platform name (made unique).

Every wrong code spends one of the 5 attempts of every live code of that connector, so guessing
is bounded by 5 tries per issued code. Codes are stored hashed. ``pair_revoke`` shuts a paired
identity out again: its input is refused, what is still queued for it goes ``dead``, and a
linked account no longer speaks for its member.

The state is per hub (:meth:`PairingBook.of`), loaded at start-up and written through to the
record collections ``bridge_codes``, ``bridge_pairings``, ``bridge_targets`` and
``bridge_links`` (the tables from before them are moved by :mod:`.sqlite_upgrade_pairing`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden, InvalidRequest, NotFound
from meshhub.ids import new_id
from meshhub.models import SESSION_CONNECTORS
from meshhub.per_hub import PerHub
from meshhub.records import Collection, Conflict, Range, Where

from .slot import ConnectorSlot

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

    from meshhub.hub import Hub
    from meshhub.models import Peer

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
CODE_LENGTH = 8
CODE_TTL = 600.0
CODE_ATTEMPTS = 5
CLAIM_TRIES = 200  # claims of one connector at once that one claim waits behind at most
CODE_KEPT = 86400.0  # seconds a code is kept past its expiry (claimed ones are read by pair)
DEFAULT_TARGET = "#general"

# a code by its hash: connector, created_by, created_at, expires_at (when it stops working; the
# document itself goes CODE_KEPT later), attempts_left (when it was made), guesses_at (the wrong
# codes tried on its connector by then: see attempts_left()), used_by (the identity that
# claimed it), taken_at (the wrong codes tried by the time it was) and member_key (the member
# it links the account to)
CODES = Collection("bridge_codes", indexes=("connector", "used_by", "expires_at",
                                            "attempts_left"))
# an identity's pairing: connector, peer, paired_at, revoked_at, member_key
PAIRINGS = Collection("bridge_pairings", indexes=("connector", "paired_at"))
# a bridged person's current target, by peer key: target
TARGETS = Collection("bridge_targets")
# a linked group chat, by its identity: connector, peer, conversation, linked_by, linked_at
LINKS = Collection("bridge_links")
# by connector: wrong (how many wrong codes were ever tried there); every claim moves it
GUESSES = Collection("bridge_guesses")
COLLECTIONS = (CODES, PAIRINGS, TARGETS, LINKS, GUESSES)

def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def attempts_left(code: dict[str, Any], wrong: int) -> int:
    """A code's attempts left, ``wrong`` codes having been tried on its connector so far: each
    one tried since the code was made spent one."""
    return max(0, int(code["attempts_left"]) - (wrong - int(code.get("guesses_at", 0))))


def _usable(code: dict[str, Any] | None, connector: str, now: float, wrong: int) -> bool:
    """Whether a code (a ``bridge_codes`` value) would be taken now."""
    return (code is not None and code["connector"] == connector and code["used_by"] is None
            and code["expires_at"] > now and attempts_left(code, wrong) > 0)


def _usable_where(connector: str, now: float) -> Where:
    """What the index narrows :func:`_usable` to (the attempts are counted after)."""
    return {"connector": connector, "used_by": None, "expires_at": Range(gt=now),
            "attempts_left": Range(gt=0)}


def normalize_code(text: str) -> str:
    return "".join(c for c in text.upper() if c.isalnum())


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def show_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


_SHOWN_CODE = re.compile(f"(?<![A-Za-z0-9])([{CODE_ALPHABET}]{{4}})-([{CODE_ALPHABET}]{{4}})"
                         "(?![A-Za-z0-9])", re.IGNORECASE)


def find_code(text: str) -> str | None:
    """A code written as :func:`show_code` shows it (``K7MX-4QPA``, any case) in free text,
    such as a mail's subject; ordinary words never look like one (the dash is required)."""
    found = _SHOWN_CODE.search(text)
    return (found.group(1) + found.group(2)).upper() if found else None


@dataclass
class Link:
    identity: str  # the chat's identity, e.g. telegram:chat:-100123
    peer: str  # the service peer standing for the chat
    conversation: str  # without '#'


class PairingBook(PerHub):
    """A hub's pairings, links and targets: in memory, written through to the store."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.paired: dict[str, str] = {}  # identity -> peer key (active pairings only)
        self.revoked: set[str] = set()  # identities whose pairing was revoked
        self.targets: dict[str, str] = {}  # peer key -> current target
        self.links: dict[str, Link] = {}  # chat identity -> link
        self.loaded = False

    async def load(self) -> None:
        records = self.hub.records
        pairings = await records.all(PAIRINGS.name)
        self.paired = {r.key: r.value["peer"] for r in pairings if r.value["revoked_at"] is None}
        self.revoked = {r.key for r in pairings if r.value["revoked_at"] is not None}
        self.targets = {r.key: r.value["target"] for r in await records.all(TARGETS.name)}
        self.links = {r.key: Link(r.key, r.value["peer"], r.value["conversation"])
                      for r in await records.all(LINKS.name)}
        self.loaded = True

    # -- codes -------------------------------------------------------------------------------
    async def create_code(self, connector: str, created_by: str,
                          member_key: str | None = None) -> dict[str, Any]:
        """A new code; with ``member_key`` it links the account to that member."""
        code, code_id = new_code(), new_id()
        now = time.time()
        value = {"id": code_id, "connector": connector, "created_by": created_by, "created_at": now,
                 "expires_at": now + CODE_TTL, "attempts_left": CODE_ATTEMPTS, "used_by": None,
                 "member_key": member_key,
                 "guesses_at": await self.wrong_guesses(connector)}
        await self.hub.records.put(CODES.name, _hash(code), value, revision=0,
                                   expires_at=now + CODE_TTL + CODE_KEPT)
        return {"id": code_id, "code": show_code(code), "connector": connector,
                "expires_at": now + CODE_TTL,
                "expires_in": int(CODE_TTL), "attempts": CODE_ATTEMPTS}

    async def redeem(self, connector: str, external_id: str, code: str, name: str) -> Peer:
        """Pair ``connector:external_id`` with a valid code; a wrong code costs an attempt."""
        identity = f"{connector}:{external_id}"
        existing = self.peer_for(identity)
        if existing is not None:
            return existing
        member_key = await self.claim(connector, identity, code)
        return await self._pair(connector, identity, name, time.time(), member_key)

    async def claim(self, connector: str, identity: str, code: str) -> str | None:
        """Spend a valid code of ``connector`` for ``identity`` without pairing it yet (the
        email gateway pairs once the person answered a confirmation mail: :meth:`pair`); a
        wrong code costs an attempt and raises :class:`InvalidRequest`. Returns the key of the
        member the code links the account to (``None``: a person of its own).

        The claims of a connector take turns through its ``bridge_guesses`` document, which
        counts the wrong codes tried: each claim moves it by compare-and-set (one more for a
        wrong code) before anything else, so a right code tried together with wrong ones is
        judged after exactly those that came first, on any engine and any number of hubs."""
        wanted = _hash(normalize_code(code))
        records = self.hub.records
        for _ in range(CLAIM_TRIES):
            now = time.time()
            guard = await records.get(GUESSES.name, connector)
            wrong = int(guard.value["wrong"]) if guard is not None else 0
            found = await records.get(CODES.name, wanted)
            usable = found is not None and _usable(found.value, connector, now, wrong)
            try:
                await records.put(GUESSES.name, connector, {"wrong": wrong + (not usable)},
                                  revision=guard.revision if guard is not None else 0)
            except Conflict:
                continue  # another claim went first: judge this one after it
            if not usable or found is None:
                raise InvalidRequest(
                    "that pairing code is wrong, used or expired; ask the hub's owner for a "
                    f"new one (`hub pair {connector}`)")
            try:
                await records.put(CODES.name, wanted,
                                  {**found.value, "used_by": identity, "taken_at": wrong},
                                  revision=found.revision, expires_at=found.expires_at)
            except Conflict:
                continue  # taken by a claim judged just before: this one is now wrong
            member_key: str | None = found.value["member_key"]
            return member_key
        raise Conflict("too many pairing attempts at once; try again", current=None)

    async def unclaim(self, connector: str, identity: str, code: str) -> None:
        """Give back a code :meth:`claim` ed for ``identity`` (what it was for could not be
        done, e.g. the confirmation mail could not be sent); it works again until it expires."""
        def give_back(value: dict[str, Any] | None) -> dict[str, Any] | None:
            if value is None or value["connector"] != connector or value["used_by"] != identity:
                return None
            return {**value, "used_by": None}

        await self.hub.records.modify(CODES.name, _hash(normalize_code(code)), give_back)

    async def is_live(self, connector: str, code: str | None = None) -> bool:
        """Whether ``code`` (without one: any code of ``connector``) would be taken now, asked
        without spending it or an attempt; a platform open to anyone, like mail, refuses
        pairing attempts while none can succeed."""
        now = time.time()
        where = _usable_where(connector, now)
        if code is not None:
            where["key"] = _hash(normalize_code(code))
        wrong = await self.wrong_guesses(connector)
        return any(_usable(r.value, connector, now, wrong)
                   for r in await self.hub.records.all(CODES.name, where))

    async def wrong_guesses(self, connector: str) -> int:
        """How many wrong codes were ever tried on ``connector``."""
        guard = await self.hub.records.get(GUESSES.name, connector)
        return int(guard.value["wrong"]) if guard is not None else 0

    async def pair(self, connector: str, external_id: str, name: str) -> Peer:
        """Pair ``connector:external_id`` whose code was :meth:`claim` ed (a revoked pairing
        is made again), linked to the member that code was made by, if it was."""
        identity = f"{connector}:{external_id}"
        claimed = await self.hub.records.find(
            CODES.name, {"connector": connector, "used_by": identity}, order="-created_at",
            limit=1)
        member_key = claimed.records[0].value["member_key"] if claimed.records else None
        return await self._pair(connector, identity, name, time.time(), member_key)

    async def admit(self, connector: str, external_id: str, name: str) -> Peer | None:
        """Let ``connector:external_id`` in without a code, because the connector's allow-list
        names it; ``None`` when its pairing was revoked (a revocation outlasts the allow-list
        until the pairing is made again with a code)."""
        identity = f"{connector}:{external_id}"
        existing = self.peer_for(identity)
        if existing is not None:
            return existing
        if identity in self.revoked:
            return None
        return await self._pair(connector, identity, name, time.time())

    async def _pair(self, connector: str, identity: str, name: str, now: float,
                    member_key: str | None = None) -> Peer:
        directory = self.hub.directory
        member = directory.member(member_key)
        if member_key is not None and member is None:
            raise InvalidRequest("the member who made this pairing code has left the hub; ask "
                                 "for a new code")
        if member is not None:  # one more surface of that member
            peer, _created = await directory.register(
                identity=identity, name=f"{member.name}-{connector}", kind="human",
                connector=connector, member_key=member.key)
        else:
            peer, _created = await directory.register(
                identity=identity, name=name, kind="human", connector=connector)
        await self.hub.records.put(PAIRINGS.name, identity, {
            "connector": connector, "peer": peer.key, "paired_at": now, "revoked_at": None,
            "member_key": member_key})
        self.paired[identity] = peer.key
        self.revoked.discard(identity)
        await self.hub.audit.append("member_joined", peer, subject=peer.name, via=connector,
                                    member=member.name if member is not None else None)
        return peer

    # -- pairings ----------------------------------------------------------------------------
    def peer_for(self, identity: str) -> Peer | None:
        """The peer of a paired (not revoked) identity."""
        key = self.paired.get(identity)
        return self.hub.directory.peers.get(key) if key else None

    def is_paired(self, peer: Peer) -> bool:
        return self.paired.get(peer.identity) == peer.key

    async def listing(self, connector: str | None = None) -> list[dict[str, Any]]:
        directory = self.hub.directory
        rows = await self.hub.records.all(
            PAIRINGS.name, {"connector": connector} if connector else None, order="paired_at")
        out = []
        for row in rows:
            key, member_key = row.value["peer"], row.value["member_key"]
            out.append({
                "identity": row.key, "connector": row.value["connector"],
                "name": directory.peers[key].name if key in directory.peers else None,
                "key": key,
                "member": member.name if (member := directory.member(member_key)) else None,
                "paired_at": row.value["paired_at"],
                "revoked": row.value["revoked_at"] is not None})
        return out

    async def revoke(self, who: str, by: Peer | None) -> dict[str, Any]:
        """Revoke a pairing (``by`` whom: ``None`` is the hub itself): the identity is
        refused until it pairs again with a code."""
        identity = who if who in self.paired else None
        if identity is None:
            peer = self.hub.directory.find(who)
            identity = peer.identity if peer is not None and peer.identity in self.paired else None
        if identity is None:
            raise NotFound(f"no paired identity or peer {who!r}; see `hub call pairings`")
        key = self.paired.pop(identity)
        self.revoked.add(identity)
        now = time.time()
        await self.hub.records.modify(PAIRINGS.name, identity, lambda value: (
            None if value is None else {**value, "revoked_at": now}))
        peer = self.hub.directory.peers.get(key)
        if peer is not None and peer.member_key is not None:
            await self.hub.directory.unlink_surface(peer)  # it speaks for nobody any more
        name = peer.name if peer is not None else key
        await self.hub.audit.append("member_removed", by, subject=name, key=key,
                                    via=identity.partition(":")[0])
        return {"identity": identity, "name": name, "revoked": True}

    # -- current targets ---------------------------------------------------------------------
    def target(self, peer: Peer) -> str:
        return self.targets.get(peer.key, DEFAULT_TARGET)

    async def set_target(self, peer: Peer, target: str) -> None:
        if self.targets.get(peer.key) == target:
            return
        self.targets[peer.key] = target
        await self.hub.records.put(TARGETS.name, peer.key, {"target": target})

    # -- linked group chats ------------------------------------------------------------------
    def link_for(self, identity: str) -> Link | None:
        return self.links.get(identity)

    async def link(self, connector: str, chat: str, title: str, conversation: str,
                   by: Peer | None) -> Link:
        """Link a group chat to a #conversation: a service peer stands for the chat. ``by`` is
        who linked it (``None``: the hub's configuration)."""
        conv = self.hub.directory.conversation(conversation)
        identity = f"{connector}:chat:{chat}"
        peer, _ = await self.hub.directory.register(
            identity=identity, name=title or f"{connector}-group", kind="service",
            connector=connector,
        )
        old = self.links.get(identity)
        if old is not None and old.conversation != conv.name:
            old_conv = self.hub.directory.conversations.get(old.conversation)
            if old_conv is not None:
                await self.hub.directory.leave(old_conv, peer.key)
        await self.hub.directory.join(conv, peer.key)
        link = Link(identity, peer.key, conv.name)
        await self.hub.records.put(LINKS.name, identity, {
            "connector": connector, "peer": peer.key, "conversation": conv.name,
            "linked_by": by.key if by else "config", "linked_at": time.time()})
        self.links[identity] = link
        return link

    async def unlink(self, identity: str) -> Link:
        link = self.links.pop(identity, None)
        if link is None:
            raise NotFound("this chat is not linked to a conversation")
        conv = self.hub.directory.conversations.get(link.conversation)
        if conv is not None:
            await self.hub.directory.leave(conv, link.peer)
        await self.hub.records.delete(LINKS.name, identity)
        return link


# -- actions --------------------------------------------------------------------------------------
@action("pair_create")
async def pair_create(
    ctx: ActionContext,
    connector: Annotated[str, "the connector to pair with, e.g. telegram"] = "telegram",
    new_person: Annotated[bool, "let someone else in as a person of their own (the hub's "
                          "owner only) instead of linking your own account"] = False,
) -> dict[str, Any]:
    """Create a one-time pairing code (10 minutes, 5 attempts) for a chat platform: whoever
    sends ``/pair CODE`` to the bot becomes one more surface of yours (your own phone), or with
    ``new_person`` a person of their own.

    If the connector is installed but not running (idle for want of a token, failed, still
    connecting), the code is made all the same, since the bot may be started later, and the
    result carries a ``warning`` saying so."""
    hub = ctx.hub
    if new_person and not ctx.is_admin:
        raise Forbidden("only the hub's owner lets a new person in; without --new-person the "
                        "code links your own account")
    if not new_person and (ctx.peer.member_key is None or ctx.peer.kind == "agent"
                           or ctx.peer.connector not in SESSION_CONNECTORS):
        raise Forbidden("link your own chat account from your terminal or the web page "
                        "(`hub pair telegram`); agent sessions and chat surfaces cannot")
    if connector not in hub.connector_names:
        known = ", ".join(sorted(hub.connector_names))
        raise NotFound(
            f"unknown connector {connector!r}; "
            + (f"this hub's connectors: {known}" if known else "this hub has no connectors"),
            code="unknown_connector",
        )
    member_key = None if new_person else ctx.peer.member_key
    result = await PairingBook.of(hub).create_code(connector, ctx.peer.key, member_key)
    await hub.audit.append("pairing_code_created", ctx.peer, subject=result["id"],
                           connector=connector, new_person=new_person)
    result["links_to"] = None if member_key is None else hub.directory.members[member_key].name
    slot = hub.connectors.get(connector)
    how = (slot.how_to_pair(hub, result["code"]) if isinstance(slot, ConnectorSlot) else
           f"send /pair {result['code']} to the {connector} bot")
    result["how"] = how + " within 10 minutes"
    state = hub.connector_states.get(connector)
    if state is None or not state.is_running:
        why = "its state is unknown" if state is None else (
            state.detail if state.state == "idle" and state.detail else state.summary())
        yet = " yet" if state is not None and state.state == "starting" else ""
        result["warning"] = (f"the {connector} bot is not running{yet} ({why}); the code works "
                             "once it runs (within its 10 minutes)")
    return result


@action("pairings", admin=True, read_only=True)
async def pairings(
    ctx: ActionContext,
    connector: Annotated[str | None, "only this connector's identities"] = None,
) -> list[dict[str, Any]]:
    """Paired identities (``telegram:12345``...) with their peer, and whether revoked."""
    return await PairingBook.of(ctx.hub).listing(connector)


@action("pair_revoke", admin=True)
async def pair_revoke(
    ctx: ActionContext,
    who: Annotated[str, "a paired identity (telegram:12345) or its peer's name"],
) -> dict[str, Any]:
    """Revoke a pairing: that person's messages are refused and nothing more is delivered."""
    return await PairingBook.of(ctx.hub).revoke(who, ctx.peer)


ALL: list[Action] = [pair_create, pairings, pair_revoke]


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    for collection in COLLECTIONS:
        register(collection)


@hookimpl
def meshhub_register_migrations(register: Callable[[Migrations], None]) -> None:
    from .sqlite_upgrade_pairing import migrations  # it reads this module's collections

    register(migrations)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)


@hookimpl
async def meshhub_startup(hub: Hub) -> None:
    await PairingBook.of(hub).load()
