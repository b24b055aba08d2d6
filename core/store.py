"""The store contract the core relies on, and the write batcher every engine can reuse.

The core talks to storage only through :class:`Store`. The default engine is SQLite
(:mod:`meshhub.builtins.sqlite_store`); another engine replaces it by answering the
``meshhub_provide_store`` hook first.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .sanitize import ENGINE_MARKS

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

    from .models import Conversation, Delivery, Message, Peer
    from .records import Collection


@dataclass
class StateChange:
    """One delivery row moving to a new state (see :class:`meshhub.models.Delivery`)."""

    message_id: str
    recipient: str
    state: str
    lease_until: float | None = None
    reason: str | None = None


UNREAD_STATES: tuple[str, ...] = ("queued", "pushed", "delivered")  # not read yet, not dead
CAPS: tuple[str, ...] = ("read", "send", "admin")  # each includes the ones before it


@dataclass
class TokenInfo:
    """A bearer token as stored (its hash only). ``cap`` is the most it may do: ``read``
    (read-only actions), ``send`` (everything a member does) or ``admin`` (also the owner's
    actions, when its member is the owner)."""

    id: str
    peer: str
    label: str
    cap: str = "send"
    created_at: float = 0.0
    expires_at: float | None = None
    token_hash: str = ""

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "cap": self.cap,
                "created_at": self.created_at, "expires_at": self.expires_at}


@dataclass
class ThreadSummary:
    """A thread root's replies as one viewer sees them: only the replies it sent or received
    count, so a reply whispered to others is never counted and nobody learns it exists.
    ``participants``: the keys of who replied, in the order of their first reply; ``unread``:
    the replies to the viewer it has not read yet (its per-thread read cursor is the state of
    its delivery rows)."""

    root: str
    replies: int = 0
    last_reply_at: float | None = None
    last_reply_by: str | None = None
    participants: list[str] = field(default_factory=list)
    unread: int = 0


@dataclass
class ConversationStats:
    """A #conversation's figures as one viewer sees them: ``messages`` counts the
    conversation's messages but the whispers not meant for the viewer, ``last_activity`` is the
    time of the newest of those, ``unread`` the viewer's unread messages in it."""

    name: str  # without the leading '#'
    messages: int = 0
    last_activity: float | None = None
    unread: int = 0


@dataclass
class WindowCount:
    """Messages of one sender in one conversation (``#name``, ``@group``, ``dm``...) within a
    time window, as one viewer sees them; ``replies`` of them answer a thread."""

    conversation: str
    sender: str
    messages: int
    replies: int


@dataclass
class MessageWindow:
    """What :meth:`Store.message_window` counted: per conversation and sender, and how many
    threads got replies in each conversation."""

    counts: list[WindowCount] = field(default_factory=list)
    threads: dict[str, int] = field(default_factory=dict)


@dataclass
class InboxItem:
    message: Message
    state: str
    mentioned: bool = False
    replies: int = 0
    thread: ThreadSummary | None = None  # for a root with replies the reader can see


# How an engine marks the matched words in a message search's snippet: two control characters
# no text keeps (the engine removes them from the bodies it quotes), so a mark is never a
# peer's own character. :mod:`meshhub.builtins.search_actions` turns them into the public marks.
MARK_START, MARK_END = ENGINE_MARKS


@dataclass
class MessageHit:
    """A message search's hit: the message, its relevance (higher is better), a snippet of
    its body with the matched words between :data:`MARK_START` and :data:`MARK_END`, and the
    viewer's delivery state (``sent`` for a message it sent)."""

    message: Message
    score: float
    snippet: str
    state: str


@dataclass
class MessageSearchResult:
    """What a message search found: its ``hits``, best first, and whether every stored
    message was searched (``complete``). An engine still indexing a large backlog (a hub
    upgraded with many messages) answers from what it has indexed rather than making the
    searcher wait, and says so with ``complete=False``. ``cut_short``: the engine stopped
    examining matches at its cap (a common word, filters few of them pass) before it found
    enough hits."""

    hits: list[MessageHit]
    complete: bool = True
    cut_short: bool = False


