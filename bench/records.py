#!/usr/bin/env python
"""Feature data through the record API: the storage layout it stands on, measured against the
other candidate, and the API on the real engine against the message path beside it.

    python bench/records.py [--docs 200000] [--rounds 2000] [--quick] [--json] [--summary-json]

**Layouts** (the choice the SQLite engine made: one table per collection, or one shared table).
Three temporary SQLite files, WAL, ``synchronous=FULL`` like the hub, hold the same documents:
8 collections with 2-3 indexed fields each, ``--docs`` documents in all (``--quick``: 20,000).

* ``per_collection``: what :mod:`meshhub.builtins.sqlite_records` makes and writes (its
  ``ensure_schema`` and ``write_record``): ``rec_<name>`` with a virtual generated column per
  indexed field and an index (field, key);
* ``shared``: one table ``records`` keyed by (collection, key), a virtual generated column for
  every field any collection indexes, and an index (collection, field, key) per such field;
* ``shared_partial``: the same table with one partial index (field, key) per collection and
  field instead (``WHERE collection = '<name>'``), the best a shared table can do.

Measured on each: inserts (500 per transaction, the collections interleaved; the files take
turns batch by batch), get by key, a page of 50 on one field's value ordered by key, a count on
a field's value (p50/p99 each, the layouts queried in turns), and the file's size after a
checkpoint. The queries are the engine's (live documents only). Printed with each shared
layout's ratio to ``per_collection``.

**The API** on the real engine: a :class:`SQLiteStore` (``synchronous=FULL``) opened with two
collections, driven through :class:`meshhub.records.Records`. Each round, in an order that
changes every round: ``insert_message`` of a message whose body is as long as the document's
JSON (the hot path's write: the message and its delivery row), a put of a new document to the
searchable collection and to a plain one, a compare-and-set update of the first, ``get`` and
``get_message`` of random stored ones, a page of 50 and a full-text search. Each is awaited
alone (latency; every write is its own commit). Then 200 puts at once (to each collection)
against 200 ``insert_message`` at once (throughput: one loop turn, so one batched commit), in
turns.

Goals (ratios to the baseline of the same run): record put p50 <= 2x ``insert_message`` p50;
record get p50 <= 2x ``get_message`` p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from goals import Goal, percentile, report  # noqa: E402

from meshhub import codec  # noqa: E402
from meshhub.builtins.sqlite_records import ensure_schema, table, write_record  # noqa: E402
from meshhub.builtins.sqlite_store import SQLiteStore  # noqa: E402
from meshhub.ids import new_id  # noqa: E402
from meshhub.models import Message  # noqa: E402
from meshhub.records import Collection, Records  # noqa: E402

BENCH = "records"
BATCH = 500
BURST = 200
GOAL_RATIO = 2.0
LIVE = "(expires_at IS NULL OR expires_at > ?)"
COLUMNS = "key, value, revision, created_at, updated_at, expires_at"
STATES = ("open", "done", "closed", "expired")
OWNERS = 50

# The first field is the one pages are asked by (50 values), the second the one counts are
# asked by (4 values), the third is a number.
LAYOUT_COLLECTIONS = (
    Collection("approvals", indexes=("asker", "state", "ref")),
    Collection("tasks", indexes=("owner", "state", "due")),
    Collection("sessions", indexes=("peer", "state")),
    Collection("telegram_links", indexes=("chat", "kind")),
    Collection("email_threads", indexes=("sender", "folder", "at")),
    Collection("pairings", indexes=("connector", "state", "code")),
    Collection("notes", indexes=("author", "tag")),
    Collection("bridges", indexes=("peer", "kind", "at")),
)
DOCS = Collection("bench_docs", indexes=("owner", "state"), search=("title",))
PLAIN = Collection("bench_plain", indexes=("owner", "state"))


def vocabulary(rng: random.Random, size: int = 300) -> list[str]:
    """Made-up words of two or three syllables, so full-text search has real terms to find."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.choice((2, 3)))))
    return sorted(words)


def document(rng: random.Random, words: list[str], fields: tuple[str, ...]) -> dict[str, Any]:
    """A document of about 300 bytes of JSON with values for ``fields`` (see above)."""
    value: dict[str, Any] = {
        "title": " ".join(rng.choice(words) for _ in range(5)),
        "body": " ".join(rng.choice(words) for _ in range(30)),
        "by": f"peer-{rng.randrange(1000)}", "n": rng.randrange(100)}
    for position, name in enumerate(fields):
        value[name] = (f"{name}-{rng.randrange(OWNERS)}", rng.choice(STATES),
                       rng.randrange(10**9))[min(position, 2)]
    return value


