"""Feature data, engine-neutral: named collections of JSON documents (docs/storage.md).

A plugin declares its collections (:class:`Collection`, through the
``meshhub_register_collections`` hook) with the fields it queries by and the fields it searches,
then keeps its data through ``hub.records``: get, put (optionally against the revision it read:
compare-and-set), delete, find by indexed fields with cursor paging, count, full-text search,
and time-to-live per document. Writes to a collection declared with ``feed=True`` also append to
a change feed, which :class:`RecordFeed` turns into ``record`` events for the peers the
collection names, and into the ``meshhub_record_changed`` hook.

What an engine implements is :class:`RecordEngine`; SQLite serves it today
(:mod:`meshhub.builtins.sqlite_records`), and ``tests/test_record_contract.py`` is the suite
any engine must pass. Nothing here speaks SQL.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import codec
from .errors import InvalidRequest, MeshError

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger(__name__)
T = TypeVar("T")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
META_FIELDS = ("key", "created_at", "updated_at")  # may be ordered by without an index
# an indexed field may not shadow a record's own (it would read that instead); FTS5 keeps two
# column names for itself
RESERVED_INDEXES = set(META_FIELDS)
RESERVED_SEARCH = {"rank", "rowid"}
SWEEP_EVERY = 60.0
FEED_KEEP = 86400.0  # seconds the change feed keeps a change


@dataclass(frozen=True)
class Collection:
    """A named set of JSON documents with string keys.

    ``indexes``: the top-level fields documents are found by (equality and ranges) and ordered
    by; a query on any other field is a programming error. ``search``: the text fields full-text
    search looks in. ``feed``: writes are kept in the change feed. ``notify``: with ``feed``,
    which peers get a ``record`` event for a change (their keys), or ``None``: nobody."""

    name: str
    indexes: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    feed: bool = False
    notify: Callable[[Hub, Change], Iterable[str]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in (self.name, *self.indexes, *self.search):
            if not NAME.match(name) or "__" in name:
                raise ValueError(f"collection and field names are lower_snake_case, without "
                                 f"'__': {name!r}")
        for name in self.indexes:
            if name in RESERVED_INDEXES:
                raise ValueError(f"{self.name}: {name!r} is the name of a record's own field")
        for name in self.search:
            if name in RESERVED_SEARCH:
                raise ValueError(f"{self.name}: {name!r} cannot be a searchable field")
        if self.notify is not None and not self.feed:
            raise ValueError(f"collection {self.name!r}: notify needs feed=True")


@dataclass
class Record:
    """One stored document. ``revision`` grows with every write of it and is never reused."""

    collection: str
    key: str
    value: dict[str, Any]
    revision: int
    created_at: float
    updated_at: float
    expires_at: float | None = None


@dataclass
class Page:
    records: list[Record]
    cursor: str | None  # pass back as ``after`` for the next page; None: that was the last


@dataclass
class Hit:
    """A search result: the document, its relevance (higher is better) and a snippet of the
    matching text with the matched words between ``marks``."""

    record: Record
    score: float
    snippet: str


@dataclass
class Change:
    """One entry of the change feed: ``op`` is ``put``, ``delete`` or ``expire``; ``value`` is
    the document after a put (``None`` otherwise); ``previous`` is the document before a delete
    or an expiry (for ``notify`` to know who saw it; never sent to peers)."""

    seq: int
    collection: str
    key: str
    op: str
    revision: int
    value: dict[str, Any] | None
    at: float
    previous: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        return {"seq": self.seq, "collection": self.collection, "key": self.key, "op": self.op,
                "revision": self.revision, "value": self.value, "at": self.at}


@dataclass(frozen=True)
class Range:
    """A range condition on an indexed field; bounds left ``None`` are open."""

    gt: Any = None
    ge: Any = None
    lt: Any = None
    le: Any = None


@dataclass(frozen=True)
class In:
    """The field equals one of ``values``."""

    values: tuple[Any, ...]


Where = dict[str, Any]  # field -> value (None: missing or null), Range or In


class Conflict(MeshError):
    """A compare-and-set lost: the document is not at the revision the writer read.
    ``current`` is the document as it is now (``None``: there is none)."""

    code = "conflict"
    http_status = 409

    def __init__(self, message: str, *, current: Record | None) -> None:
        super().__init__(message, revision=current.revision if current else 0)
        self.current = current


class RecordEngine(Protocol):
    """What a storage engine implements for feature data (the contract of docs/storage.md),
    beside :class:`meshhub.store.Store`, whose ``open`` names the declared collections.

    Every write is durable when it returns. A document's revision is a number that grows with
    every write and is never given again to that key (SQLite takes it from one sequence, NATS
    from its stream), so a writer holding an old revision loses even after a delete and a new
    create. ``revision``: ``None`` writes whatever is there; ``0`` only creates (the key must be
    absent); ``n`` only replaces revision ``n``. A refused write raises :class:`Conflict` with
    the current document and changes nothing. Expired documents are absent to every call,
    before they are purged."""

    async def record_get(self, collection: str, key: str) -> Record | None: ...

    def record_put(self, collection: str, key: str, value: dict[str, Any], *,
                   revision: int | None = None,
                   expires_at: float | None = None) -> Awaitable[Record]:
        """Queue the write when called (a future), like ``Store.insert_message``, so writes
        keep the order of the calls; a coroutine is accepted, and starts a loop turn later."""
        ...

    def record_delete(self, collection: str, key: str, *,
                      revision: int | None = None) -> Awaitable[bool]: ...

    async def record_find(self, collection: str, where: Where, *, order: str, limit: int,
                          after: tuple[Any, str] | None) -> list[Record]: ...

    async def record_count(self, collection: str, where: Where) -> int: ...

    async def record_search(self, collection: str, query: str, *, where: Where, limit: int,
                            marks: tuple[str, str]) -> list[Hit]: ...

    async def record_changes(self, after: int, limit: int) -> list[Change]: ...

    async def feed_position(self) -> int: ...

    async def record_purge(self, now: float, feed_before: float) -> int: ...


def _encode_cursor(value: Any, key: str) -> str:
    raw = json.dumps([value, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[Any, str]:
    try:
        value, key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(key, str) or not (value is None or isinstance(value, (str, int,
                                                                             float))):
            raise TypeError(key)
    except (ValueError, TypeError):
        raise InvalidRequest("that paging cursor is not one this hub gave out",
                             code="malformed") from None
    return value, key


def search_terms(text: str) -> list[str]:
    """The words of a search as the engines match them: letters and digits, lower case, so a
    peer's query is never query syntax."""
    return [w for w in re.findall(r"\w+", text.lower()) if w][:32]


