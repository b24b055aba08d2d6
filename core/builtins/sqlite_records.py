"""The SQLite engine's record API (:class:`meshhub.records.RecordEngine`).

One table per collection, ``rec_<name>``: the key, the document as JSON text, its revision and
times. Each indexed field is a virtual generated column (``f_<field>``, computed from the JSON,
never stored twice) with an index on (field, key, expires_at), so equality, ranges, ordered
pages and counts read an index. Searchable fields feed an FTS5 table ``rec_<name>__s`` whose
rowid is the document's. Writes run in the store's batching writer (a record write and a
message send queued in one loop turn share a commit); reads run on the read connection.
Revisions come from one sequence (``record_revision``), so none is ever given twice. The
change feed is the table ``record_changes``, numbered by ``AUTOINCREMENT`` so a position is
never reused, even after pruning. docs/storage.md says why one table per collection (it was
measured).

A mixin of :class:`meshhub.builtins.sqlite_store.SQLiteStore`, like
:mod:`meshhub.builtins.sqlite_members`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from meshhub import codec
from meshhub.records import Change, Collection, Conflict, Hit, In, Range, Record, Where

T = TypeVar("T")
_COLUMNS = "key, value, revision, created_at, updated_at, expires_at"
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


def table(name: str) -> str:
    return f"rec_{name}"


def _search_table(name: str) -> str:
    # names hold no '__' (Collection checks), so these never meet another collection's (FTS5
    # adds its own tables named after this one: rec_<name>__s_data...)
    return f"rec_{name}__s"


def _column(name: str) -> str:
    return name if name in ("key", "created_at", "updated_at") else f"f_{name}"


def ensure_schema(conn: sqlite3.Connection, collections: Iterable[Collection]) -> None:
    """Create the feed and every collection's table, index columns, indexes and full-text table
    that are missing (idempotent: run at every start, before the migrations, so a migration can
    move old rows into a collection)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS record_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "collection TEXT NOT NULL, key TEXT NOT NULL, op TEXT NOT NULL, revision INTEGER NOT "
        "NULL, value TEXT, at REAL NOT NULL, previous TEXT)")
    conn.execute("CREATE INDEX IF NOT EXISTS record_changes_at ON record_changes (at)")
    # every revision comes from this one sequence: never given twice, even to a key deleted
    # and made again (a writer holding the old document's revision must lose)
    conn.execute("CREATE TABLE IF NOT EXISTS record_revision (id INTEGER PRIMARY KEY "
                 "CHECK (id = 1), last INTEGER NOT NULL)")
    conn.execute("INSERT OR IGNORE INTO record_revision (id, last) VALUES (1, 0)")
    for coll in collections:
        name = table(coll.name)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {name} (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
            "revision INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, "
            "expires_at REAL)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name}__x ON {name} (expires_at) "
                     "WHERE expires_at IS NOT NULL")
        have = {row[1] for row in conn.execute(f"PRAGMA table_xinfo({name})")}
        for field in coll.indexes:
            if f"f_{field}" not in have:
                conn.execute(f"ALTER TABLE {name} ADD COLUMN f_{field} GENERATED ALWAYS AS "
                             f"(json_extract(value, '$.{field}')) VIRTUAL")
            # expires_at too: a count reads the index alone, not every matching document
            conn.execute(f"CREATE INDEX IF NOT EXISTS {name}__i_{field} ON {name} "
                         f"(f_{field}, key, expires_at)")
        if coll.search:
            _ensure_search(conn, coll)
        else:  # not searched any more: an index left behind would go stale
            conn.execute(f"DROP TABLE IF EXISTS {_search_table(coll.name)}")


def _ensure_search(conn: sqlite3.Connection, coll: Collection) -> None:
    fts = _search_table(coll.name)
    have = [row[1] for row in conn.execute(f"PRAGMA table_info({fts})")]
    if have == list(coll.search):
        return
    if have:  # the searchable fields changed: index every document again
        conn.execute(f"DROP TABLE {fts}")
    conn.execute(f"CREATE VIRTUAL TABLE {fts} USING fts5({_quoted(coll.search)}, "
                 "tokenize='porter unicode61 remove_diacritics 2')")
    rows = conn.execute(f"SELECT rowid, value FROM {table(coll.name)}").fetchall()
    for rowid, value in rows:
        _index_text(conn, coll, rowid, codec.loads(value))


