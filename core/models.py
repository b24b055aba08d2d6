"""The core nouns: peers, conversations, messages and their deliveries."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PeerKind = Literal["agent", "human", "service"]
Status = Literal["online", "idle", "working", "dnd", "away", "offline"]
Priority = Literal["now", "next", "low"]
DeliveryState = Literal["queued", "pushed", "delivered", "read", "dead"]

PEER_KINDS: tuple[str, ...] = ("agent", "human", "service")
STATUSES: tuple[str, ...] = ("online", "idle", "working", "dnd", "away")
PRIORITIES: tuple[str, ...] = ("now", "next", "low")
# connectors whose peers hold a key or token and connect themselves (over the WebSocket or
# HTTP); the others are chat platforms a connector bridges inside the hub
SESSION_CONNECTORS = frozenset({"cli", "mcp", "ws", "web", "bench"})
REACH_MODES: tuple[str, ...] = ("auto", "always", "never")


@dataclass
class Peer:
    """Anything that can send and receive. ``key`` is the stable 8-hex address agents use.

    Its public JSON shape is :func:`meshhub.views.peer_view`'s (``identity`` is never shown).
    """

    key: str
    name: str
    identity: str
    kind: str = "agent"
    connector: str = "cli"
    role: str = ""
    groups: dict[str, str] = field(default_factory=dict)  # group name -> role in that group
    status: str = "offline"
    summary: str = ""
    public_key: str | None = None
    member_key: str | None = None  # the ed25519 key of the person or machine behind a session
    created_at: float = 0.0
    last_seen: float = 0.0

    def in_group(self, group: str) -> bool:
        """Hierarchical match: a peer in ``backend/db`` is reached by ``@backend``."""
        return any(g == group or g.startswith(group + "/") for g in self.groups)


@dataclass
class Conversation:
    name: str  # without the leading '#'
    topic: str = ""
    archived: bool = False
    created_by: str = ""
    created_at: float = 0.0
    members: set[str] = field(default_factory=set)

    def public(self) -> dict[str, Any]:
        return {
            "name": "#" + self.name,
            "topic": self.topic,
            "archived": self.archived,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "members": sorted(self.members),
        }


@dataclass
class Message:
    """Its public JSON shape is :func:`meshhub.views.message_view`'s, on every surface."""

    id: str
    sender: str  # peer key
    target: str  # the target spec as written
    conversation: str  # "#name", "@group", "*" or "dm"
    body: str
    recipients: list[str]
    kind: str = "text"
    mentions: list[str] = field(default_factory=list)
    whisper: list[str] = field(default_factory=list)
    reply_to: str | None = None
    priority: str = "next"
    attachments: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] | None = None
    client_id: str | None = None
    created_at: float = 0.0


@dataclass
class Delivery:
    message_id: str
    recipient: str
    state: str = "queued"
    lease_until: float | None = None
    attempts: int = 0
    reason: str | None = None
    updated_at: float = 0.0


@dataclass
class Member:
    """A person or team account allowed into the hub: an enrolled ed25519 member key.

    ``via`` says how it got in: ``owner`` (the hub's own key), ``local`` (a process of the hub's
    OS user on the hub's machine), ``invite`` (``hub join`` with a code) or ``existing`` (a key
    that already had peers when admission arrived). A member's ``name`` is reserved for it.
    """

    key: str
    name: str
    via: str = "invite"
    role: str = ""
    groups: dict[str, str] = field(default_factory=dict)
    invite: str | None = None  # the id of the invite it joined with
    created_at: float = 0.0
    removed_at: float | None = None
    # how a message to the member reaches its linked chat surfaces (see :mod:`meshhub.reach`):
    # {"reach": "auto"|"always"|"never", "muted": [peer keys of surfaces switched off]}
    prefs: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Invite:
    """A code that enrolls up to ``uses`` new members until ``expires_at``; only its hash is
    kept."""

    id: str
    code_hash: str
    created_by: str  # peer key
    uses: int = 1
    used: int = 0
    role: str = ""
    groups: dict[str, str] = field(default_factory=dict)
    expires_at: float | None = None
    revoked_at: float | None = None
    created_at: float = 0.0

    def problem(self, now: float) -> str | None:
        """Why this invite cannot be used now, or ``None``."""
        if self.revoked_at is not None:
            return "this invite was revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "this invite has expired"
        if self.used >= self.uses:
            return f"this invite was already used {self.used} time(s), its limit"
        return None

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("code_hash")
        return data
