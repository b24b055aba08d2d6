"""The default store: SQLite through sqlite-utils, WAL, one writer thread that batches.

Every call becomes an operation on a queue owned by one thread with one connection. That thread
takes everything waiting (about ``MAX_BATCH`` operations), runs it in one transaction (each
operation in its own savepoint, so one failing operation does not spoil the others), commits, and
only then resolves the callers' futures. Many concurrent sends therefore share one commit, and
no caller is told "done" before its data is on disk. Operations submitted in one turn of the event
loop reach that thread together, in one hand-over (one wake-up of the thread, not one per
operation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub import codec, hookimpl
from meshhub.config import ConfigError
from meshhub.models import Conversation, Delivery, Message, Peer
from meshhub.records import Collection
from meshhub.store import MessageWindow, StateChange

from .migrations import core_migrations
from .sqlite_conversations import ConversationTotals
from .sqlite_members import MemberTables
from .sqlite_reads import _MESSAGE_COLUMNS, MessageReads, _message_from_row
from .sqlite_records import RecordTables, ensure_schema
from .sqlite_search import MessageSearch
from .sqlite_window import message_window

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 2000

# A transition may only move forward along this order ('dead' is terminal).
_RANK = {"queued": 0, "pushed": 1, "delivered": 2, "read": 3, "dead": 4}

class _Op:
    __slots__ = ("fn", "future", "loop")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _resolve_all(items: list[tuple[_Op, bool, Any]]) -> None:
    for op, ok, value in items:
        _resolve(op.future, ok, value)


class SQLiteStore(MessageReads, MemberTables, RecordTables, MessageSearch):
    """SQLite engine for :class:`meshhub.store.Store`."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._queue: queue.SimpleQueue[list[_Op] | None] = queue.SimpleQueue()
        self._handoff: list[_Op] = []  # submitted this loop turn, not yet with the thread
        self._conversation_totals = ConversationTotals()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self.batches = 0
        self.operations = 0
        self._collections: dict[str, Collection] = {}

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self, migrations: list[Migrations],
                   collections: list[Collection] | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._collections = {c.name: c for c in collections or ()}
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def start() -> None:
            try:
                conn = sqlite3.connect(str(self.path), isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.execute("PRAGMA busy_timeout=5000")
                conn.execute("PRAGMA foreign_keys=ON")
                db = Database(conn)
                with conn:  # before the migrations, which may move old rows into collections
                    conn.execute("BEGIN")
                    ensure_schema(conn, self._collections.values())
                for migration_set in [core_migrations, *migrations]:
                    migration_set.apply(db)
                self._conn = conn
            except sqlite3.DatabaseError as exc:
                damaged = getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT,
                                                                      sqlite3.SQLITE_NOTADB)
                advice = "; restore it from a backup (docs/operations.md)" if damaged else ""
                failed = ConfigError(f"cannot open the database {self.path}: {exc}{advice}")
                loop.call_soon_threadsafe(_resolve, ready, False, failed)
                return
            except BaseException as exc:  # reported to open()'s caller
                loop.call_soon_threadsafe(_resolve, ready, False, exc)
                return
            loop.call_soon_threadsafe(_resolve, ready, True, None)
            self._run()

        self._thread = threading.Thread(target=start, name="meshhub-sqlite", daemon=True)
        self._thread.start()
        await ready
        # reads that need no ordering against queued writes run on their own connection in the
        # caller's thread: WAL readers do not wait for the writer, and skip two thread hops
        self._reader = sqlite3.connect(str(self.path), isolation_level=None,
                                       check_same_thread=False)
        self._reader.execute("PRAGMA query_only=ON")
        self._start_indexer(self.path.absolute().as_uri() + "?mode=ro")

    async def close(self) -> None:
        await self._stop_indexer()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._thread is None:
            return
        self._hand_over()
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    def _run(self) -> None:
        assert self._conn is not None
        conn = self._conn
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = first
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch += item
            self._run_batch(conn, batch)
            if stop:
                break
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        results: list[tuple[_Op, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = op.fn(conn)
                except Exception as exc:  # this caller's error only
                    conn.execute("ROLLBACK TO op")
                    results.append((op, False, exc))
                else:
                    results.append((op, True, value))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except Exception as exc:  # the commit itself failed: nobody is told "done"
            log.exception("store batch failed")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(op, False, exc) for op in batch]
        self.batches += 1
        self.operations += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, bool, Any]]] = {}
        for item in results:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():  # one wake-up of each loop per batch
            loop.call_soon_threadsafe(_resolve_all, items)

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` now (so call order is write order) and return its future."""
        if self._thread is None:
            raise RuntimeError("the store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._handoff.append(_Op(fn, future, loop))
        if len(self._handoff) == 1:
            loop.call_soon(self._hand_over)
        return future

    def _hand_over(self) -> None:
        """Give the writer thread everything submitted since the last hand-over (both run on
        the hub's event loop, so the list needs no lock)."""
        ops, self._handoff = self._handoff, []
        if ops:
            self._queue.put(ops)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read now on the read connection: it sees every write whose future has
        resolved. Reads that must come after writes merely *queued* (the drain's final pass,
        the lease sweep) go through :meth:`_call` instead, behind those writes."""
        if self._reader is None:
            raise RuntimeError("the store is not open")
        return fn(self._reader)

    # -- peers and conversations -------------------------------------------------------------
    async def load_peers(self) -> list[Peer]:
        def run(conn: sqlite3.Connection) -> list[Peer]:
            rows = conn.execute(
                "SELECT key, name, identity, kind, connector, role, groups_json, status, summary, "
                "public_key, member_key, created_at, last_seen FROM peers"
            ).fetchall()
            return [
                Peer(
                    key=r[0], name=r[1], identity=r[2], kind=r[3], connector=r[4], role=r[5],
                    groups=json.loads(r[6]), status=r[7], summary=r[8], public_key=r[9],
                    member_key=r[10], created_at=r[11], last_seen=r[12],
                )
                for r in rows
            ]

        return await self._call(run)

    async def save_peer(self, peer: Peer) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO peers (key, name, name_lower, identity, kind, connector, role, "
                "groups_json, status, summary, public_key, member_key, created_at, last_seen) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
                "name=excluded.name, name_lower=excluded.name_lower, kind=excluded.kind, "
                "connector=excluded.connector, role=excluded.role, "
                "groups_json=excluded.groups_json, status=excluded.status, "
                "summary=excluded.summary, public_key=excluded.public_key, "
                "member_key=excluded.member_key, last_seen=excluded.last_seen",
                (
                    peer.key, peer.name, peer.name.lower(), peer.identity, peer.kind,
                    peer.connector, peer.role, json.dumps(peer.groups), peer.status,
                    peer.summary, peer.public_key, peer.member_key, peer.created_at,
                    peer.last_seen,
                ),
            )

        await self._call(run)

    async def load_conversations(self) -> list[Conversation]:
        def run(conn: sqlite3.Connection) -> list[Conversation]:
            convs = {
                r[0]: Conversation(
                    name=r[0], topic=r[1], archived=bool(r[2]), created_by=r[3], created_at=r[4]
                )
                for r in conn.execute(
                    "SELECT name, topic, archived, created_by, created_at FROM conversations"
                )
            }
            for name, peer in conn.execute("SELECT conversation, peer FROM conversation_members"):
                if name in convs:
                    convs[name].members.add(peer)
            return list(convs.values())

        return await self._call(run)

    async def save_conversation(self, conversation: Conversation) -> None:
        c = conversation

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO conversations (name, topic, archived, created_by, created_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET topic=excluded.topic, "
                "archived=excluded.archived",
                (c.name, c.topic, int(c.archived), c.created_by, c.created_at),
            )

        await self._call(run)

    async def set_membership(self, conversation: str, peer: str, member: bool) -> None:
        def run(conn: sqlite3.Connection) -> None:
            if member:
                conn.execute(
                    "INSERT OR IGNORE INTO conversation_members (conversation, peer) VALUES (?,?)",
                    (conversation, peer),
                )
            else:
                conn.execute(
                    "DELETE FROM conversation_members WHERE conversation=? AND peer=?",
                    (conversation, peer),
                )

        await self._call(run)

    # -- messages ----------------------------------------------------------------------------
    def insert_message(
        self, message: Message, mentioned: set[str], leased: set[str], lease_until: float
    ) -> asyncio.Future[tuple[str, bool]]:
        m = message
        empty = "[]"  # most messages have no mentions, whispers or attachments

        def run(conn: sqlite3.Connection) -> tuple[str, bool]:
            if m.client_id is not None:
                row = conn.execute(
                    "SELECT id FROM messages WHERE sender=? AND client_id=?",
                    (m.sender, m.client_id),
                ).fetchone()
                if row is not None:
                    return row[0], False
            conn.execute(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    m.id, m.sender, m.target, m.conversation, m.body, m.kind,
                    codec.dumps(m.recipients), codec.dumps(m.mentions) if m.mentions else empty,
                    codec.dumps(m.whisper) if m.whisper else empty, m.reply_to, m.priority,
                    codec.dumps(m.attachments) if m.attachments else empty,
                    codec.dumps(m.data) if m.data is not None else None, m.client_id,
                    m.created_at,
                ),
            )
            conn.executemany(
                "INSERT INTO deliveries (message_id, recipient, state, mentioned, lease_until, "
                "attempts, updated_at) VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        m.id, r, "pushed" if r in leased else "queued", int(r in mentioned),
                        lease_until if r in leased else None, int(r in leased), m.created_at,
                    )
                    for r in m.recipients
                ],
            )
            return m.id, True

        return self._submit(run)

    async def change_states(self, changes: list[StateChange]) -> list[bool]:
        def run(conn: sqlite3.Connection) -> list[bool]:
            now = time.time()
            out: list[bool] = []
            for ch in changes:
                if ch.state == "queued":
                    allowed = ["pushed"]  # a lapsed lease of an offline recipient
                else:
                    allowed = [s for s, rank in _RANK.items() if rank < _RANK[ch.state]]
                if ch.state == "pushed":
                    allowed.append("pushed")  # a redelivery renews the lease
                marks = ",".join("?" * len(allowed))
                cur = conn.execute(
                    f"UPDATE deliveries SET state=?, lease_until=?, reason=COALESCE(?, reason), "
                    f"attempts=attempts + ?, updated_at=? "
                    f"WHERE message_id=? AND recipient=? AND state IN ({marks})",
                    (
                        ch.state, ch.lease_until, ch.reason, int(ch.state == "pushed"), now,
                        ch.message_id, ch.recipient, *allowed,
                    ),
                )
                out.append(cur.rowcount > 0)
            return out

        return await self._call(run)

    async def advance(self, changes: list[StateChange]) -> int:
        by_state: dict[str, list[tuple[Any, ...]]] = {}
        now = time.time()
        for ch in changes:
            by_state.setdefault(ch.state, []).append((now, ch.message_id, ch.recipient))

        def run(conn: sqlite3.Connection) -> int:
            total = 0
            for state, rows in by_state.items():
                earlier = [s for s, rank in _RANK.items() if rank < _RANK[state]]
                marks = ",".join("?" * len(earlier))
                cur = conn.executemany(
                    f"UPDATE deliveries SET state='{state}', lease_until=NULL, updated_at=? "
                    f"WHERE message_id=? AND recipient=? AND state IN ({marks})",
                    [(*row, *earlier) for row in rows],
                )
                total += cur.rowcount
            return total

        if not set(by_state) <= {"delivered", "read"}:
            raise ValueError("advance() records acks and reads only")
        return await self._call(run)

    async def get_message(self, message_id: str) -> Message | None:
        def run(conn: sqlite3.Connection) -> Message | None:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id=?", (message_id,)
            ).fetchone()
            return _message_from_row(row) if row else None

        return self._read(run)

    async def find_by_client_id(self, sender: str, client_id: str) -> Message | None:
        def run(conn: sqlite3.Connection) -> Message | None:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender=? AND client_id=?",
                (sender, client_id),
            ).fetchone()
            return _message_from_row(row) if row else None

        return self._read(run)

    async def pending_for(
        self, recipient: str, limit: int, after: str = "", include_pushed: bool = True
    ) -> list[Message]:
        states = "('queued','pushed')" if include_pushed else "('queued')"

        def run(conn: sqlite3.Connection) -> list[Message]:
            cols = ", ".join("m." + c.strip() for c in _MESSAGE_COLUMNS.split(","))
            rows = conn.execute(
                f"SELECT {cols} FROM deliveries d JOIN messages m ON m.id = d.message_id "
                f"WHERE d.recipient=? AND d.state IN {states} AND d.message_id > ? "
                "ORDER BY d.message_id LIMIT ?",
                (recipient, after, limit),
            ).fetchall()
            return [_message_from_row(r) for r in rows]

        return await self._call(run)

    async def expired_leases(self, now: float, limit: int) -> list[tuple[str, str]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return [
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT message_id, recipient FROM deliveries WHERE state='pushed' "
                    "AND lease_until < ? ORDER BY message_id LIMIT ?",
                    (now, limit),
                )
            ]

        return await self._call(run)

    async def expire_older_than(self, cutoff: float, reason: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            # through the open deliveries (few), not the old messages (a second's read with a
            # million stored, every sweep, holding up every write behind it). The planner takes
            # the partial index only when the WHERE repeats its condition as written in m008;
            # INDEXED BY makes a mismatch an error (test_ttl_* runs this) instead of a slow scan.
            cur = conn.execute(
                "UPDATE deliveries INDEXED BY deliveries_open SET state='dead', reason=?, "
                "lease_until=NULL, updated_at=? WHERE state IN ('queued','pushed') AND "
                "(SELECT created_at FROM messages WHERE id = deliveries.message_id) < ?",
                (reason, time.time(), cutoff),
            )
            return cur.rowcount

        return await self._call(run)

    async def deliveries_of(self, message_id: str) -> list[Delivery]:
        def run(conn: sqlite3.Connection) -> list[Delivery]:
            return [
                Delivery(
                    message_id=message_id, recipient=r[0], state=r[1], lease_until=r[2],
                    attempts=r[3], reason=r[4], updated_at=r[5],
                )
                for r in conn.execute(
                    "SELECT recipient, state, lease_until, attempts, reason, updated_at "
                    "FROM deliveries WHERE message_id=? ORDER BY recipient",
                    (message_id,),
                )
            ]

        return self._read(run)

    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer thread, in this batch's transaction (its own
        savepoint); the result comes back once the batch has committed. SQLite only, and not
        part of :class:`meshhub.store.Store`: meshhub's features keep their data through the
        record API, which every engine serves; a third-party plugin with tables of its own
        may use this, and then runs on SQLite only."""
        return await self._call(fn)

    async def stats(self) -> dict[str, Any]:
        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            states = dict(
                conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
            )
            messages = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            return {"engine": "sqlite", "path": str(self.path), "messages": messages,
                    "deliveries": states, "batches": self.batches,
                    "operations": self.operations}

        return self._read(run)

    async def message_window(self, viewer: str, since: float, until: float) -> MessageWindow:
        return await self._read_apart(lambda conn: message_window(conn, viewer, since, until))

    async def stored_bytes(self, before: float) -> dict[str, int]:
        rows = await self._read_apart(lambda conn: conn.execute(  # one long scan
            "SELECT sender, SUM(LENGTH(CAST(body AS BLOB))) FROM messages "
            "WHERE created_at < ? GROUP BY sender", (before,)).fetchall())
        return {sender: int(size) for sender, size in rows}

    async def _read_apart(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a long read in a thread on a read-only connection of its own, so neither the
        event loop nor the writer waits for it."""
        def run() -> T:
            conn = sqlite3.connect(self.path.absolute().as_uri() + "?mode=ro", uri=True)
            try:
                return fn(conn)
            finally:
                conn.close()

        return await asyncio.to_thread(run)


@hookimpl
def meshhub_provide_store(hub: Any) -> SQLiteStore:
    """The default engine: ``<MESHHUB_HOME>/meshhub.db``."""
    return SQLiteStore(hub.config.db_path, synchronous=hub.config.sqlite_synchronous)
