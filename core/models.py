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


@dataclass
class Peer:
    """Anything that can send and receive. ``key`` is the stable 8-hex address agents use."""

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

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("identity", None)
        return data

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

    def public(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies and is ~15x slower on the push path
        return {
            "id": self.id, "sender": self.sender, "target": self.target,
            "conversation": self.conversation, "body": self.body,
            "recipients": list(self.recipients), "kind": self.kind,
            "mentions": list(self.mentions), "whisper": list(self.whisper),
            "reply_to": self.reply_to, "priority": self.priority,
            "attachments": list(self.attachments), "data": self.data,
            "client_id": self.client_id, "created_at": self.created_at,
        }


@dataclass
class Delivery:
    message_id: str
    recipient: str
    state: str = "queued"
    lease_until: float | None = None
    attempts: int = 0
    reason: str | None = None
    updated_at: float = 0.0
