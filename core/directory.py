"""Who is on the mesh: peers and conversations, kept in memory and written through to the store.

Routing reads only this in-memory view, so resolving a target never waits on the disk.
"""

from __future__ import annotations

import difflib
import re
import time
from typing import TYPE_CHECKING

from .errors import InvalidRequest, NotFound
from .ids import peer_key_for
from .models import Conversation, Peer

if TYPE_CHECKING:
    from .store import Store

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,39})*$")
DEFAULT_CONVERSATION = "general"


def clean_name(name: str) -> str:
    """A display name usable as a target: letters, digits, ``_.-``; at most 40 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-.")[:40]
    return cleaned or "peer"


def check_group(group: str) -> str:
    group = group.lstrip("@")
    if not GROUP_RE.match(group) or group == "all":
        raise InvalidRequest(
            f"bad group name {group!r}: use letters, digits, '_.-', and '/' for subgroups"
        )
    return group


class Directory:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.peers: dict[str, Peer] = {}
        self.by_name: dict[str, str] = {}
        self.by_identity: dict[str, str] = {}
        self.conversations: dict[str, Conversation] = {}

    async def load(self) -> None:
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

    def unique_name(self, wanted: str, owner: str | None = None) -> str:
        base = clean_name(wanted)
        candidate, n = base, 1
        while (key := self.by_name.get(candidate.lower())) is not None and key != owner:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

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
        """The peer for ``identity``, created on first sight; returns (peer, created)."""
        now = time.time()
        key = self.by_identity.get(identity)
        if key is not None:
            peer = self.peers[key]
            if clean_name(name).lower() != peer.name.lower():
                self.rename(peer, self.unique_name(name, owner=peer.key))
            peer.kind, peer.connector, peer.last_seen = kind, connector, now
            peer.public_key = public_key or peer.public_key
            peer.member_key = member_key or peer.member_key
            if role is not None:
                peer.role = role
            if groups is not None:
                peer.groups = {check_group(g): r for g, r in groups.items()}
            await self.store.save_peer(peer)
            return peer, False
        peer = Peer(
            key=self.new_key(identity),
            name=self.unique_name(name),
            identity=identity,
            kind=kind,
            connector=connector,
            role=role or "",
            groups={check_group(g): r for g, r in (groups or {}).items()},
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
        return peer, True

    def rename(self, peer: Peer, new_name: str) -> None:
        self.by_name.pop(peer.name.lower(), None)
        peer.name = new_name
        self.by_name[new_name.lower()] = peer.key

    async def save_peer(self, peer: Peer) -> None:
        await self.store.save_peer(peer)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for peer in self.peers.values():
            for group in peer.groups:
                out.setdefault(group, []).append(peer.name)
        return out

    # -- conversations -----------------------------------------------------------------------
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
        self.conversations[conv.name] = conv
        await self.store.save_conversation(conv)
        for member in conv.members:
            await self.store.set_membership(conv.name, member, True)

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
