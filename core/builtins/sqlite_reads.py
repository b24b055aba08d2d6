"""The SQLite store's reads of messages for one reader: inbox, threads, history and unread
counts. They run on the read connection (:meth:`SQLiteStore._read`), which sees every write whose
caller has been told it is done."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from meshhub.models import Message
from meshhub.store import InboxItem

T = TypeVar("T")

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


def _reply_counts(conn: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
    """Reply counts of the given thread roots (for a page of messages only: a subquery in the
    select list would run for every matching row before the sort)."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    return dict(conn.execute(
        f"SELECT reply_to, COUNT(*) FROM messages WHERE reply_to IN ({marks}) GROUP BY reply_to",
        ids,
    ).fetchall())


class MessageReads:
    """Mixed into :class:`~meshhub.builtins.sqlite_store.SQLiteStore`."""

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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
            replies = _reply_counts(conn, [r[0] for r in rows])
            return [
                InboxItem(
                    message=_message_from_row(r[:15]), state=r[15], mentioned=bool(r[16]),
                    replies=replies.get(r[0], 0),
                )
                for r in rows
            ]

        return self._read(run)

    async def thread(self, root_id: str, viewer: str) -> list[Message]:
        def run(conn: sqlite3.Connection) -> list[Message]:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE (m.id = ? OR m.reply_to = ?) "
                "AND (m.sender = ? OR EXISTS (SELECT 1 FROM deliveries d "
                "WHERE d.message_id = m.id AND d.recipient = ?)) ORDER BY m.id",
                (root_id, root_id, viewer, viewer),
            ).fetchall()
            return [_message_from_row(r) for r in rows]

        return self._read(run)

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

        def run(conn: sqlite3.Connection) -> list[InboxItem]:
            cols = ", ".join("m." + c.strip() for c in _MESSAGE_COLUMNS.split(","))
            where = ["(m.sender = :me OR d.recipient IS NOT NULL)"]
            if partner is not None:
                where += ["m.conversation = 'dm'",
                          "((m.sender = :me AND EXISTS (SELECT 1 FROM deliveries p WHERE "
                          "p.message_id = m.id AND p.recipient = :partner)) "
                          "OR (m.sender = :partner AND d.recipient IS NOT NULL))"]
            elif conversation is not None:
                where.append("m.conversation = :conversation")
            if top_level_only:
                where.append("m.reply_to IS NULL")
            if before:
                where.append("m.id < :before")
            if after:
                where.append("m.id > :after")
            rows = conn.execute(
                f"SELECT {cols}, COALESCE(d.state, 'sent'), COALESCE(d.mentioned, 0) "
                "FROM messages m LEFT JOIN deliveries d "
                "ON d.message_id = m.id AND d.recipient = :me "
                f"WHERE {' AND '.join(where)} AND COALESCE(d.state, '') != 'dead' "
                f"ORDER BY m.id {'ASC' if after else 'DESC'} LIMIT :limit",
                {"me": viewer, "partner": partner, "conversation": conversation,
                 "before": before, "after": after, "limit": limit},
            ).fetchall()
            if not after:
                rows.reverse()
            replies = _reply_counts(conn, [r[0] for r in rows])
            return [
                InboxItem(message=_message_from_row(r[:15]), state=r[15],
                          mentioned=bool(r[16]), replies=replies.get(r[0], 0))
                for r in rows
            ]

        return self._read(run)
