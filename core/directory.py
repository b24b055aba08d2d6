"""Who is on the mesh: peers and conversations, kept in memory and written through to the store.

Routing reads only this in-memory view, so resolving a target never waits on the disk.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeGuard

from .errors import InvalidRequest, MeshError, NotFound
from .fields import MAX_GROUP, MAX_NAME, check_length
from .ids import peer_key_for
from .models import SESSION_CONNECTORS, Conversation, Invite, Member, Peer
from .records import Collection

if TYPE_CHECKING:
    from .records import Records
    from .store import Store

# who may get in: small, kept in memory, written through as records (any engine serves them)
MEMBERS = Collection("members")
INVITES = Collection("invites")

NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
KEYLIKE_RE = re.compile(r"[0-9A-Fa-f]{8}")
NAME_RULE = (f"1 to {MAX_NAME} letters, digits, '_', '.' or '-', starting with a letter or "
             "digit, and not 8 hex digits (that reads as a peer key)")
GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,39})*")
DEFAULT_CONVERSATION = "general"


def clean_name(name: str) -> str:
    """A display name usable as a target: letters, digits, ``_.-``; at most 40 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-.")[:MAX_NAME]
    return cleaned or "peer"


def is_linked_surface(peer: Peer) -> bool:
    """A chat account (Telegram, Slack, email) a member linked to itself: one more way to reach
    that member, not a person of its own. A connector bridges it inside the hub, so it holds
    no key of its own (every peer that connects itself does, whatever connector it names)."""
    return (peer.member_key is not None and peer.public_key is None
            and peer.connector not in SESSION_CONNECTORS)


class NameTaken(MeshError):
    code = "name_taken"
    http_status = 409


def check_name(name: object) -> str:
    """A name as chosen (``hub init``, ``hub join``, a hello): refused, never rewritten, when it
    could not be used as a target or could read as something else."""
    if not is_valid_name(name):
        raise InvalidRequest(f"bad name {str(name)[:60]!r}: a name is {NAME_RULE}",
                             code="bad_name")
    return name


def is_valid_name(name: object) -> TypeGuard[str]:
    return (isinstance(name, str) and bool(NAME_RE.fullmatch(name))
            and not KEYLIKE_RE.fullmatch(name))


def check_group(group: str, field: str = "group") -> str:
    """A group (or conversation) name as written, ``@`` dropped: refused when it is over
    :data:`~meshhub.fields.MAX_GROUP` characters or not made of name parts."""
    group = check_length(field, group.lstrip("@"), MAX_GROUP)
    if not GROUP_RE.fullmatch(group) or group == "all":
        raise InvalidRequest(
            f"bad group name {group!r}: use letters, digits, '_.-', and '/' for subgroups"
        )
    return group


def parse_groups(text: str | None) -> dict[str, str] | None:
    """``g1:lead,g2`` -> ``{"g1": "lead", "g2": "member"}`` (the CLI's and env vars' form)."""
    if not text:
        return None
    groups: dict[str, str] = {}
    for item in text.split(","):
        name, _, role = item.strip().partition(":")
        if name.strip():
            groups[name.strip().lstrip("@")] = role.strip() or "member"
    return groups