class Store(Protocol):
    """Everything the hub persists. Every method is a coroutine; a returned write is durable.

    The message hot path has its own methods below; feature data goes through the record API
    (:class:`meshhub.records.RecordEngine`, which an engine implements as well)."""

    async def open(self, migrations: list[Migrations],
                   collections: list[Collection] | None = None) -> None:
        """Open the engine with the collections the plugins declared (``migrations``: the
        SQLite engine's schema steps; another engine ignores them)."""
        ...

    async def close(self) -> None: ...

    # peers and conversations (small; the hub keeps them in memory and writes through)
    async def load_peers(self) -> list[Peer]: ...

    async def save_peer(self, peer: Peer) -> None: ...

    async def load_conversations(self) -> list[Conversation]: ...

    async def save_conversation(self, conversation: Conversation) -> None: ...

    async def set_membership(self, conversation: str, peer: str, member: bool) -> None: ...

    async def delete_peer(self, peer: str) -> None:
        """Remove a peer's row (its member was removed); its messages stay."""
        ...

    # messages and deliveries (the hot path)
    def insert_message(
        self, message: Message, mentioned: set[str], leased: set[str], lease_until: float
    ) -> Awaitable[tuple[str, bool]]:
        """Store a message and one queued delivery per recipient in one transaction.

        Not a coroutine: the write must be queued when this returns, so writes keep the order
        of the calls (per-sender order) without a task per message. A coroutine is accepted
        too; the hub then schedules it at once, which keeps the order as well.

        Rows of recipients in ``leased`` start as ``pushed`` with that lease (the hub pushes
        them right after the commit). Returns ``(id, created)``; when the sender already sent
        this ``client_id`` the first message's id comes back with ``created=False`` and nothing
        new is stored.
        """
        ...

    async def change_states(self, changes: list[StateChange]) -> list[bool]:
        """Apply delivery transitions; each result says whether that row changed.

        A transition never goes backwards: ``delivered`` is not turned into ``pushed`` again, a
        ``read`` row stays read, a ``dead`` row stays dead.
        """
        ...

    async def advance(self, changes: list[StateChange]) -> int:
        """Like :meth:`change_states` for acks and read receipts, in bulk; returns how many
        rows changed."""
        ...

    async def get_message(self, message_id: str) -> Message | None: ...

    async def find_by_client_id(self, sender: str, client_id: str) -> Message | None:
        """The message ``sender`` already sent with this ``client_id``, if any."""
        ...

    async def pending_for(
        self, recipient: str, limit: int, after: str = "", include_pushed: bool = True
    ) -> list[Message]:
        """Messages for ``recipient`` still queued (or pushed, unless ``include_pushed`` is
        false) with ids after ``after``, oldest first."""
        ...

    async def expired_leases(self, now: float, limit: int) -> list[tuple[str, str]]:
        """(message_id, recipient) of pushed rows whose lease ended before ``now``."""
        ...

    async def expire_older_than(self, cutoff: float, reason: str) -> int:
        """Mark undelivered rows of messages created before ``cutoff`` dead; return how many."""
        ...

    async def deliveries_of(self, message_id: str) -> list[Delivery]: ...

    async def inbox(
        self,
        recipient: str,
        *,
        since: str | None,
        unread_only: bool,
        top_level_only: bool,
        limit: int,
    ) -> list[InboxItem]: ...

    async def thread(self, root_id: str, viewer: str) -> list[InboxItem]:
        """A thread's root and the replies ``viewer`` sent or received, oldest first, each
        with the viewer's delivery state (``sent`` for its own)."""
        ...

    async def thread_summaries(self, root_ids: list[str],
                               viewer: str) -> dict[str, ThreadSummary]:
        """The summaries of these thread roots as ``viewer`` sees them, in one grouped read;
        roots without a reply the viewer can see are left out."""
        ...

    async def conversation_stats(self, names: list[str],
                                 viewer: str) -> dict[str, ConversationStats]:
        """:class:`ConversationStats` of these conversations (names without ``#``) for
        ``viewer``, in a few grouped reads whatever their number."""
        ...

    async def unread_counts(self, recipient: str) -> dict[str, Any]: ...

    async def message_window(self, viewer: str, since: float, until: float) -> MessageWindow:
        """The messages created in ``[since, until)`` that ``viewer`` sent or has a live
        delivery of (so a whisper to others is never counted), counted per conversation and
        sender by one aggregate over the engine's indexes, off the event loop: a window of a
        million messages is never read row by row."""
        ...

    async def history(
        self,
        viewer: str,
        *,
        conversation: str | None,
        partner: str | None,
        before: str | None,
        after: str | None,
        top_level_only: bool,
        limit: int,
    ) -> list[InboxItem]:
        """A page of the messages ``viewer`` sent or received, oldest first: in one
        ``conversation``, or the direct messages with the peer key ``partner``, or all; the
        newest ``limit`` before ``before`` (or the oldest after ``after``). Sent messages have
        state ``sent``; dead rows are left out."""
        ...

    async def search_messages(
        self,
        viewer: str,
        query: str,
        *,
        conversation: str | None,
        partner: str | None,
        sender: str | None,
        since: float | None,
        until: float | None,
        kinds: list[str] | None,
        limit: int,
    ) -> MessageSearchResult:
        """The messages ``viewer`` may see (as in :meth:`history`: it sent them, or it has a
        delivery row that is not dead) whose body holds every word of ``query``, best first.
        ``query`` is a peer's text: only its words count (:func:`meshhub.records.search_terms`),
        never query syntax. Filters as in :meth:`history` (``conversation``, ``partner``),
        plus the sender's key, ``since <= created_at < until`` and the kinds. A message stored
        before the call (its send acknowledged) is found, unless the engine is still indexing
        a backlog too large to finish first: then the result is not ``complete``."""
        ...

    async def attachment_for(self, viewer: str, sha256: str) -> dict[str, Any] | None:
        """The attachment whose ``file`` is exactly ``sha256`` of a message ``viewer`` sent or
        received (the first found), or ``None``: who may read a file whose grant may not be
        written yet (:mod:`meshhub.builtins.files_actions`)."""
        ...

    # bearer tokens for the HTTP API and /mcp (only their SHA-256 hashes are kept)
    async def save_token(self, token: TokenInfo) -> None: ...

    async def token_info(self, token_hash: str, now: float) -> TokenInfo | None:
        """The token with this hash if it is neither revoked nor expired at ``now``."""
        ...

    async def list_tokens(self, peers: list[str], now: float) -> list[TokenInfo]:
        """The live tokens of these peers, oldest first."""
        ...

    async def revoke_tokens(self, peer: str, *, label: str | None = None,
                            token_id: str | None = None) -> list[str]:
        """Revoke the peer's tokens (all, or those with this label or id); returns the hashes
        of the tokens revoked, so their open connections can be closed."""
        ...

    async def stats(self) -> dict[str, Any]: ...

    async def stored_bytes(self, before: float) -> dict[str, int]:
        """Bytes of message bodies (UTF-8) per sender, of the messages created before
        ``before``: the storage quotas' starting point (:mod:`meshhub.limits`), read once at
        start. It may take a while with many messages; it must not hold up other calls."""
        ...
