"""The SQLite engine's message search: an FTS5 index of message bodies, filled off the send path.

Layout (migration ``m013``): ``messages`` is a ``WITHOUT ROWID`` table keyed by text ids, and
FTS5 links its rows by integer rowid, so ``message_search_rows`` gives each indexed message a
row number (``row INTEGER PRIMARY KEY``, ``id UNIQUE``), counting down: the newest message
has the lowest, so FTS5 hands out the newest matches first in its ascending order (it reads
descending order about twice as slowly). The FTS5 table is an *external content* table over
the view ``message_search_text`` (row number, body, who): it keeps the index only, not a second
copy of every body; the indexer feeds it from the view in one statement, and FTS5's ``rebuild``
and ``integrity-check`` work from the messages. (A contentless table would match as well but
could be neither rebuilt nor checked; one with an ``UNINDEXED`` id column stores every body
twice.) Tokenizer: ``porter unicode61 remove_diacritics 2``, as the record search uses.
Beside ``body`` the index holds ``who``: the keys of the sender and the recipients. A search
requires the viewer's key there, so FTS5 reads only the viewer's share of the matches (its
posting lists are intersected inside the index) rather than joining every message that holds
the words to its deliveries; the delivery row is still checked for what is left (a dead row
hides a message).

Ranking: FTS5's ``bm25()`` counts, for every query, how many messages hold each word (its
IDF), reading the word's whole posting list: with a million messages a common word cost a
search about 100 ms. So a search takes the newest ``RANKED`` matches the viewer may see (the
index hands them out newest first and stops there) and ranks those by BM25 in a scratch FTS5
index of the first ``PREFIX`` characters of their bodies alone (in memory, same tokenizer),
which then quotes snippets for the hits returned only. Every one of them holds every word, so
the IDF is the same for each and the order is BM25's (density of the words, length of the
body); ties go to the newest; a match whose words lie past the prefix comes last, quoted from
its start. A word found in more than ``RANKED`` of the viewer's messages ranks the newest of
them; narrower words, a conversation, a sender or a time range reach older ones. ``who``
holds tokens for the sender, conversation and kind as well, so those filters narrow the
matches inside the index; a time range is checked on the newest ``EXAMINED`` matches in the
viewer's share only: a range few of them fall in answers from those, saying it was cut
short, rather than walking them all.
The query and the ranking run in a thread on a read-only connection of their own (one per
search, so concurrent searches share nothing), off the event loop.

Off the hot path: ``insert_message`` does not touch the index. A background task indexes, a
batch per writer operation, the messages stored after the persisted high-water mark
(``message_search_state.high_water``), and a search first runs the same pass for what is not
indexed yet, through the writer, so it comes after every write acknowledged before it. That
catch-up stops after ``CATCH_UP`` batches: far more than the background indexer leaves behind
in normal use, but a hub upgraded with a million messages would keep its first searcher (and
the writer) busy for tens of seconds. Past that, the search answers from what is indexed and
says it is not complete; the background indexer finishes the backlog. Searches arriving
during a catch-up wait for it rather than each running their own.

Ids sort by the time they were made, but one made ahead of its send (an approval card) may
be stored after a later one. So the mark only moves up to ids ``SETTLE_MS`` old, and the pass
takes every message above the mark that has no row number yet (``id UNIQUE`` answers that):
a message stored late is indexed all the same, and none twice. One stored below the mark
(see ``SETTLE_MS``) is indexed by a sweep at open.

A mixin of :class:`meshhub.builtins.sqlite_store.SQLiteStore`, like
:mod:`meshhub.builtins.sqlite_records`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from meshhub.records import search_terms
from meshhub.store import MARK_END, MARK_START, MessageHit, MessageSearchResult

from .sqlite_reads import _MESSAGE_COLUMNS, _message_from_row
from .sqlite_records import match_expression

log = logging.getLogger(__name__)
T = TypeVar("T")
BATCH = 1000  # messages per writer operation: long enough to index fast, short for the sends
CATCH_UP = 20  # the most batches a search indexes before it answers
IDLE_SECONDS = 1.0  # between background passes once caught up
SETTLE_MS = 5000  # how late a message may be stored after its id was made
# (assumed: the clock does not step back and ids are not imported from the past; a message
# stored below the mark anyway is found by the sweep the background task runs at open)
RANKED = 100  # a search ranks the newest this many matches the viewer may see
EXAMINED = 5000  # the most matches in the viewer's share a search checks its filters on
SEARCHERS = 2  # threads searches run in
PREFIX = 4096  # characters of a long body the ranking reads (and quotes snippets from)


def _unmarked(body: str) -> str:
    return body.replace(MARK_START, " ").replace(MARK_END, " ")


def _settled(now: float) -> str:
    """The lowest id that may still be made: ids made ``SETTLE_MS`` ago and before are final."""
    return f"{max(int(now * 1000) - SETTLE_MS, 0):012x}"


def _add_rows(conn: sqlite3.Connection, source: str, args: dict[str, Any]) -> int:
    """Give the ids ``source`` selects (oldest first) row numbers below every row so far and
    index them; how many."""
    first = conn.execute("SELECT COALESCE(MIN(row), 0) FROM message_search_rows").fetchone()[0]
    # row numbers count down: the newest message has the lowest, so the index hands out the
    # newest matches first in its own (ascending) order, which it reads fastest
    added = conn.execute(
        "INSERT INTO message_search_rows (row, id) SELECT :first - ROW_NUMBER() OVER "
        f"(ORDER BY id), id FROM ({source})", {**args, "first": first}).rowcount
    if added:
        conn.execute("INSERT INTO message_search (rowid, body, who) SELECT row, body, who "
                     "FROM message_search_text WHERE row < ?", (first,))
    return int(added)


def index_pass(conn: sqlite3.Connection, limit: int, upto: str | None, now: float) -> int:
    """Index up to ``limit`` messages above the high-water mark (below ``upto`` if given) that
    have no row number yet, oldest first; move the mark; return how many were indexed."""
    high = conn.execute("SELECT high_water FROM message_search_state WHERE id = 1").fetchone()[0]
    below = " AND m.id < :upto" if upto is not None else ""
    added = _add_rows(conn, "SELECT m.id FROM messages m WHERE m.id > :high"
                      f"{below} AND NOT EXISTS (SELECT 1 FROM message_search_rows r WHERE "
                      "r.id = m.id) ORDER BY m.id LIMIT :limit",
                      {"high": high, "upto": upto, "limit": limit})
    # everything up to the last id taken is indexed (or everything, when the batch was not
    # full); the mark moves there, but never past ids that may still be stored late
    covered = _settled(now)
    if added == limit:
        newest = conn.execute("SELECT id FROM message_search_rows ORDER BY row "
                              "LIMIT 1").fetchone()[0]
        covered = min(covered, newest + "\x00")  # the id itself is indexed
    mark = conn.execute("SELECT MAX(id) FROM messages WHERE id > ? AND id < ?",
                        (high, covered)).fetchone()[0]
    if mark is not None:
        conn.execute("UPDATE message_search_state SET high_water = ? WHERE id = 1", (mark,))
    return added


def unindexed_below_mark(conn: sqlite3.Connection) -> list[str]:
    """The ids at or below the high-water mark with no row number: stored below the mark (a
    clock stepped back across a restart, an import), so no pass would take them."""
    return [r[0] for r in conn.execute(
        "SELECT m.id FROM messages m WHERE m.id <= (SELECT high_water FROM "
        "message_search_state WHERE id = 1) AND NOT EXISTS (SELECT 1 FROM message_search_rows "
        "r WHERE r.id = m.id) ORDER BY m.id")]


def index_ids(conn: sqlite3.Connection, ids: list[str]) -> int:
    """Index these messages, those of them stored and not indexed yet."""
    return _add_rows(conn, "SELECT m.id FROM messages m WHERE m.id IN (SELECT value FROM "
                     "json_each(:ids)) AND NOT EXISTS (SELECT 1 FROM message_search_rows r "
                     "WHERE r.id = m.id) ORDER BY m.id", {"ids": json.dumps(ids)})


def _behind(conn: sqlite3.Connection) -> bool:
    """Whether a stored message is not indexed yet."""
    return conn.execute(
        "SELECT 1 FROM messages m WHERE m.id > (SELECT high_water FROM message_search_state "
        "WHERE id = 1) AND NOT EXISTS (SELECT 1 FROM message_search_rows r WHERE r.id = m.id) "
        "LIMIT 1").fetchone() is not None


def _who(viewer: str, partner: str | None, sender: str | None, conversation: str | None,
         kinds: list[str] | None) -> str:
    """What the ``who`` column must hold: the viewer's key (and the partner's), and the tokens
    of the sender, conversation and kinds asked for (see ``m013``)."""
    terms = [match_expression(key) for key in (viewer, partner) if key]
    terms += [f'"{prefix}{value.encode().hex()}"' for prefix, value
              in (("f", sender), ("c", conversation)) if value is not None]
    if kinds:
        terms.append("(" + " OR ".join(f'"k{kind.encode().hex()}"' for kind in kinds) + ")")
    return " AND ".join(terms)


def _filters(conversation: str | None, partner: str | None, sender: str | None,
             since: float | None, until: float | None, kinds: list[str] | None,
             params: dict[str, Any]) -> str:
    where = ""
    if conversation is not None:
        where += " AND m.conversation = :conversation"
    if partner is not None:  # as history: what the partner sent me, what I sent the partner
        where += (" AND m.conversation = 'dm' AND ((m.sender = :partner AND d.recipient IS NOT "
                  "NULL) OR (m.sender = :me AND EXISTS (SELECT 1 FROM deliveries p WHERE "
                  "p.message_id = m.id AND p.recipient = :partner)))")
    if sender is not None:
        where += " AND m.sender = :sender"
    if since is not None:
        where += " AND m.created_at >= :since"
    if until is not None:
        where += " AND m.created_at < :until"
    if kinds is not None:
        names = [f"kind{i}" for i in range(len(kinds))]
        params.update(zip(names, kinds, strict=True))
        where += f" AND m.kind IN ({', '.join(':' + n for n in names) or 'NULL'})"
    return where


class MessageSearch:
    """Mixed into :class:`~meshhub.builtins.sqlite_store.SQLiteStore`."""

    _indexer: asyncio.Task[None] | None = None
    _catching_up: asyncio.Future[bool] | None = None
    _searchers: Searchers | None = None

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _read_apart(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    def _start_indexer(self, path: str) -> None:
        self._searchers = Searchers(path)
        self._indexer = asyncio.get_running_loop().create_task(self._index_in_background())

    async def _stop_indexer(self) -> None:
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexer
            self._indexer = None
        if self._searchers is not None:
            await asyncio.to_thread(self._searchers.close)
            self._searchers = None

    async def _sweep(self) -> None:
        """Index the messages stored below the high-water mark: found in a thread on a
        connection of its own (a scan of every message), indexed a batch per writer
        operation."""
        missing = await self._read_apart(unindexed_below_mark)
        if missing:
            log.warning("indexing %d messages stored below the search index's mark",
                        len(missing))
        for start in range(0, len(missing), BATCH):
            await self._call(functools.partial(index_ids, ids=missing[start:start + BATCH]))

    async def _index_in_background(self) -> None:
        """Once, the messages stored below the mark; then settled messages a batch at a time:
        while there is a backlog (a hub upgraded with many messages), after a pause twice as
        long as the batch took; every ``IDLE_SECONDS`` once caught up."""
        try:
            await self._sweep()
        except Exception:  # logged; the messages stay unfound, the rest is indexed
            log.exception("message search sweep failed")
        while True:
            started = time.perf_counter()
            try:
                added = await self._call(
                    lambda conn: index_pass(conn, BATCH, _settled(time.time()), time.time()))
            except Exception:  # logged; the next pass tries again
                log.exception("message search indexing failed")
                added = 0
            # a backlog takes at most about a third of the writer's time: sends keep the rest
            took = time.perf_counter() - started
            await asyncio.sleep(2 * took if added == BATCH else IDLE_SECONDS)

    async def search_catch_up(self) -> bool:
        """Index the messages stored so far, at most ``CATCH_UP`` batches (a batch per writer
        operation, so sends go on meanwhile); a search runs this first. Whether every stored
        message is indexed now. The read connection sees every write that was acknowledged:
        when it finds nothing left to index, the writer is not asked. Searches arriving
        meanwhile wait for the catch-up under way rather than running their own: when it
        stopped at its cap, they answer as incomplete too; when it finished, one that still
        finds a message to index (stored after the last batch) runs another."""
        if not self._read(_behind):
            return True
        while self._catching_up is not None:
            if not await asyncio.shield(self._catching_up):
                return False
            if not self._read(_behind):
                return True
        self._catching_up = asyncio.get_running_loop().create_future()
        try:
            done = await self._catch_up()
        except BaseException:
            done = False  # the searches waiting answer as incomplete; this one raises
            raise
        finally:
            finished, self._catching_up = self._catching_up, None
            finished.set_result(done)
        return done

    async def _catch_up(self) -> bool:
        for _ in range(CATCH_UP):
            if await self._call(lambda conn: index_pass(conn, BATCH, None, time.time())) < BATCH:
                return True
        return not self._read(_behind)

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
        terms = search_terms(query)
        if not terms:
            return MessageSearchResult([])
        complete = await self.search_catch_up()
        words = match_expression(" ".join(terms))
        # the viewer's key among the words: the index intersects the body's matches with the
        # messages the viewer sent or received, instead of every message holding the words
        match = f"body : ({words}) AND who : ({_who(viewer, partner, sender, conversation, kinds)})"
        params: dict[str, Any] = {
            "me": viewer, "match": match, "partner": partner, "conversation": conversation,
            "sender": sender, "since": since, "until": until, "window": RANKED,
            "examined": EXAMINED - 1, "edge": None}
        cols = ", ".join("m." + c.strip() for c in _MESSAGE_COLUMNS.split(","))
        sql = (
            f"SELECT {cols}, COALESCE(d.state, 'sent') FROM message_search "
            "JOIN message_search_rows r ON r.row = message_search.rowid "
            "JOIN messages m ON m.id = r.id "
            "LEFT JOIN deliveries d ON d.message_id = m.id AND d.recipient = :me "
            "WHERE message_search MATCH :match AND (m.sender = :me OR d.recipient IS NOT NULL) "
            "AND COALESCE(d.state, '') != 'dead' "
            "AND (:edge IS NULL OR message_search.rowid <= :edge)"
            f"{_filters(conversation, partner, sender, since, until, kinds, params)} "
            "ORDER BY message_search.rowid LIMIT :window")

        def run(conn: sqlite3.Connection, scratch: sqlite3.Connection,
                ) -> tuple[list[Any], bool, list[Any]]:
            if since is not None or until is not None:
                # the index does not hold times: the newest EXAMINED matches are all they
                # are checked on, up to the row number of the last of them
                edge = conn.execute("SELECT rowid FROM message_search WHERE message_search "
                                    "MATCH :match ORDER BY rowid LIMIT 1 OFFSET :examined",
                                    params).fetchone()
                params["edge"] = edge[0] if edge else None
            rows = conn.execute(sql, params).fetchall()
            cut = params["edge"] is not None and len(rows) < RANKED
            return rows, cut, rank(scratch, rows, words, limit)

        if self._searchers is None:
            raise RuntimeError("the store is not open")
        rows, cut, ranked = await self._searchers.run(run)
        return MessageSearchResult([
            MessageHit(message=_message_from_row(rows[i][:15]), state=rows[i][15], score=score,
                       snippet=snippet) for i, score, snippet in ranked], complete, cut)


def _opening(body: str) -> str:
    """A snippet from the start of a body, for a match past the part the ranking reads."""
    words = _unmarked(body[:PREFIX]).split()
    return " ".join(words[:16]) + ("…" if len(words) > 16 else "")


def rank(scratch: sqlite3.Connection, rows: list[Any], words: str,
         limit: int) -> list[tuple[int, float, str]]:
    """(position in ``rows``, score, snippet) of the best ``limit`` of ``rows`` for ``words``:
    BM25 by FTS5 itself, in a scratch index of the first ``PREFIX`` characters of these bodies
    alone (see the module's docstring); snippets for the winners only. A row whose match lies
    past its prefix ranks last, newest first, quoted from its start."""
    if not rows:
        return []
    scratch.execute("BEGIN")  # one flush of the index, and the rollback empties it
    try:
        scratch.executemany("INSERT INTO ranked (rowid, body) VALUES (?, ?)",
                            [(i, _unmarked(r[4][:PREFIX])) for i, r in enumerate(rows)])
        matched = {int(i) for (i,) in scratch.execute(
            "SELECT rowid FROM ranked WHERE ranked MATCH ?", (words,))}
        best = scratch.execute("SELECT rowid, bm25(ranked) FROM ranked WHERE ranked MATCH ? "
                               "ORDER BY bm25(ranked), rowid LIMIT ?", (words, limit)).fetchall()
        snippets = dict(scratch.execute(
            "SELECT rowid, snippet(ranked, 0, ?, ?, '…', 16) FROM ranked WHERE ranked MATCH ? "
            "AND rowid IN (SELECT value FROM json_each(?))",
            (MARK_START, MARK_END, words, json.dumps([int(i) for i, _ in best]))).fetchall())
    finally:
        scratch.execute("ROLLBACK")
    out = [(int(i), -float(score), snippets[i]) for i, score in best]
    rest = [i for i in range(len(rows)) if i not in matched][:limit - len(out)]
    return out + [(i, 0.0, _opening(rows[i][4])) for i in rest]


class Searchers:
    """The threads searches run in, off the event loop: ``SEARCHERS`` of them, each with a
    read-only connection to the database and a scratch in-memory index of its own, kept
    open (a connection made per search cost more than most searches), so concurrent searches
    share no connection."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._pool = concurrent.futures.ThreadPoolExecutor(SEARCHERS, "meshhub-search")
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connections(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        if not hasattr(self._local, "conn"):
            conn = sqlite3.connect(self._path, uri=True, isolation_level=None,
                                   check_same_thread=False)
            scratch = sqlite3.connect(":memory:", isolation_level=None,
                                      check_same_thread=False)
            scratch.execute("CREATE VIRTUAL TABLE ranked USING fts5(body, tokenize="
                            "'porter unicode61 remove_diacritics 2')")
            with self._lock:
                self._opened += [conn, scratch]
            self._local.conn, self._local.scratch = conn, scratch
        return self._local.conn, self._local.scratch

    async def run(self, fn: Callable[[sqlite3.Connection, sqlite3.Connection], T]) -> T:
        """``fn(connection, scratch)`` in one of the threads."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: fn(*self._connections()))

    def close(self) -> None:
        """Wait for the searches under way, then close every connection."""
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()
