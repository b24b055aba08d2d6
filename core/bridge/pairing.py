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

The state is per hub (:meth:`PairingBook.of`), loaded at start-up and written through.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden, InvalidRequest, NotFound
from meshhub.models import SESSION_CONNECTORS

from .slot import ConnectorSlot

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
CODE_LENGTH = 8
CODE_TTL = 600.0
CODE_ATTEMPTS = 5
DEFAULT_TARGET = "#general"

migrations = Migrations("meshhub.bridge")


@migrations()
def m001_create_pairing(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE bridge_codes (
            code_hash TEXT PRIMARY KEY,
            connector TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            attempts_left INTEGER NOT NULL,
            used_by TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE bridge_pairings (
            identity TEXT PRIMARY KEY,
            connector TEXT NOT NULL,
            peer TEXT NOT NULL,
            paired_at REAL NOT NULL,
            revoked_at REAL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE bridge_targets (
            peer TEXT PRIMARY KEY,
            target TEXT NOT NULL,
            updated_at REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE bridge_links (
            identity TEXT PRIMARY KEY,
            connector TEXT NOT NULL,
            peer TEXT NOT NULL,
            conversation TEXT NOT NULL,
            linked_by TEXT NOT NULL,
            linked_at REAL NOT NULL
        )
        """
    )


@migrations()
def m002_linked_codes(db: Database) -> None:
    """Codes made by a member link the account to that member (``member_key``)."""
    db.execute("ALTER TABLE bridge_codes ADD COLUMN member_key TEXT")
    db.execute("ALTER TABLE bridge_pairings ADD COLUMN member_key TEXT")


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


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


class PairingBook:
    """A hub's pairings, links and targets: in memory, written through to the store."""

    _books: weakref.WeakKeyDictionary[Hub, PairingBook] = weakref.WeakKeyDictionary()

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.paired: dict[str, str] = {}  # identity -> peer key (active pairings only)
        self.revoked: set[str] = set()  # identities whose pairing was revoked
        self.targets: dict[str, str] = {}  # peer key -> current target
        self.links: dict[str, Link] = {}  # chat identity -> link
        self.loaded = False

    @classmethod
    def of(cls, hub: Hub) -> PairingBook:
        book = cls._books.get(hub)
        if book is None:
            book = cls._books[hub] = cls(hub)
        return book

    async def load(self) -> None:
        def run(conn: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any]]:
            return (
                conn.execute("SELECT identity, peer, revoked_at FROM bridge_pairings"
                             ).fetchall(),
                conn.execute("SELECT peer, target FROM bridge_targets").fetchall(),
                conn.execute("SELECT identity, peer, conversation FROM bridge_links").fetchall(),
            )

        pairings, targets, links = await self.hub.store.transact(run)
        self.paired = {identity: peer for identity, peer, revoked in pairings if revoked is None}
        self.revoked = {identity for identity, _peer, revoked in pairings if revoked is not None}
        self.targets = {peer: target for peer, target in targets}
        self.links = {i: Link(i, p, c) for i, p, c in links}
        self.loaded = True

    # -- codes -------------------------------------------------------------------------------
    async def create_code(self, connector: str, created_by: str,
                          member_key: str | None = None) -> dict[str, Any]:
        """A new code; with ``member_key`` it links the account to that member."""
        code = new_code()
        now = time.time()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM bridge_codes WHERE expires_at < ?", (now - 86400,))
            conn.execute(
                "INSERT INTO bridge_codes (code_hash, connector, created_by, created_at, "
                "expires_at, attempts_left, member_key) VALUES (?,?,?,?,?,?,?)",
                (_hash(code), connector, created_by, now, now + CODE_TTL, CODE_ATTEMPTS,
                 member_key),
            )

        await self.hub.store.transact(run)
        return {"code": show_code(code), "connector": connector, "expires_at": now + CODE_TTL,
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
        member the code links the account to (``None``: a person of its own)."""
        wanted = _hash(normalize_code(code))
        now = time.time()

        def run(conn: sqlite3.Connection) -> tuple[bool, str | None]:
            cur = conn.execute(
                "UPDATE bridge_codes SET used_by=? WHERE code_hash=? AND connector=? "
                "AND used_by IS NULL AND expires_at > ? AND attempts_left > 0",
                (identity, wanted, connector, now),
            )
            if cur.rowcount:
                row = conn.execute("SELECT member_key FROM bridge_codes WHERE code_hash=?",
                                   (wanted,)).fetchone()
                return True, row[0]
            conn.execute(
                "UPDATE bridge_codes SET attempts_left = attempts_left - 1 WHERE connector=? "
                "AND used_by IS NULL AND expires_at > ? AND attempts_left > 0",
                (connector, now),
            )
            return False, None

        taken, member_key = await self.hub.store.transact(run)
        if not taken:
            raise InvalidRequest(
                "that pairing code is wrong, used or expired; ask the hub's owner for a new "
                f"one (`hub pair {connector}`)"
            )
        return member_key

    async def unclaim(self, connector: str, identity: str, code: str) -> None:
        """Give back a code :meth:`claim` ed for ``identity`` (what it was for could not be
        done, e.g. the confirmation mail could not be sent); it works again until it expires."""
        wanted = _hash(normalize_code(code))
        await self.hub.store.transact(lambda conn: conn.execute(
            "UPDATE bridge_codes SET used_by=NULL WHERE code_hash=? AND connector=? AND "
            "used_by=?", (wanted, connector, identity)))

    async def is_live(self, connector: str, code: str | None = None) -> bool:
        """Whether ``code`` (without one: any code of ``connector``) would be taken now, asked
        without spending it or an attempt; a platform open to anyone, like mail, refuses
        pairing attempts while none can succeed."""
        sql = ("SELECT 1 FROM bridge_codes WHERE connector=? AND used_by IS NULL AND "
               "expires_at > ? AND attempts_left > 0")
        args: tuple[Any, ...] = (connector, time.time())
        if code is not None:
            sql, args = sql + " AND code_hash=?", (*args, _hash(normalize_code(code)))
        row = await self.hub.store.transact(lambda conn: conn.execute(
            sql + " LIMIT 1", args).fetchone())
        return row is not None

    async def pair(self, connector: str, external_id: str, name: str) -> Peer:
        """Pair ``connector:external_id`` whose code was :meth:`claim` ed (a revoked pairing
        is made again), linked to the member that code was made by, if it was."""
        identity = f"{connector}:{external_id}"
        row = await self.hub.store.transact(lambda conn: conn.execute(
            "SELECT member_key FROM bridge_codes WHERE connector=? AND used_by=? "
            "ORDER BY created_at DESC LIMIT 1", (connector, identity)).fetchone())
        return await self._pair(connector, identity, name, time.time(),
                                row[0] if row else None)

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

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO bridge_pairings (identity, connector, peer, paired_at, member_key) "
                "VALUES (?,?,?,?,?) ON CONFLICT(identity) DO UPDATE SET peer=excluded.peer, "
                "paired_at=excluded.paired_at, revoked_at=NULL, member_key=excluded.member_key",
                (identity, connector, peer.key, now, member_key),
            )

        await self.hub.store.transact(save)
        self.paired[identity] = peer.key
        self.revoked.discard(identity)
        return peer

    # -- pairings ----------------------------------------------------------------------------
    def peer_for(self, identity: str) -> Peer | None:
        """The peer of a paired (not revoked) identity."""
        key = self.paired.get(identity)
        return self.hub.directory.peers.get(key) if key else None

    def is_paired(self, peer: Peer) -> bool:
        return self.paired.get(peer.identity) == peer.key

    async def listing(self, connector: str | None = None) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[Any]:
            sql = ("SELECT identity, connector, peer, paired_at, revoked_at, member_key "
                   "FROM bridge_pairings")
            if connector:
                return conn.execute(sql + " WHERE connector=? ORDER BY paired_at",
                                    (connector,)).fetchall()
            return conn.execute(sql + " ORDER BY paired_at").fetchall()

        directory = self.hub.directory
        rows = await self.hub.store.transact(run)
        return [
            {"identity": identity, "connector": conn_name,
             "name": directory.peers[key].name if key in directory.peers else None, "key": key,
             "member": member.name if (member := directory.member(member_key)) else None,
             "paired_at": paired_at, "revoked": revoked_at is not None}
            for identity, conn_name, key, paired_at, revoked_at, member_key in rows
        ]

    async def revoke(self, who: str) -> dict[str, Any]:
        identity = who if who in self.paired else None
        if identity is None:
            peer = self.hub.directory.find(who)
            identity = peer.identity if peer is not None and peer.identity in self.paired else None
        if identity is None:
            raise NotFound(f"no paired identity or peer {who!r}; see `hub call pairings`")
        key = self.paired.pop(identity)
        self.revoked.add(identity)
        now = time.time()
        await self.hub.store.transact(lambda conn: conn.execute(
            "UPDATE bridge_pairings SET revoked_at=? WHERE identity=?", (now, identity)))
        peer = self.hub.directory.peers.get(key)
        if peer is not None and peer.member_key is not None:
            await self.hub.directory.unlink_surface(peer)  # it speaks for nobody any more
        name = peer.name if peer is not None else key
        return {"identity": identity, "name": name, "revoked": True}

    # -- current targets ---------------------------------------------------------------------
    def target(self, peer: Peer) -> str:
        return self.targets.get(peer.key, DEFAULT_TARGET)

    async def set_target(self, peer: Peer, target: str) -> None:
        if self.targets.get(peer.key) == target:
            return
        self.targets[peer.key] = target
        now = time.time()
        await self.hub.store.transact(lambda conn: conn.execute(
            "INSERT INTO bridge_targets (peer, target, updated_at) VALUES (?,?,?) "
            "ON CONFLICT(peer) DO UPDATE SET target=excluded.target, "
            "updated_at=excluded.updated_at", (peer.key, target, now)))

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
        now = time.time()
        await self.hub.store.transact(lambda conn: conn.execute(
            "INSERT INTO bridge_links (identity, connector, peer, conversation, linked_by, "
            "linked_at) VALUES (?,?,?,?,?,?) ON CONFLICT(identity) DO UPDATE SET "
            "conversation=excluded.conversation, linked_by=excluded.linked_by, "
            "linked_at=excluded.linked_at",
            (identity, connector, peer.key, conv.name, by.key if by else "config", now)))
        self.links[identity] = link
        return link

    async def unlink(self, identity: str) -> Link:
        link = self.links.pop(identity, None)
        if link is None:
            raise NotFound("this chat is not linked to a conversation")
        conv = self.hub.directory.conversations.get(link.conversation)
        if conv is not None:
            await self.hub.directory.leave(conv, link.peer)
        await self.hub.store.transact(lambda conn: conn.execute(
            "DELETE FROM bridge_links WHERE identity=?", (identity,)))
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
    return await PairingBook.of(ctx.hub).revoke(who)


ALL: list[Action] = [pair_create, pairings, pair_revoke]


@hookimpl
def meshhub_register_migrations(register: Callable[[Migrations], None]) -> None:
    register(migrations)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)


@hookimpl
async def meshhub_startup(hub: Hub) -> None:
    await PairingBook.of(hub).load()
