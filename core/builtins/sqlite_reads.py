"""The SQLite store's reads of messages for one reader: inbox, threads, history and unread
counts. They run on the read connection (:meth:`SQLiteStore._read`), which sees every write whose
caller has been told it is done."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from meshhub.models import Message
from meshhub.store import ConversationStats, InboxItem, ThreadSummary

from .sqlite_conversations import ConversationTotals, conversation_stats

T = TypeVar("T")
LIVE_STATES = ("queued", "pushed", "delivered", "read")  # every delivery state but dead

_MESSAGE_COLUMNS = (
    "id, sender, target, conversation, body, kind, recipients_json, mentions_json, whisper_json, "
    "reply_to, priority, attachments_json, data_json, client_id, created_at"
)


def _message_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Message:
    return Message(
        id=row[0],
        sender=row[1],
        target=row[2],
        conversation=row[3],
        body=row[4],
        kind=row[5],
        recipients=json.loads(row[6]),
        mentions=json.loads(row[7]),
        whisper=json.loads(row[8]),
        reply_to=row[9],
        priority=row[10],
        attachments=json.loads(row[11]),
        data=json.loads(row[12]) if row[12] else None,
        client_id=row[13],
        created_at=row[14],
    )


def _thread_summaries(conn: sqlite3.Connection, ids: list[str],
                      viewer: str) -> dict[str, ThreadSummary]:
    """The summaries of the thread roots among ``ids`` as ``viewer`` sees them: one grouped
    read of the replies it sent or received (``messages_reply_to``), grouped by root and
    replier. For a page of messages only (a subquery per root would run once per row)."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        "SELECT m.reply_to, m.sender, COUNT(*), MIN(m.id), MAX(m.id), MAX(m.created_at), "
        "SUM(d.state IN ('queued','pushed','delivered')) FROM messages m "
        "LEFT JOIN deliveries d ON d.message_id = m.id AND d.recipient = ? "
        f"WHERE m.reply_to IN ({marks}) AND (m.sender = ? OR d.recipient IS NOT NULL) "
        "AND COALESCE(d.state, '') != 'dead' "
        "GROUP BY m.reply_to, m.sender ORDER BY m.reply_to, MIN(m.id)",
        [viewer, *ids, viewer],
    ).fetchall()
    out: dict[str, ThreadSummary] = {}
    newest: dict[str, str] = {}
    for root, sender, count, _first, last, last_at, unread in rows:
        summary = out.setdefault(root, ThreadSummary(root=root))
        summary.replies += count
        summary.unread += unread or 0
        summary.participants.append(sender)
        if last > newest.get(root, ""):
            newest[root] = last
            summary.last_reply_at, summary.last_reply_by = last_at, sender
    return out


def _page(rows: list[Any], viewer: str, conn: sqlite3.Connection) -> list[InboxItem]:
    threads = _thread_summaries(conn, [r[0] for r in rows if r[9] is None], viewer)
    items = []
    for r in rows:
        summary = threads.get(r[0])
        items.append(InboxItem(message=_message_from_row(r[:15]), state=r[15],
                               mentioned=bool(r[16]),
                               replies=summary.replies if summary else 0, thread=summary))
    return items