def key_of(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


# -- layouts -----------------------------------------------------------------------------------
def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def shared_schema(conn: sqlite3.Connection, collections: tuple[Collection, ...],
                  partial: bool) -> None:
    """The shared table; its indexes are (collection, field, key, expires_at) over every row,
    or with ``partial`` one index (field, key, expires_at) per collection and field, over that
    collection's rows (expires_at as the engine's own indexes have it, so counts read the
    index alone in every layout)."""
    conn.execute(
        "CREATE TABLE records (collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT "
        "NULL, revision INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, "
        "expires_at REAL, PRIMARY KEY (collection, key))")
    conn.execute("CREATE INDEX records__expires ON records (expires_at) "
                 "WHERE expires_at IS NOT NULL")
    for name in sorted({f for coll in collections for f in coll.indexes}):
        conn.execute(f"ALTER TABLE records ADD COLUMN f_{name} GENERATED ALWAYS AS "
                     f"(json_extract(value, '$.{name}')) VIRTUAL")
        if not partial:
            conn.execute(f"CREATE INDEX records__{name} ON records (collection, f_{name}, key, "
                         "expires_at)")
    for coll in collections if partial else ():
        for name in coll.indexes:
            conn.execute(f"CREATE INDEX records__{coll.name}__{name} ON records (f_{name}, key, "
                         f"expires_at) WHERE collection = '{coll.name}'")


def shared_write(conn: sqlite3.Connection, collection: str, key: str,
                 value: dict[str, Any]) -> None:
    """What ``write_record`` does, on the shared table: read the current row, then insert or
    update it."""
    now = time.time()
    row = conn.execute("SELECT rowid, revision, created_at FROM records WHERE collection=? "
                       "AND key=?", (collection, key)).fetchone()
    text = codec.dumps(value)
    if row is None:
        conn.execute("INSERT INTO records (collection, key, value, revision, created_at, "
                     "updated_at, expires_at) VALUES (?,?,?,?,?,?,?)",
                     (collection, key, text, 1, now, now, None))
    else:
        conn.execute("UPDATE records SET value=?, revision=?, updated_at=? WHERE rowid=?",
                     (text, row[1] + 1, now, row[0]))


LAYOUTS = ("per_collection", "shared", "shared_partial")


class Layout:
    """One layout's file, its writes and the engine's three read queries on it."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.shared = name != "per_collection"
        self.conn = connect(path)
        self.insert_seconds = 0.0
        self.by_name = {c.name: c for c in LAYOUT_COLLECTIONS}
        self.conn.execute("BEGIN")
        if self.shared:
            shared_schema(self.conn, LAYOUT_COLLECTIONS, partial=name == "shared_partial")
        else:
            ensure_schema(self.conn, LAYOUT_COLLECTIONS)
        self.conn.execute("COMMIT")

    def insert(self, batch: list[tuple[str, str, dict[str, Any]]]) -> None:
        started = time.perf_counter()
        self.conn.execute("BEGIN IMMEDIATE")
        for collection, key, value in batch:
            if self.shared:
                shared_write(self.conn, collection, key, value)
            else:
                write_record(self.conn, self.by_name[collection], key, value)
        self.conn.execute("COMMIT")
        self.insert_seconds += time.perf_counter() - started

    def _from(self, collection: str) -> tuple[str, list[Any]]:
        """The FROM and the first conditions of a query on ``collection``."""
        if self.name == "shared_partial":  # a partial index is used for its literal only
            return f"records WHERE collection='{collection}' AND {LIVE}", [time.time()]
        if self.shared:
            return f"records WHERE collection=? AND {LIVE}", [collection, time.time()]
        return f"{table(collection)} WHERE {LIVE}", [time.time()]

    def get(self, collection: str, key: str) -> tuple[str, str]:
        source, args = self._from(collection)
        row = self.conn.execute(f"SELECT {COLUMNS} FROM {source} AND key=?",
                                (*args, key)).fetchone()
        return row[0], row[1]

    def page_sql(self, collection: str, field: str) -> tuple[str, list[Any]]:
        source, args = self._from(collection)
        return f"SELECT {COLUMNS} FROM {source} AND f_{field}=? ORDER BY key LIMIT 51", args

    def page(self, collection: str, field: str, wanted: Any) -> list[str]:
        sql, args = self.page_sql(collection, field)
        return [row[0] for row in self.conn.execute(sql, (*args, wanted)).fetchall()]

    def count(self, collection: str, field: str, wanted: Any) -> int:
        source, args = self._from(collection)
        sql = f"SELECT COUNT(*) FROM {source} AND f_{field}=?"
        return int(self.conn.execute(sql, (*args, wanted)).fetchone()[0])

    def check_plans(self) -> None:
        """Every page reads its index in order (no sort of its own), or the figures would
        compare a layout with a mistake in it."""
        for coll in LAYOUT_COLLECTIONS:
            sql, args = self.page_sql(coll.name, coll.indexes[0])
            plan = " ".join(row[-1] for row in self.conn.execute(
                f"EXPLAIN QUERY PLAN {sql}", (*args, "x")))
            if "TEMP B-TREE" in plan or "INDEX" not in plan:
                raise RuntimeError(f"{self.name}: the page on {coll.name} sorts: {plan}")

    def size(self) -> int:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return os.path.getsize(self.path)


def ms(samples: list[float]) -> dict[str, float]:
    values = [s * 1000 for s in samples]
    return {"n": len(values), "p50_ms": round(percentile(values, 50), 4),
            "p99_ms": round(percentile(values, 99), 4),
            "mean_ms": round(statistics.mean(values), 4)}


def turn(layouts: list[Layout], i: int) -> list[Layout]:
    """The layouts in the order of turn ``i``: each goes first in turn."""
    start = i % len(layouts)
    return layouts[start:] + layouts[:start]


def in_turns(layouts: list[Layout], probes: int,
             make: Callable[[int], Callable[[Layout], Any]]) -> dict[str, list[float]]:
    """Time ``make(i)(layout)`` for ``probes`` values of ``i`` on every layout, the layouts
    taking turns (each goes first in turn), and check they answer alike."""
    times: dict[str, list[float]] = {layout.name: [] for layout in layouts}
    for i in range(probes):
        probe = make(i)
        answers = []
        for layout in turn(layouts, i):
            started = time.perf_counter()
            answers.append(probe(layout))
            times[layout.name].append(time.perf_counter() - started)
        if any(answer != answers[0] for answer in answers):
            raise RuntimeError(f"the layouts answer probe {i} differently")
    return times


def measure_layouts(root: Path, docs: int, probes: int) -> dict[str, Any]:
    rng = random.Random(9)
    words = vocabulary(rng)
    layouts = [Layout(name, root / f"{name}.db") for name in LAYOUTS]
    keys: dict[str, list[str]] = {c.name: [] for c in LAYOUT_COLLECTIONS}
    written = 0
    while written < docs:
        batch = []
        for i in range(min(BATCH, docs - written)):
            coll = LAYOUT_COLLECTIONS[(written + i) % len(LAYOUT_COLLECTIONS)]
            key = key_of(rng)
            keys[coll.name].append(key)
            batch.append((coll.name, key, document(rng, words, coll.indexes)))
        for layout in turn(layouts, written // BATCH):
            layout.insert(batch)
        written += len(batch)
    for layout in layouts:
        layout.check_plans()
    pick = random.Random(11)

    def get_probe(_: int) -> Callable[[Layout], Any]:
        coll = pick.choice(LAYOUT_COLLECTIONS)
        key = pick.choice(keys[coll.name])
        return lambda layout: layout.get(coll.name, key)

    def page_probe(_: int) -> Callable[[Layout], Any]:
        coll = pick.choice(LAYOUT_COLLECTIONS)
        field = coll.indexes[0]
        wanted = f"{field}-{pick.randrange(OWNERS)}"
        return lambda layout: layout.page(coll.name, field, wanted)

    def count_probe(_: int) -> Callable[[Layout], Any]:
        coll = pick.choice(LAYOUT_COLLECTIONS)
        wanted = pick.choice(STATES)
        return lambda layout: layout.count(coll.name, coll.indexes[1], wanted)

    gets = in_turns(layouts, probes, get_probe)
    pages = in_turns(layouts, probes, page_probe)
    counts = in_turns(layouts, max(50, probes // 10), count_probe)
    out: dict[str, Any] = {
        "docs": docs, "collections": len(LAYOUT_COLLECTIONS),
        "field_indexes": sum(len(c.indexes) for c in LAYOUT_COLLECTIONS),
        "union_fields": len({f for c in LAYOUT_COLLECTIONS for f in c.indexes})}
    for layout in layouts:
        out[layout.name] = {
            "insert_docs_per_s": round(docs / layout.insert_seconds),
            "get": ms(gets[layout.name]), "page": ms(pages[layout.name]),
            "count": ms(counts[layout.name]), "file_mb": round(layout.size() / 2**20, 2)}
        layout.conn.close()
    return out


# -- the API on the engine ---------------------------------------------------------------------
def message_like(value: dict[str, Any]) -> Message:
    """A direct message whose body is as long as ``value``'s JSON."""
    body = codec.dumps(value)
    return Message(id=new_id(), sender="ann", target="bob", conversation="dm", body=body,
                   recipients=["bob"], created_at=time.time())


async def timed(samples: list[float], call: Awaitable[Any]) -> Any:
    started = time.perf_counter()
    result = await call
    samples.append(time.perf_counter() - started)
    return result


async def preload(store: SQLiteStore, records: Records, rng: random.Random, words: list[str],
                  count: int) -> tuple[list[str], list[str]]:
    """``count`` documents in each collection and ``count`` messages, in bursts of 500."""
    keys: list[str] = []
    ids: list[str] = []
    while len(keys) < count:
        writes: list[Awaitable[Any]] = []
        for _ in range(min(BATCH, count - len(keys))):
            key = key_of(rng)
            value = document(rng, words, DOCS.indexes)
            message = message_like(value)
            keys.append(key)
            ids.append(message.id)
            writes += [records.put(DOCS.name, key, value), records.put(PLAIN.name, key, value),
                       store.insert_message(message, set(), set(), 0.0)]
        await asyncio.gather(*writes)
    return keys, ids


async def sequential(store: SQLiteStore, records: Records, rng: random.Random,
                     words: list[str], keys: list[str], ids: list[str],
                     rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in (
        "insert_message", "put", "put_plain", "cas_update", "get", "get_message", "find",
        "search")}
    for _ in range(rounds):
        key = key_of(rng)
        value = document(rng, words, DOCS.indexes)
        message = message_like(value)
        writes: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("insert_message", partial(store.insert_message, message, set(), set(), 0.0)),
            ("put", partial(records.put, DOCS.name, key, value)),
            ("put_plain", partial(records.put, PLAIN.name, key, value))]
        rng.shuffle(writes)
        made = {name: await timed(times[name], call()) for name, call in writes}
        await timed(times["cas_update"], records.put(
            DOCS.name, key, {**value, "state": "done"}, revision=made["put"].revision))
        keys.append(key)
        ids.append(message.id)
        reads: list[tuple[str, Awaitable[Any]]] = [
            ("get", records.get(DOCS.name, rng.choice(keys))),
            ("get_message", store.get_message(rng.choice(ids))),
            ("find", records.find(DOCS.name, {"owner": f"owner-{rng.randrange(OWNERS)}"},
                                  limit=50)),
            ("search", records.search(DOCS.name, rng.choice(words)))]
        rng.shuffle(reads)
        for name, read in reads:
            found = await timed(times[name], read)
            if not (found.records if name == "find" else found):
                raise RuntimeError(f"{name} found nothing where there is something")
    return times