class Directory:
    def __init__(self, store: Store, records: Records) -> None:
        self.store = store
        self.records = records
        self.peers: dict[str, Peer] = {}
        self.by_name: dict[str, str] = {}
        self.by_identity: dict[str, str] = {}
        self.conversations: dict[str, Conversation] = {}
        self.members: dict[str, Member] = {}  # member key -> member, removed ones included
        self.invites: dict[str, Invite] = {}  # code hash -> invite
        # member key -> keys of its linked chat surfaces (a Telegram account it paired itself)
        self.linked: dict[str, set[str]] = {}
        # told about every peer seen for the first time (the hub announces it as ``joined``)
        self.on_created: Callable[[Peer], Awaitable[None]] | None = None

    async def load(self) -> None:
        for record in await self.records.all(MEMBERS.name, order="created_at"):
            member = from_record(Member, record.value)
            self.members[member.key] = member
        for record in await self.records.all(INVITES.name, order="created_at"):
            invite = from_record(Invite, record.value)
            self.invites[invite.code_hash] = invite
        for peer in await self.store.load_peers():
            peer.status = "offline"
            self._index(peer)
        for conv in await self.store.load_conversations():
            self.conversations[conv.name] = conv
        if DEFAULT_CONVERSATION not in self.conversations:
            await self.save_conversation(
                Conversation(name=DEFAULT_CONVERSATION, topic="Everyone", created_at=time.time())
            )

    def _index(self, peer: Peer) -> None:
        self.peers[peer.key] = peer
        self.by_name[peer.name.lower()] = peer.key
        self.by_identity[peer.identity] = peer.key
        if is_linked_surface(peer):
            self.linked.setdefault(str(peer.member_key), set()).add(peer.key)

    # -- peers -------------------------------------------------------------------------------
    def get(self, key: str) -> Peer:
        try:
            return self.peers[key]
        except KeyError:
            raise NotFound(f"no peer with key {key}") from None

    def find(self, name_or_key: str) -> Peer | None:
        text = name_or_key.strip()
        if text in self.peers:
            return self.peers[text]
        key = self.by_name.get(text.lower())
        return self.peers[key] if key else None

    def closest_names(self, text: str, n: int = 3) -> list[str]:
        names = [p.name for p in self.peers.values()]
        by_lower = {name.lower(): name for name in names}
        close = difflib.get_close_matches(text.lower(), list(by_lower), n=n, cutoff=0.4)
        return [by_lower[c] for c in close] or sorted(names)[:n]

    def unique_name(self, wanted: str, owner: str | None = None,
                    member_key: str | None = None) -> str:
        """``wanted``, or ``wanted-2``, ``-3``... when another peer or member holds it (for
        peers named after a platform's display name, and a member's own sessions)."""
        base = clean_name(wanted)
        if KEYLIKE_RE.fullmatch(base):
            base = f"{base}-peer"
        candidate, n = base, 1
        while not self.name_free(candidate, member_key, owner):
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def name_holder(self, name: str) -> str | None:
        """The member key that owns ``name`` (through its member name or one of its peers),
        ``""`` for a peer with no member (a bridged person), ``None`` when nobody holds it."""
        key = self.by_name.get(name.lower())
        if key is not None:
            return self.peers[key].member_key or ""
        for member in self.members.values():
            if member.removed_at is None and member.name.lower() == name.lower():
                return member.key
        return None

    def name_free(self, name: str, member_key: str | None, owner: str | None = None) -> bool:
        """Nobody holds ``name``, or only ``owner`` (the peer asking) does."""
        key = self.by_name.get(name.lower())
        if key is not None:
            return key == owner
        holder = self.name_holder(name)
        return holder is None or (member_key is not None and holder == member_key)

    def claim_name(self, name: str, member_key: str | None, owner: str | None = None) -> str:
        """The name a key-holding peer asked for, or a clear refusal when another member holds
        it. A member's own peers share its names: a second session named like the first is
        numbered (``ann-2``)."""
        check_name(name)
        holder = self.name_holder(name)
        if holder is not None and holder != member_key:
            key = self.by_name.get(name.lower())
            if key is None or key != owner:
                raise NameTaken(f"the name {name!r} belongs to another member of this hub; "
                                "choose another", name=name)
        prefixed = self.prefix_holder(name)
        if prefixed is not None and prefixed.key != member_key:
            raise NameTaken(f"names that start with '{prefixed.name}-' belong to the member "
                            f"{prefixed.name} (for its sessions); choose another", name=name)
        return self.unique_name(name, owner=owner, member_key=member_key)

    def prefix_holder(self, name: str) -> Member | None:
        """The member whose sessions' names ``name`` reads as (``ann-api`` for ``ann``; the
        longest such member name wins: ``ann-b-x`` is ``ann-b``'s)."""
        lowered = name.lower()
        found = [m for m in self.members.values()
                 if m.removed_at is None and lowered.startswith(m.name.lower() + "-")]
        return max(found, key=lambda m: len(m.name), default=None)

    def bridged_name(self, wanted: str, connector: str) -> str:
        """A name for a peer a connector bridges (no member key), from its platform name: never
        one that reads as a member's name or session (``ops-lead phone`` on Telegram becomes
        ``telegram-ops-lead-phone``)."""
        base = clean_name(wanted)
        if self.prefix_holder(base) is not None or any(
                m.removed_at is None and m.name.lower() == base.lower()
                for m in self.members.values()):
            base = clean_name(f"{connector}-{base}")
        return base

    async def give_up_name(self, name: str, keep: str) -> list[tuple[str, str]]:
        """Rename whoever but the member ``keep`` holds ``name`` (the owner's own name, when an
        upgrade finds it taken): a member becomes ``member-<key>``, a peer ``peer-<key>``, names
        that read as nobody in particular. ``(key, new name)`` of each one renamed."""
        renamed = []
        for member in self.members.values():
            if member.key != keep and member.name.lower() == name.lower():
                member.name = f"member-{member.key[:8]}"
                await self.save_member(member)
                renamed.append((member.key, member.name))
        key = self.by_name.get(name.lower())
        if key is not None and self.peers[key].member_key != keep:
            peer = self.peers[key]
            self.rename(peer, self.unique_name(f"peer-{key}"))
            await self.store.save_peer(peer)
            renamed.append((peer.key, peer.name))
        return renamed

    # -- members and invites ------------------------------------------------------------------
    def member(self, key: str | None) -> Member | None:
        """The enrolled (not removed) member with this key."""
        member = self.members.get(key) if key else None
        return member if member is not None and member.removed_at is None else None

    async def enroll(self, member: Member) -> Member:
        self.members[member.key] = member
        await self.save_member(member)
        return member

    async def save_member(self, member: Member) -> None:
        await self.records.put(MEMBERS.name, member.key, dataclasses.asdict(member))

    async def save_invite(self, invite: Invite) -> None:
        self.invites[invite.code_hash] = invite
        await self.records.put(INVITES.name, invite.id, dataclasses.asdict(invite))

    def peers_of(self, member_key: str) -> list[Peer]:
        return [p for p in self.peers.values() if p.member_key == member_key]

    def member_named(self, name: str) -> Member | None:
        """The enrolled member called ``name`` (any case)."""
        lowered = name.lower()
        return next((m for m in self.members.values()
                     if m.removed_at is None and m.name.lower() == lowered), None)

    async def forget(self, peer: Peer) -> None:
        """Take a peer out of the mesh (its member was removed): its name is free again, its
        conversation seats are given up; messages it sent keep its key as sender."""
        for conv in self.conversations.values():
            await self.leave(conv, peer.key)
        self.peers.pop(peer.key, None)
        if self.by_name.get(peer.name.lower()) == peer.key:
            del self.by_name[peer.name.lower()]
        self.by_identity.pop(peer.identity, None)
        self._unlink(peer)
        await self.store.delete_peer(peer.key)

    def _unlink(self, peer: Peer) -> None:
        for member_key, keys in list(self.linked.items()):
            keys.discard(peer.key)
            if not keys:  # no linked surface left: routing skips the member lookup again
                del self.linked[member_key]

    async def unlink_surface(self, peer: Peer) -> None:
        """A linked chat account no longer belongs to its member (its pairing was revoked)."""
        self._unlink(peer)
        peer.member_key = None
        await self.save_peer(peer)

    def new_key(self, identity: str) -> str:
        attempt = 0
        while (key := peer_key_for(identity, attempt)) in self.peers:
            attempt += 1
        return key

    async def register(
        self,
        *,
        identity: str,
        name: str,
        kind: str,
        connector: str,
        public_key: str | None = None,
        member_key: str | None = None,
        role: str | None = None,
        groups: dict[str, str] | None = None,
    ) -> tuple[Peer, bool]:
        """The peer for ``identity``, created on first sight; returns (peer, created).

        A peer with a ``member_key`` asked for its name and gets it or a :class:`NameTaken`
        refusal (:meth:`claim_name`); a bridged peer (no member key) is named after its platform
        name, numbered when that is taken. Everything is checked before anything changes.
        """
        now = time.time()
        key = self.by_identity.get(identity)
        checked_groups = {check_group(g): r for g, r in (groups or {}).items()}
        if key is not None:
            peer = self.peers[key]
            if member_key is not None and name.lower() != peer.name.lower():
                self.rename(peer, self.claim_name(name, member_key, owner=peer.key))
            elif member_key is None and (
                    new := self.bridged_name(name, connector)).lower() != peer.name.lower():
                self.rename(peer, self.unique_name(new, owner=peer.key))
            peer.kind, peer.connector, peer.last_seen = kind, connector, now
            peer.public_key = public_key or peer.public_key
            if member_key is not None and member_key != peer.member_key:
                self._unlink(peer)  # a surface linked again, to another member
            peer.member_key = member_key or peer.member_key
            self._index(peer)
            if role is not None:
                peer.role = role
            if groups is not None:
                peer.groups = checked_groups
            await self.store.save_peer(peer)
            return peer, False
        peer = Peer(
            key=self.new_key(identity),
            name=(self.claim_name(name, member_key) if member_key is not None
                  else self.unique_name(self.bridged_name(name, connector))),
            identity=identity,
            kind=kind,
            connector=connector,
            role=role or "",
            groups=checked_groups,
            public_key=public_key,
            member_key=member_key,
            created_at=now,
            last_seen=now,
        )
        self._index(peer)
        await self.store.save_peer(peer)
        general = self.conversations.get(DEFAULT_CONVERSATION)
        if general is not None:
            await self.join(general, peer.key)
        if self.on_created is not None:
            await self.on_created(peer)
        return peer, True

    def rename(self, peer: Peer, new_name: str) -> None:
        self.by_name.pop(peer.name.lower(), None)
        peer.name = new_name
        self.by_name[new_name.lower()] = peer.key

    async def save_peer(self, peer: Peer) -> None:
        if self.peers.get(peer.key) is peer:  # never write back a peer taken out (removed)
            await self.store.save_peer(peer)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for peer in self.peers.values():
            for group in peer.groups:
                out.setdefault(group, []).append(peer.name)
        return out

    # -- conversations -----------------------------------------------------------------------
    def conversation_filter(self, conversation: str | None) -> tuple[str | None, str | None]:
        """How ``history`` and ``search`` read their ``conversation`` parameter: (the
        conversation label as stored, the partner's key for ``dm:NAME``). A bare name is a
        #conversation, which must exist; ``NotFound`` for an unknown peer."""
        if conversation is None:
            return None, None
        if conversation.startswith("dm:"):
            peer = self.find(conversation[3:])
            if peer is None:
                raise NotFound(f"no peer {conversation[3:]!r}")
            return None, peer.key
        if conversation.startswith(("#", "@")) or conversation in ("*", "multi"):
            return conversation.lower() if conversation.startswith("#") else conversation, None
        if conversation.lower() not in self.conversations:
            raise InvalidRequest(f"no conversation {conversation!r}: write #name, @group, *, "
                                 "multi, or dm:NAME for the direct messages with a peer")
        return "#" + conversation.lower(), None

    def conversation(self, name: str) -> Conversation:
        bare = name.lstrip("#").lower()
        conv = self.conversations.get(bare)
        if conv is None:
            known = list(self.conversations)
            close = difflib.get_close_matches(bare, known, n=3, cutoff=0.4) or sorted(known)[:3]
            raise NotFound(
                f"no conversation #{bare}; known: {', '.join('#' + c for c in close)}",
                code="unknown_target",
            )
        return conv

    async def save_conversation(self, conv: Conversation) -> None:
        """Write the conversation's row (name, topic, archive flag); members go through
        :meth:`join` and :meth:`leave`."""
        self.conversations[conv.name] = conv
        await self.store.save_conversation(conv)

    async def join(self, conv: Conversation, peer_key: str) -> bool:
        if peer_key in conv.members:
            return False
        conv.members.add(peer_key)
        await self.store.set_membership(conv.name, peer_key, True)
        return True

    async def leave(self, conv: Conversation, peer_key: str) -> bool:
        if peer_key not in conv.members:
            return False
        conv.members.discard(peer_key)
        await self.store.set_membership(conv.name, peer_key, False)
        return True


def from_record(kind: type[Any], value: dict[str, Any]) -> Any:
    """A dataclass from its stored document; fields a later version added (or dropped) are
    left to their defaults (or ignored)."""
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in value.items() if k in names})