def _quoted(fields: tuple[str, ...]) -> str:
    """Column names as identifiers (a field may be called ``from`` or ``order``; names are
    lower_snake_case, so quoting them is all it takes)."""
    return ", ".join(f'"{field}"' for field in fields)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(v for v in value if isinstance(v, str))
    return ""


def _index_text(conn: sqlite3.Connection, coll: Collection, rowid: int,
                value: dict[str, Any] | None) -> None:
    fts = _search_table(coll.name)
    conn.execute(f"DELETE FROM {fts} WHERE rowid=?", (rowid,))
    if value is not None:
        marks = ", ".join("?" for _ in coll.search)
        conn.execute(f"INSERT INTO {fts} (rowid, {_quoted(coll.search)}) VALUES (?, {marks})",
                     (rowid, *(_text(value.get(f)) for f in coll.search)))


def match_expression(query: str) -> str:
    """An FTS5 MATCH that requires every word of ``query``, each a quoted string, so no word
    is ever read as FTS5 syntax (``NEAR``, ``AND``, a column filter, a prefix ``*``)."""
    return " ".join('"' + term.replace('"', '""') + '"' for term in query.split())


def _record(collection: str, row: tuple[Any, ...]) -> Record:
    return Record(collection=collection, key=row[0], value=codec.loads(row[1]),
                  revision=row[2], created_at=row[3], updated_at=row[4], expires_at=row[5])