async def bursts(store: SQLiteStore, records: Records, rng: random.Random, words: list[str],
                 rounds: int) -> dict[str, Any]:
    """``BURST`` puts at once (to the searchable collection, to the plain one) against
    ``BURST`` messages at once, in turns: writes per second and the commits they took."""
    seconds = {"put": 0.0, "put_plain": 0.0, "insert_message": 0.0}
    commits = dict.fromkeys(seconds, 0)

    def writes(name: str, values: list[dict[str, Any]]) -> list[Awaitable[Any]]:
        if name != "insert_message":
            coll = DOCS if name == "put" else PLAIN
            return [records.put(coll.name, key_of(rng), v) for v in values]
        return [store.insert_message(message_like(v), set(), set(), 0.0) for v in values]

    for i in range(rounds):
        values = [document(rng, words, DOCS.indexes) for _ in range(BURST)]
        names = list(seconds)
        for name in names[i % 3:] + names[:i % 3]:
            before = store.batches
            started = time.perf_counter()
            await asyncio.gather(*writes(name, values))
            seconds[name] += time.perf_counter() - started
            commits[name] += store.batches - before
    return {name: {"writes_per_s": round(rounds * BURST / seconds[name]),
                   "commits_per_burst": round(commits[name] / rounds, 2)} for name in seconds}


