"""The audit log: who did what security- or coordination-relevant thing, and when, in a
hash chain that shows any later change of a row.

Each entry is one document of the core's ``audit`` collection, keyed by its sequence number
(zero-padded, so key order is chain order). Its ``hash`` is the SHA-256 of the entry's other
fields, ``prev`` (the previous entry's hash) among them, in one canonical JSON form: editing,
removing or reordering a row breaks the chain at that row, and :meth:`AuditLog.verify` names
the first row that does not hold.

Rows dropped from the end (or an older backup of the database put back) leave a shorter chain
that is whole. So the hub also keeps the newest row's number and hash in a file beside the
database (``audit.head``, rewritten after every append): :meth:`AuditLog.verify` compares the
chain's end with it, and a hub that starts on a log shorter than the file says first appends an
``audit_truncated`` row, which ``verify`` names from then on. That file is a second witness, not
a signature: whoever can write both can hide a change, so an owner who wants a third keeps the
head ``hub audit verify`` prints somewhere else.

What goes in: the event's name (``member_joined``, ``task_claimed``...), the acting peer (its
key and the name it had), the subject (an id or a name) and small details. Never the content
of a message or document: an audit row says that something happened, not what was said.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .records import Collection, Conflict, Range, Record

if TYPE_CHECKING:
    from .records import Records

log = logging.getLogger(__name__)
AUDIT = Collection("audit", indexes=("event", "actor", "at"))
GENESIS = "0" * 64  # the ``prev`` of the first entry
MAX_DETAILS = 2048  # bytes of a row's details as JSON: ids and names, never content
KEY_DIGITS = 12
TRUNCATED = "audit_truncated"  # the event of a row saying the log was found cut short


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
    head: dict[str, Any] | None = None  # the newest row checked: {"seq", "hash"}

    def public(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "seq": self.seq, "reason": self.reason,
                "head": self.head}


class AuditLog:
    """``hub.audit``: append entries and check the chain. Appends take turns (one chain); a
    row is durable when :meth:`append` returns."""

    def __init__(self, records: Records, anchor: Path | None = None) -> None:
        self.records = records
        self.anchor = anchor  # the audit.head file (None: no second witness)
        self._lock = asyncio.Lock()
        self._head: tuple[int, str] | None = None  # (seq, hash) of the newest entry

    def read_anchor(self) -> tuple[int, str] | None:
        """(seq, hash) the hub last wrote to ``audit.head``, or ``None`` without one."""
        if self.anchor is None:
            return None
        try:
            found = json.loads(self.anchor.read_text())
            return int(found["seq"]), str(found["hash"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError) as exc:
            log.error("audit: %s cannot be read (%s); the log's end is not checked against it",
                      self.anchor, exc)
            return None

    def _write_anchor(self, seq: int, digest: str) -> None:
        if self.anchor is None:
            return
        tmp = self.anchor.with_name(self.anchor.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"seq": seq, "hash": digest}))
            os.replace(tmp, self.anchor)
        except OSError as exc:
            log.error("audit: %s not written: %s", self.anchor, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    async def _load_head(self) -> tuple[int, str]:
        page = await self.records.find(AUDIT.name, order="-key", limit=1)
        if not page.records:
            return 0, GENESIS
        value = page.records[0].value
        return int(value["seq"]), str(value["hash"])

    async def _row(self, seq: int) -> dict[str, Any] | None:
        found = await self.records.get(AUDIT.name, entry_key(seq))
        return found.value if found is not None else None

    async def _cut_short(self, head: tuple[int, str]) -> dict[str, Any] | None:
        """What a log that no longer ends where ``audit.head`` says is missing, or ``None``."""
        anchor = self.read_anchor()
        if anchor is None or anchor == head:
            return None
        seq, digest = anchor
        row = await self._row(seq) if seq <= head[0] else None
        if row is not None and row.get("hash") == digest:
            return None  # the file lags (a crash between the commit and its write)
        return {"expected_seq": seq, "expected_hash": digest, "found_seq": head[0]}

    async def open(self) -> None:
        """Read the head at start, and record in the log if it was cut short since the hub
        last wrote to it (before any other row is appended)."""
        async with self._lock:
            await self._start()

    async def _start(self) -> None:
        self._head = await self._load_head()
        missing = await self._cut_short(self._head)
        if missing is not None:
            log.error("audit: the log ends at row %s but the hub had written row %s; "
                      "recording that in the log", missing["found_seq"],
                      missing["expected_seq"])
            await self._append(TRUNCATED, None, "audit", missing)

    async def append(self, event: str, actor: Actor | None, *, subject: str = "",
                     **details: Any) -> dict[str, Any]:
        """Append one entry; ``actor`` ``None`` is the hub itself (an expiry, a deadline).
        ``details`` are small JSON values naming things, never content."""
        if len(json.dumps(details, default=str)) > MAX_DETAILS:
            raise ValueError(f"audit details of {event!r} are over {MAX_DETAILS} bytes")
        async with self._lock:
            if self._head is None:
                await self._start()
            return await self._append(event, actor, subject, details)

    async def _append(self, event: str, actor: Actor | None, subject: str,
                      details: dict[str, Any]) -> dict[str, Any]:
        """Append under the lock, the head known."""
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
            self._write_anchor(seq + 1, entry["hash"])
            return entry

    async def entries(self, *, since: float | None = None, until: float | None = None,
                      event: str | None = None, actor: str | None = None,
                      after_seq: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Entries oldest first, optionally of one ``event``, of one ``actor`` (a key), or in
        ``[since, until)``: the newest ``limit`` of them, or with ``after_seq`` the first
        ``limit`` after that row (to read the whole log in order, page by page)."""
        where: dict[str, Any] = {}
        if event is not None:
            where["event"] = event
        if actor is not None:
            where["actor"] = actor
        if since is not None or until is not None:
            where["at"] = Range(ge=since, lt=until)
        if after_seq is not None:
            where["key"] = Range(gt=entry_key(after_seq))
            page = await self.records.find(AUDIT.name, where, order="key", limit=limit)
            return [r.value for r in page.records]
        page = await self.records.find(AUDIT.name, where, order="-key", limit=limit)
        return [r.value for r in reversed(page.records)]

    async def verify(self) -> Verdict:
        """Walk the whole chain in order and stop at the first row that does not hold: a
        missing sequence number, a ``prev`` that is not the row before's hash, a ``hash``
        that is not its own contents', or a row saying the log was found cut short; then
        check the end against ``audit.head``."""
        prev, expected, checked = GENESIS, 1, 0
        anchor = self.read_anchor()
        anchored: str | None = None  # the hash of the row audit.head names, once walked
        cursor: str | None = None
        while True:
            page = await self.records.find(AUDIT.name, order="key", limit=1000, after=cursor)
            for record in page.records:
                bad = self._check(record, expected, prev)
                if bad is not None:
                    return Verdict(False, checked, *bad, head=self._head_view(expected - 1,
                                                                              prev))
                checked += 1
                prev, expected = record.value["hash"], expected + 1
                if anchor is not None and anchor[0] == checked:
                    anchored = prev
            if page.cursor is None:
                break
            cursor = page.cursor
            await asyncio.sleep(0)  # a long log: let the hub serve others between pages
        head = self._head_view(checked, prev)
        if anchor is not None and anchor[0] > checked:
            return Verdict(False, checked, checked + 1,
                           f"rows {checked + 1} to {anchor[0]} are missing: the log ends at row "
                           f"{checked} but the hub wrote row {anchor[0]} (audit.head)", head)
        if anchor is not None and anchored is not None and anchored != anchor[1]:
            return Verdict(False, checked, anchor[0],
                           f"row {anchor[0]} is not the row the hub wrote (its hash differs "
                           f"from audit.head)", head)
        return Verdict(True, checked, head=head)

    @staticmethod
    def _head_view(seq: int, digest: str) -> dict[str, Any] | None:
        return {"seq": seq, "hash": digest} if seq > 0 else None

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
        if value.get("event") == TRUNCATED:
            details = value.get("details") or {}
            return expected, (f"row {expected} records that the log was cut short: the hub "
                              f"found it ending at row {details.get('found_seq')} after it had "
                              f"written row {details.get('expected_seq')}")
        return None