class Records:
    """``hub.records``: the record API on top of the hub's engine, with the declared collections
    checked, cursors made opaque, TTLs turned into expiry times, and the feed kept moving."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.collections: dict[str, Collection] = {}
        self.feed = RecordFeed(self)
        self._sweeper: asyncio.Task[None] | None = None
        # writes still on their way to the engine, per collection and key: a read waits for
        # them, so it sees every write made before it through this hub (even one not awaited)
        self._writing: dict[str, dict[str, list[asyncio.Future[None]]]] = {}

    @property
    def engine(self) -> RecordEngine:
        engine: RecordEngine = self.hub.store  # type: ignore[assignment]
        return engine

    def declare(self, collection: Collection) -> None:
        if collection.name in self.collections:
            raise ValueError(f"collection {collection.name!r} is declared already")
        self.collections[collection.name] = collection

    async def start(self) -> None:
        """Start the feed and the expiry sweep (the engine is open)."""
        await self.feed.start()
        self._sweeper = asyncio.ensure_future(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self.feed.stop()

    def _declared(self, name: str) -> Collection:
        found = self.collections.get(name)
        if found is None:
            raise KeyError(f"no collection {name!r} is declared (meshhub_register_collections)")
        return found

    def _check_where(self, coll: Collection, where: Where | None) -> Where:
        where = dict(where or {})
        for name in where:
            if name not in coll.indexes and name != "key":
                raise KeyError(f"{coll.name}.{name} is not an indexed field")
        return where

    # -- the order of reads and writes on this hub --------------------------------------------
    def _begin(self, collection: str, key: str) -> asyncio.Future[None]:
        """Register a write of ``key`` now: reads of it (and of the collection) wait for it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writing.setdefault(collection, {}).setdefault(key, []).append(done)
        return done

    def _end(self, collection: str, key: str, done: asyncio.Future[None]) -> None:
        by_key = self._writing.get(collection, {})
        pending = by_key.get(key, [])
        if done in pending:
            pending.remove(done)
        if not pending:
            by_key.pop(key, None)
        if not done.done():
            done.set_result(None)

    async def _written(self, collection: str, key: str | None = None,
                       before: asyncio.Future[None] | None = None) -> None:
        """Wait for the writes made so far through this hub to ``collection`` (or only to
        ``key``, those registered ``before`` a given one); their outcome is their callers'."""
        by_key = self._writing.get(collection)
        if not by_key:
            return
        if key is None:
            pending = [done for writes in by_key.values() for done in writes]
        else:
            pending = list(by_key.get(key, ()))
            if before is not None and before in pending:
                pending = pending[:pending.index(before)]
        if pending:
            await asyncio.wait(pending)

    async def _write(self, collection: str, key: str, write: Awaitable[T]) -> T:
        """Await an engine's write, registered as under way until the engine is done with it,
        even if this caller goes away meanwhile (a queued write may still commit); then the
        feed is woken for a collection that has one."""
        fed = self.collections[collection].feed
        done = self._begin(collection, key)
        try:
            future = asyncio.ensure_future(write)  # the SQLite engine's is queued already
        except BaseException:
            self._end(collection, key, done)
            raise

        def finished(write_future: asyncio.Future[T]) -> None:
            # the exception is retrieved here as well: the caller may have gone
            failed = write_future.cancelled() or write_future.exception() is not None
            self._end(collection, key, done)
            if fed and not failed:
                self.feed.poke()

        future.add_done_callback(finished)
        return await asyncio.shield(future)

    # -- documents ---------------------------------------------------------------------------
    async def get(self, collection: str, key: str) -> Record | None:
        self._declared(collection)
        await self._written(collection, key)
        return await self.engine.record_get(collection, key)

    async def put(self, collection: str, key: str, value: dict[str, Any], *,
                  revision: int | None = None, ttl: float | None = None,
                  expires_at: float | None = None) -> Record:
        """Write a document (see :class:`RecordEngine` for ``revision``); ``ttl`` seconds from
        now, or ``expires_at``, makes it expire."""
        self._declared(collection)
        if ttl is not None:
            expires_at = time.time() + ttl
        return await self._write(collection, key, self.engine.record_put(
            collection, key, value, revision=revision, expires_at=expires_at))

    async def create(self, collection: str, key: str, value: dict[str, Any], *,
                     ttl: float | None = None, expires_at: float | None = None) -> Record:
        """Write a document that must not exist yet (:class:`Conflict` if it does)."""
        return await self.put(collection, key, value, revision=0, ttl=ttl,
                              expires_at=expires_at)

    async def delete(self, collection: str, key: str, *, revision: int | None = None) -> bool:
        self._declared(collection)
        return await self._write(collection, key, self.engine.record_delete(
            collection, key, revision=revision))

    async def modify(self, collection: str, key: str,
                     change: Callable[[dict[str, Any] | None], dict[str, Any] | None], *,
                     ttl: float | None = None, attempts: int = 20) -> Record | None:
        """Read, change, write back against the revision read, again while another writer
        wins. ``change`` gets a copy of the value (``None``: absent) and returns the new value,
        or ``None`` to leave the document as it is (then the current record is returned). The
        document keeps its expiry, unless ``ttl`` gives it a new one.

        The changes of one key made through this hub take turns (each waits for the writes of
        that key made before it), so they do not conflict with one another; changes of
        different keys started together are read and queued at once (one commit on SQLite).
        A read made meanwhile waits for it, as for a put."""
        self._declared(collection)
        done = self._begin(collection, key)
        try:
            await self._written(collection, key, before=done)
            for _ in range(attempts):
                current = await self.engine.record_get(collection, key)
                wanted = change(json.loads(json.dumps(current.value)) if current else None)
                if wanted is None:
                    return current
                expires_at = (time.time() + ttl if ttl is not None
                              else current.expires_at if current else None)
                try:
                    return await self.put(collection, key, wanted,
                                          revision=current.revision if current else 0,
                                          expires_at=expires_at)
                except Conflict:
                    continue  # another hub (or a plain put) wrote it meanwhile
            raise Conflict(f"{collection}/{key} kept changing; try again",
                           current=await self.engine.record_get(collection, key))
        finally:
            self._end(collection, key, done)

    # -- queries -----------------------------------------------------------------------------
    async def find(self, collection: str, where: Where | None = None, *, order: str = "key",
                   limit: int = 100, after: str | None = None) -> Page:
        """Documents matching ``where`` (indexed fields only), ordered by ``order`` (an indexed
        field, ``key``, ``created_at`` or ``updated_at``; a leading ``-`` for newest first),
        ``limit`` at a time from the cursor ``after``."""
        coll = self._declared(collection)
        checked = self._check_where(coll, where)
        name = order.lstrip("-")
        if name not in coll.indexes and name not in META_FIELDS:
            raise KeyError(f"{coll.name} cannot be ordered by {name!r}: not an indexed field")
        if not 1 <= limit <= 10000:
            raise ValueError("limit is 1 to 10000")
        start = _decode_cursor(after) if after else None
        await self._written(collection)
        found = await self.engine.record_find(collection, checked, order=order, limit=limit + 1,
                                              after=start)
        page, more = found[:limit], len(found) > limit
        cursor = None
        if more and page:
            last = page[-1]
            cursor = _encode_cursor(_sort_value(last, name), last.key)
        return Page(page, cursor)

    async def all(self, collection: str, where: Where | None = None, *,
                  order: str = "key") -> list[Record]:
        """Every matching document (for small collections loaded at start)."""
        out: list[Record] = []
        cursor: str | None = None
        while True:
            page = await self.find(collection, where, order=order, limit=1000, after=cursor)
            out += page.records
            if page.cursor is None:
                return out
            cursor = page.cursor

    async def count(self, collection: str, where: Where | None = None) -> int:
        coll = self._declared(collection)
        checked = self._check_where(coll, where)
        await self._written(collection)
        return await self.engine.record_count(collection, checked)

    async def search(self, collection: str, text: str, *, where: Where | None = None,
                     limit: int = 20, marks: tuple[str, str] = ("[", "]")) -> list[Hit]:
        """The documents whose searchable fields hold every word of ``text`` (its first 32),
        best first; ties in key order."""
        coll = self._declared(collection)
        if not coll.search:
            raise KeyError(f"{coll.name} declares no searchable fields")
        if not 1 <= limit <= 1000:
            raise ValueError("limit is 1 to 1000")
        terms = search_terms(text)
        if not terms:
            return []
        await self._written(collection)
        return await self.engine.record_search(collection, " ".join(terms),
                                               where=self._check_where(coll, where),
                                               limit=limit, marks=marks)

    async def changes(self, after: int = 0, limit: int = 1000) -> list[Change]:
        """The change feed after position ``after`` (every ``feed`` collection, in order)."""
        return await self.engine.record_changes(after, limit)

    async def purge(self) -> int:
        """Drop expired documents (an ``expire`` change each, in feed collections) and feed
        entries older than a day; how many documents went."""
        now = time.time()
        purged = await self.engine.record_purge(now, now - FEED_KEEP)
        if purged:
            self.feed.poke()
        return purged

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                await self.purge()
            except Exception:
                log.exception("the sweep of expired records failed; it runs again in a minute")