async def measure_api(root: Path, preloaded: int, rounds: int,
                      burst_rounds: int) -> dict[str, Any]:
    rng = random.Random(17)
    words = vocabulary(rng)
    store = SQLiteStore(root / "meshhub.db", synchronous="FULL")
    await store.open([], [DOCS, PLAIN])
    try:
        records = Records(SimpleNamespace(store=store))  # type: ignore[arg-type]
        records.declare(DOCS)
        records.declare(PLAIN)
        keys, ids = await preload(store, records, rng, words, preloaded)
        times = await sequential(store, records, rng, words, keys, ids, rounds)
        burst = await bursts(store, records, rng, words, burst_rounds)
    finally:
        await store.close()
    return {"preloaded": preloaded, "rounds": rounds, "burst_rounds": burst_rounds,
            "sequential": {name: ms(samples) for name, samples in times.items()},
            "concurrent": burst}


# -- report ------------------------------------------------------------------------------------
def print_layouts(result: dict[str, Any]) -> None:
    base = result["per_collection"]
    print(f"layouts: {result['docs']:,} documents in {result['collections']} collections, "
          f"{result['field_indexes']} indexed fields, {result['union_fields']} distinct names "
          "(ratios: to per_collection)")
    print(f"  {'':18}" + "".join(f"{name:>25}" for name in LAYOUTS))
    rows = [("inserts (docs/s)", "insert_docs_per_s", ""), ("file (MB)", "file_mb", "")]
    rows += [(f"{what} {p} (ms)", what, f"{p}_ms") for what in ("get", "page", "count")
             for p in ("p50", "p99")]
    for label, name, sub in rows:
        cells = []
        for layout in LAYOUTS:
            figure = result[layout][name][sub] if sub else result[layout][name]
            first = base[name][sub] if sub else base[name]
            ratio = "" if layout == LAYOUTS[0] else f" ({figure / first:.2f}x)"
            cells.append((f"{figure:,.0f}" if figure >= 100 else f"{figure:.3g}") + ratio)
        print(f"  {label:18}" + "".join(f"{cell:>25}" for cell in cells))


