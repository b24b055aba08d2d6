"""The audit log: who did what security- or coordination-relevant thing, and when, in a
hash chain that shows any later change of a row.

Each entry is one document of the core's ``audit`` collection, keyed by its sequence number
(zero-padded, so key order is chain order). Its ``hash`` is the SHA-256 of the entry's other
fields, ``prev`` (the previous entry's hash) among them, in one canonical JSON form: editing,
removing or reordering a row breaks the chain at that row, and :meth:`AuditLog.verify` names
the first row that does not hold.

What goes in: the event's name (``member_joined``, ``task_claimed``...), the acting peer (its
key and the name it had), the subject (an id or a name) and small details. Never the content
of a message or document: an audit row says that something happened, not what was said.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .records import Collection, Conflict, Range, Record

if TYPE_CHECKING:
    from .records import Records

AUDIT = Collection("audit", indexes=("event", "actor", "at"))
GENESIS = "0" * 64  # the ``prev`` of the first entry
MAX_DETAILS = 2048  # bytes of a row's details as JSON: ids and names, never content
KEY_DIGITS = 12


class Actor(Protocol):
    """Who acted: a peer, or a member not yet on the mesh as a peer (one joining)."""

    @property
    def key(self) -> str: ...

    @property
    def name(self) -> str: ...


def entry_key(seq: int) -> str:
    return f"{seq:0{KEY_DIGITS}d}"


def entry_hash(entry: dict[str, Any]) -> str:
    """The SHA-256 (hex) of ``entry`` without its own ``hash``, in canonical JSON (sorted keys,
    no spaces, UTF-8), which any other tool can recompute."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Verdict:
    """What :meth:`AuditLog.verify` found: ``ok``, how many rows it checked, and the first
    row that breaks the chain (``seq``) with why (``reason``)."""

    ok: bool
    checked: int
    seq: int | None = None
    reason: str = ""

    def public(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "seq": self.seq, "reason": self.reason}


class AuditLog:
    """``hub.audit``: append entries and check the chain. Appends take turns (one chain); a
    row is durable when :meth:`append` returns."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self._lock = asyncio.Lock()
        self._head: tuple[int, str] | None = None  # (seq, hash) of the newest entry

    async def _load_head(self) -> tuple[int, str]:
        page = await self.records.find(AUDIT.name, order="-key", limit=1)
        if not page.records:
            return 0, GENESIS
        value = page.records[0].value
        return int(value["seq"]), str(value["hash"])

    async def append(self, event: str, actor: Actor | None, *, subject: str = "",
                     **details: Any) -> dict[str, Any]:
        """Append one entry; ``actor`` ``None`` is the hub itself (an expiry, a deadline).
        ``details`` are small JSON values naming things, never content."""
        if len(json.dumps(details, default=str)) > MAX_DETAILS:
            raise ValueError(f"audit details of {event!r} are over {MAX_DETAILS} bytes")
        async with self._lock:
            while True:
                if self._head is None:
                    self._head = await self._load_head()
                seq, prev = self._head
                entry: dict[str, Any] = {
                    "seq": seq + 1, "at": time.time(), "event": event,
                    "actor": actor.key if actor is not None else None,
                    "actor_name": actor.name if actor is not None else "hub",
                    "subject": subject, "details": details, "prev": prev}
                entry["hash"] = entry_hash(entry)
                try:
                    await self.records.create(AUDIT.name, entry_key(seq + 1), entry)
                except Conflict:
                    self._head = None  # another writer took the number: read the head again
                    continue
                self._head = (seq + 1, entry["hash"])
                return entry

    async def entries(self, *, since: float | None = None, event: str | None = None,
                      actor: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` entries (oldest first), optionally of one ``event``, of one
        ``actor`` (a key) or at or after ``since``."""
        where: dict[str, Any] = {}
        if event is not None:
            where["event"] = event
        if actor is not None:
            where["actor"] = actor
        if since is not None:
            where["at"] = Range(ge=since)
        page = await self.records.find(AUDIT.name, where, order="-key", limit=limit)
        return [r.value for r in reversed(page.records)]

    async def verify(self) -> Verdict:
        """Walk the whole chain in order and stop at the first row that does not hold: a
        missing sequence number, a ``prev`` that is not the row before's hash, or a ``hash``
        that is not its own contents'."""
        prev, expected, checked = GENESIS, 1, 0
        cursor: str | None = None
        while True:
            page = await self.records.find(AUDIT.name, order="key", limit=1000, after=cursor)
            for record in page.records:
                bad = self._check(record, expected, prev)
                if bad is not None:
                    return Verdict(False, checked, *bad)
                checked += 1
                prev, expected = record.value["hash"], expected + 1
            if page.cursor is None:
                return Verdict(True, checked)
            cursor = page.cursor

    @staticmethod
    def _check(record: Record, expected: int, prev: str) -> tuple[int, str] | None:
        value = record.value
        seq = value.get("seq")
        if record.key != entry_key(expected):
            return expected, f"row {expected} is missing (the next row is {record.key.lstrip('0')})"
        if seq != expected:
            return expected, f"row {expected} was changed after it was written (seq differs)"
        if value.get("prev") != prev:
            return expected, f"row {expected} does not follow row {expected - 1} (prev differs)"
        if value.get("hash") != entry_hash(value):
            return expected, f"row {expected} was changed after it was written (hash differs)"
        return None