def _sort_value(record: Record, name: str) -> Any:
    if name == "key":
        return record.key
    if name in ("created_at", "updated_at"):
        return getattr(record, name)
    value = record.value.get(name)
    # what the engine orders by: a list or an object as its JSON text (SQLite's json_extract)
    return value if value is None or isinstance(value, (str, int, float)) else codec.dumps(value)


class RecordFeed:
    """Turns the change feed into ``record`` events for connected peers and the
    ``meshhub_record_changed`` hook, in feed order. It starts at the feed's current end (what
    changed while the hub was down is read, not replayed) and is woken by every local write to
    a feed collection; an engine shared by several hubs also calls :meth:`poke` when another
    hub wrote."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.hub = records.hub
        self.position = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.position = await self.records.engine.feed_position()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def poke(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while True:
                    changes = await self.records.engine.record_changes(self.position, 500)
                    for change in changes:
                        self.position = change.seq
                        await self._tell(change)
                    if len(changes) < 500:
                        break
            except Exception:
                log.exception("the record feed stopped at %s; the next write moves it on",
                              self.position)

    async def _tell(self, change: Change) -> None:
        coll = self.records.collections.get(change.collection)
        if coll is not None and coll.notify is not None:
            try:
                keys = set(coll.notify(self.hub, change))
            except Exception:
                log.exception("collection %s: notify failed", change.collection)
                keys = set()
            if keys:
                frame = codec.dumps({"type": "event", "event": "record", **change.public()})
                for key in keys:
                    for conn in self.hub.presence.receivers(key):
                        conn.send_event(frame)
        await self.hub.plugins.each("meshhub_record_changed", hub=self.hub, change=change)