def print_api(result: dict[str, Any]) -> None:
    print(f"\nrecord API on SQLiteStore (synchronous=FULL), {result['preloaded']:,} documents "
          f"preloaded, {result['rounds']} rounds awaited one at a time")
    for name, row in result["sequential"].items():
        print(f"  {name:15} p50 {row['p50_ms']:8.3f} ms  p99 {row['p99_ms']:8.3f} ms  "
              f"mean {row['mean_ms']:8.3f} ms  (n={row['n']})")
    print(f"{BURST} writes at once, {result['burst_rounds']} rounds each:")
    for name, row in result["concurrent"].items():
        print(f"  {name:15} {row['writes_per_s']:>8,} writes/s  "
              f"{row['commits_per_burst']} commits per burst")


def goals(api: dict[str, Any]) -> list[Goal]:
    seq = api["sequential"]
    return [
        Goal(BENCH, "record put p50 vs insert_message p50", seq["put"]["p50_ms"], "ms",
             GOAL_RATIO, baseline=seq["insert_message"]["p50_ms"]),
        Goal(BENCH, "record get p50 vs get_message p50", seq["get"]["p50_ms"], "ms",
             GOAL_RATIO, baseline=seq["get_message"]["p50_ms"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000, help="documents per layout")
    parser.add_argument("--rounds", type=int, default=2000, help="rounds of the API's calls")
    parser.add_argument("--quick", action="store_true",
                        help="20,000 documents per layout, 300 rounds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--summary-json", action="store_true",
                        help="end with the GOALS line bench/run-all reads")
    args = parser.parse_args()
    if args.quick:
        args.docs, args.rounds = 20_000, 300
    with tempfile.TemporaryDirectory(prefix="meshhub-records-bench-") as tmp:
        root = Path(tmp)
        layouts = measure_layouts(root, args.docs, probes=max(500, args.rounds * 2))
        api = asyncio.run(measure_api(root, preloaded=args.docs // 20, rounds=args.rounds,
                                      burst_rounds=max(10, args.rounds // 50)))
    if args.json:
        print(json.dumps({"layouts": layouts, "api": api}, indent=2))
    else:
        print_layouts(layouts)
        print_api(api)
    report(goals(api), args.summary_json)


if __name__ == "__main__":
    main()