def _next_revision(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE record_revision SET last = last + 1 WHERE id = 1")
    return int(conn.execute("SELECT last FROM record_revision WHERE id = 1").fetchone()[0])


def write_record(conn: sqlite3.Connection, coll: Collection, key: str, value: dict[str, Any],
                 *, revision: int | None = None, expires_at: float | None = None,
                 now: float | None = None, created_at: float | None = None) -> Record:
    """Write one document in the caller's transaction (the engine's puts, and migrations that
    move a feature's old rows into its collection)."""
    now = time.time() if now is None else now
    name = table(coll.name)
    row = conn.execute(f"SELECT rowid, {_COLUMNS} FROM {name} WHERE key=?", (key,)).fetchone()
    live = row is not None and (row[6] is None or row[6] > now)
    current = row[3] if live else 0
    if revision is not None and revision != current:
        found = _record(coll.name, row[1:]) if live else None
        if revision == 0:
            raise Conflict(f"{coll.name}/{key} exists already", current=found)
        raise Conflict(f"{coll.name}/{key} changed since revision {revision}; it is at "
                       f"{current}", current=found)
    if row is not None and not live and coll.feed:  # expired, not purged yet: say so first
        _log_change(conn, coll.name, key, "expire", row[3], None, now, previous=row[2])
    text = codec.dumps(value)
    created = row[4] if live else (created_at if created_at is not None else now)
    record = Record(coll.name, key, value, _next_revision(conn), created, now, expires_at)
    if row is None:
        rowid = conn.execute(
            f"INSERT INTO {name} ({_COLUMNS}) VALUES (?,?,?,?,?,?)",
            (key, text, record.revision, created, now, expires_at)).lastrowid
    else:
        rowid = row[0]
        conn.execute(f"UPDATE {name} SET value=?, revision=?, created_at=?, updated_at=?, "
                     "expires_at=? WHERE rowid=?",
                     (text, record.revision, created, now, expires_at, rowid))
    if coll.search:
        _index_text(conn, coll, int(rowid or 0), value)
    if coll.feed:
        _log_change(conn, coll.name, key, "put", record.revision, text, now)
    return record


def _log_change(conn: sqlite3.Connection, collection: str, key: str, op: str, revision: int,
                value: str | None, at: float, previous: str | None = None) -> None:
    conn.execute("INSERT INTO record_changes (collection, key, op, revision, value, at, "
                 "previous) VALUES (?,?,?,?,?,?,?)",
                 (collection, key, op, revision, value, at, previous))


def _conditions(coll: Collection, where: Where, args: list[Any],
                prefix: str = "") -> list[str]:
    out = []
    for field, wanted in where.items():
        if field != "key" and field not in coll.indexes:  # names go into the SQL: declared only
            raise KeyError(f"{coll.name}.{field} is not an indexed field")
        col = prefix + _column(field)
        if wanted is None:
            out.append(f"{col} IS NULL")
        elif isinstance(wanted, Range):
            for op, bound in ((">", wanted.gt), (">=", wanted.ge), ("<", wanted.lt),
                              ("<=", wanted.le)):
                if bound is not None:
                    out.append(f"{col} {op} ?")
                    args.append(bound)
        elif isinstance(wanted, In):
            if not wanted.values:
                out.append("1 = 0")
            else:
                out.append(f"{col} IN ({','.join('?' for _ in wanted.values)})")
                args.extend(wanted.values)
        elif isinstance(wanted, (str, int, float, bool)):
            out.append(f"{col} = ?")
            args.append(wanted)
        else:
            raise TypeError(f"{field}: a condition is a str, number, bool, None, Range or In")
    return out


def _after(col: str, descending: bool, value: Any, key: str, args: list[Any]) -> str:
    """The condition for rows after the cursor (``value``, ``key``) in ``ORDER BY col, key``
    (SQLite puts NULLs first ascending and last descending)."""
    if col == "key":
        args.append(key)
        return "key < ?" if descending else "key > ?"
    if value is None:
        args.append(key)
        return f"({col} IS NULL AND key < ?)" if descending else \
            f"(({col} IS NULL AND key > ?) OR {col} IS NOT NULL)"
    args.extend((value, value, key))
    if descending:
        return f"({col} < ? OR ({col} = ? AND key < ?) OR {col} IS NULL)"
    return f"({col} > ? OR ({col} = ? AND key > ?))"


class RecordTables:
    """The record API of :class:`meshhub.builtins.sqlite_store.SQLiteStore`."""

    _collections: dict[str, Collection]

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        raise NotImplementedError

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    def _coll(self, name: str) -> Collection:
        coll = self._collections.get(name)
        if coll is None:
            raise KeyError(f"the store was opened without collection {name!r}")
        return coll

    async def record_get(self, collection: str, key: str) -> Record | None:
        name = table(self._coll(collection).name)
        row = self._read(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM {name} WHERE key=? AND {_LIVE}",
            (key, time.time())).fetchone())
        return _record(collection, row) if row else None

    def record_put(self, collection: str, key: str, value: dict[str, Any], *,
                   revision: int | None = None,
                   expires_at: float | None = None) -> asyncio.Future[Record]:
        """Queued now (not a coroutine), so writes keep the order of the calls."""
        coll = self._coll(collection)
        return self._submit(lambda conn: write_record(
            conn, coll, key, value, revision=revision, expires_at=expires_at))

    def record_delete(self, collection: str, key: str, *,
                      revision: int | None = None) -> asyncio.Future[bool]:
        coll = self._coll(collection)
        name = table(coll.name)

        def run(conn: sqlite3.Connection) -> bool:
            now = time.time()
            row = conn.execute(f"SELECT rowid, {_COLUMNS} FROM {name} WHERE key=?",
                               (key,)).fetchone()
            live = row is not None and (row[6] is None or row[6] > now)
            if revision is not None and revision != (row[3] if live else 0):
                raise Conflict(f"{coll.name}/{key} changed since revision {revision}",
                               current=_record(coll.name, row[1:]) if live else None)
            if row is None:
                return False
            conn.execute(f"DELETE FROM {name} WHERE rowid=?", (row[0],))
            if coll.search:
                _index_text(conn, coll, row[0], None)
            if coll.feed:  # an expired one that was not purged yet goes as an expiry
                _log_change(conn, coll.name, key, "delete" if live else "expire", row[3], None,
                            now, previous=row[2])
            return live

        return self._submit(run)

    async def record_find(self, collection: str, where: Where, *, order: str, limit: int,
                          after: tuple[Any, str] | None) -> list[Record]:
        coll = self._coll(collection)
        name = table(coll.name)
        descending = order.startswith("-")
        field = order.lstrip("-")
        if field not in coll.indexes and field not in ("key", "created_at", "updated_at"):
            raise KeyError(f"{coll.name} cannot be ordered by {field!r}")
        col = _column(field)
        args: list[Any] = [time.time()]
        conds = [_LIVE, *_conditions(coll, where, args)]
        if after is not None:
            conds.append(_after(col, descending, after[0], after[1], args))
        way = "DESC" if descending else ""
        sort = "key" if col == "key" else f"{col} {way}, key"
        sql = (f"SELECT {_COLUMNS} FROM {name} WHERE {' AND '.join(conds)} "
               f"ORDER BY {sort} {way} LIMIT ?")
        rows = self._read(lambda conn: conn.execute(sql, (*args, limit)).fetchall())
        return [_record(collection, row) for row in rows]

    async def record_count(self, collection: str, where: Where) -> int:
        coll = self._coll(collection)
        name = table(coll.name)
        args: list[Any] = [time.time()]
        conds = [_LIVE, *_conditions(coll, where, args)]
        sql = f"SELECT COUNT(*) FROM {name} WHERE {' AND '.join(conds)}"
        return int(self._read(lambda conn: conn.execute(sql, args).fetchone()[0]))

    async def record_search(self, collection: str, query: str, *, where: Where, limit: int,
                            marks: tuple[str, str]) -> list[Hit]:
        coll = self._coll(collection)
        name = table(coll.name)
        fts = _search_table(coll.name)
        match = match_expression(query)
        args: list[Any] = [marks[0], marks[1], match, time.time()]
        conds = [f"{fts} MATCH ?", "(t.expires_at IS NULL OR t.expires_at > ?)",
                 *_conditions(coll, where, args, "t.")]
        sql = (f"SELECT t.key, t.value, t.revision, t.created_at, t.updated_at, t.expires_at, "
               f"bm25({fts}), snippet({fts}, -1, ?, ?, '…', 16) FROM {fts} "
               f"JOIN {name} t ON t.rowid = {fts}.rowid WHERE {' AND '.join(conds)} "
               f"ORDER BY bm25({fts}), t.key LIMIT ?")
        rows = self._read(lambda conn: conn.execute(sql, (*args, limit)).fetchall())
        return [Hit(_record(collection, row[:6]), -float(row[6]), row[7]) for row in rows]

    async def record_changes(self, after: int, limit: int) -> list[Change]:
        rows = self._read(lambda conn: conn.execute(
            "SELECT seq, collection, key, op, revision, value, at, previous FROM "
            "record_changes WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall())
        return [Change(seq=r[0], collection=r[1], key=r[2], op=r[3], revision=r[4],
                       value=codec.loads(r[5]) if r[5] is not None else None, at=r[6],
                       previous=codec.loads(r[7]) if r[7] is not None else None)
                for r in rows]

    async def feed_position(self) -> int:
        row = self._read(lambda conn: conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name='record_changes'").fetchone())
        return int(row[0]) if row else 0

    async def record_purge(self, now: float, feed_before: float) -> int:
        collections = list(self._collections.values())

        def run(conn: sqlite3.Connection) -> int:
            purged = 0
            for coll in collections:
                name = table(coll.name)
                rows = conn.execute(
                    f"SELECT rowid, key, revision, value FROM {name} WHERE expires_at IS NOT "
                    "NULL AND expires_at <= ? LIMIT 5000", (now,)).fetchall()
                for rowid, key, revision, value in rows:
                    conn.execute(f"DELETE FROM {name} WHERE rowid=?", (rowid,))
                    if coll.search:
                        _index_text(conn, coll, rowid, None)
                    if coll.feed:
                        _log_change(conn, coll.name, key, "expire", revision, None, now,
                                    previous=value)
                purged += len(rows)
            conn.execute("DELETE FROM record_changes WHERE at < ?", (feed_before,))
            return purged

        return await self._call(run)