class MessageReads:
    """Mixed into :class:`~meshhub.builtins.sqlite_store.SQLiteStore`."""

    _conversation_totals: ConversationTotals

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _read_apart(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def inbox(
        self,
        recipient: str,
        *,
        since: str | None,
        unread_only: bool,
        top_level_only: bool,
        limit: int,
    ) -> list[InboxItem]:
        def run(conn: sqlite3.Connection) -> list[InboxItem]:
            cols = ", ".join("m." + c.strip() for c in _MESSAGE_COLUMNS.split(","))
            where = ["d.recipient = ?"]
            args: list[Any] = [recipient]
            if since:
                where.append("d.message_id > ?")
                args.append(since)
            if unread_only:
                where.append("d.state IN ('queued','pushed','delivered')")
            else:
                where.append("d.state != 'dead'")
            if top_level_only:
                where.append("m.reply_to IS NULL")
            args.append(limit)
            rows = conn.execute(
                f"SELECT {cols}, d.state, d.mentioned "
                "FROM deliveries d JOIN messages m ON m.id = d.message_id "
                f"WHERE {' AND '.join(where)} ORDER BY d.message_id LIMIT ?",
                args,
            ).fetchall()
            return _page(rows, recipient, conn)

        return self._read(run)

    async def thread(self, root_id: str, viewer: str) -> list[InboxItem]:
        def run(conn: sqlite3.Connection) -> list[InboxItem]:
            cols = ", ".join("m." + c.strip() for c in _MESSAGE_COLUMNS.split(","))
            rows = conn.execute(
                f"SELECT {cols}, COALESCE(d.state, 'sent'), COALESCE(d.mentioned, 0) "
                "FROM messages m LEFT JOIN deliveries d ON d.message_id = m.id "
                "AND d.recipient = ? WHERE (m.id = ? OR m.reply_to = ?) "
                "AND (m.sender = ? OR d.recipient IS NOT NULL) "
                "AND COALESCE(d.state, '') != 'dead' ORDER BY m.id",
                (viewer, root_id, root_id, viewer),
            ).fetchall()
            return [InboxItem(message=_message_from_row(r[:15]), state=r[15],
                              mentioned=bool(r[16])) for r in rows]

        return self._read(run)

    async def thread_summaries(self, root_ids: list[str],
                               viewer: str) -> dict[str, ThreadSummary]:
        return self._read(lambda conn: _thread_summaries(conn, list(root_ids), viewer))

    async def conversation_stats(self, names: list[str],
                                 viewer: str) -> dict[str, ConversationStats]:
        totals = self._conversation_totals
        return self._read(lambda conn: conversation_stats(conn, list(names), viewer, totals))

    async def unread_counts(self, recipient: str) -> dict[str, Any]:
        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            rows = conn.execute(
                "SELECT m.sender, COALESCE(m.reply_to, ''), m.conversation, COUNT(*), "
                "SUM(d.mentioned) FROM deliveries d JOIN messages m ON m.id = d.message_id "
                "WHERE d.recipient = ? AND d.state IN ('queued','pushed','delivered') "
                "GROUP BY m.sender, m.reply_to, m.conversation",
                (recipient,),
            ).fetchall()
            by_sender: dict[str, int] = {}
            by_thread: dict[str, int] = {}
            by_conversation: dict[str, int] = {}
            total = mentions = 0
            for sender, thread, conversation, count, mentioned in rows:
                total += count
                mentions += mentioned or 0
                by_sender[sender] = by_sender.get(sender, 0) + count
                if thread:
                    by_thread[thread] = by_thread.get(thread, 0) + count
                where = f"dm:{sender}" if conversation == "dm" else conversation
                by_conversation[where] = by_conversation.get(where, 0) + count
            return {
                "total": total, "mentions": mentions, "by_sender": by_sender,
                "by_thread": by_thread, "by_conversation": by_conversation,
            }

        return self._read(run)

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
        """Messages ``viewer`` sent or received, newest ``limit`` (oldest first; after ``after``
        when given: the oldest ``limit`` after it). ``conversation`` (``#name``, ``@group``...)
        or ``partner``: the direct messages between the viewer and that peer key. A sent
        message's state is ``sent``."""

        order = "ASC" if after else "DESC"
        bounds = (" AND m.id < :before" if before else "") + (" AND m.id > :after" if after else "")
        bounds += " AND m.reply_to IS NULL" if top_level_only else ""
        params = {"me": viewer, "partner": partner, "conversation": conversation,
                  "before": before, "after": after, "limit": limit}
        cols = ", ".join("m." + c.strip() for c in _MESSAGE_COLUMNS.split(","))
        if conversation is not None:
            # one conversation: its index, newest first, keeping what the viewer can see
            queries = [
                f"SELECT {cols}, COALESCE(d.state, 'sent'), COALESCE(d.mentioned, 0) "
                "FROM messages m LEFT JOIN deliveries d ON d.message_id = m.id "
                "AND d.recipient = :me WHERE m.conversation = :conversation "
                f"AND (m.sender = :me OR d.recipient IS NOT NULL){bounds} "
                f"AND COALESCE(d.state, '') != 'dead' ORDER BY m.id {order} LIMIT :limit"]
        else:
            # everything, or one peer's direct messages: what the viewer received (its
            # deliveries) and what it sent (its messages), each newest first, then merged
            received = sent = ""
            if partner is not None:
                received = " AND m.sender = :partner AND m.conversation = 'dm'"
                sent = (" AND m.conversation = 'dm' AND EXISTS (SELECT 1 FROM deliveries p "
                        "WHERE p.message_id = m.id AND p.recipient = :partner)")
            # one range of deliveries_recipient (recipient, state, message_id) per live
            # state, each read in message order: no sort of all the viewer's deliveries
            queries = [
                f"SELECT {cols}, d.state, d.mentioned FROM deliveries d JOIN messages m "
                f"ON m.id = d.message_id WHERE d.recipient = :me AND d.state = '{state}'"
                f"{received}{bounds} ORDER BY d.message_id {order} LIMIT :limit"
                for state in LIVE_STATES]
            queries.append(
                f"SELECT {cols}, 'sent', 0 FROM messages m WHERE m.sender = :me{sent}{bounds} "
                f"ORDER BY m.id {order} LIMIT :limit")

        def run(conn: sqlite3.Connection) -> list[InboxItem]:
            found: dict[str, Any] = {}
            for query in queries:  # a message to oneself is in both: the received row wins
                for row in conn.execute(query, params):
                    found.setdefault(row[0], row)
            rows = sorted(found.values(), key=lambda r: r[0], reverse=not after)[:limit]
            if not after:
                rows.reverse()
            return _page(rows, viewer, conn)

        return self._read(run)

    async def attachment_for(self, viewer: str, sha256: str) -> dict[str, Any] | None:
        row = await self._read_apart(lambda conn: conn.execute(  # the viewer's whole history
            "SELECT a.value FROM messages m, json_each(m.attachments_json) a "
            "WHERE m.id IN (SELECT id FROM messages WHERE sender=? UNION "
            "SELECT message_id FROM deliveries WHERE recipient=?) "
            "AND m.attachments_json != '[]' AND json_extract(a.value, '$.file') = ? "
            "LIMIT 1", (viewer, viewer, sha256)).fetchone())
        found = json.loads(row[0]) if row is not None else None
        return found if isinstance(found, dict) else None
