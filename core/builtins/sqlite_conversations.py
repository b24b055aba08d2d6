"""The SQLite store's figures of conversations for one reader (``conversation_stats``): how
many messages each holds, when the newest was sent, and how many the reader has not read.

Counting a big conversation's index on every listing would read all of it (0.2 s for 300,000
messages). Messages are never deleted, and a message's id starts with the time it was made, so
the count of the ids older than a horizon (:data:`SETTLED_AFTER` before now) cannot change
once taken: :class:`ConversationTotals` keeps it per conversation, and a listing counts only
the ids since the last one and the recent tail.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field

from meshhub.store import ConversationStats

# a message is written within moments of its id being made (the hub queues the write in the
# same loop turn); an id this much older than now is written, or never will be
SETTLED_AFTER = 300.0


@dataclass
class ConversationTotals:
    """Per conversation label: the horizon it was counted up to and how many ids lie below it.
    ``horizon`` only grows, so every conversation's own horizon is at most it."""

    horizon: str = ""
    below: dict[str, tuple[str, int]] = field(default_factory=dict)


def _count(conn: sqlite3.Connection, labels: list[str], start: str,
           end: str | None) -> dict[str, int]:
    """Messages per conversation with ids in ``[start, end)`` (``end`` ``None``: no end),
    from ``messages_conversation``."""
    marks = ",".join("?" * len(labels))
    bound = " AND id < ?" if end is not None else ""
    return dict(conn.execute(
        f"SELECT conversation, COUNT(*) FROM messages WHERE conversation IN ({marks}) "
        f"AND id >= ?{bound} GROUP BY conversation",
        [*labels, start, *([end] if end is not None else [])]).fetchall())


def message_counts(conn: sqlite3.Connection, labels: list[str],
                   totals: ConversationTotals, now: float) -> dict[str, int]:
    """Every message of each conversation, counting only what the last call did not."""
    horizon = max(f"{int((now - SETTLED_AFTER) * 1000):012x}", totals.horizon)
    totals.horizon = horizon
    by_start: dict[str, list[str]] = {}
    for label in labels:
        by_start.setdefault(totals.below.get(label, ("", 0))[0], []).append(label)
    for start, group in by_start.items():
        if start < horizon:
            step = _count(conn, group, start, horizon)
            for label in group:
                before = totals.below.get(label, ("", 0))[1]
                totals.below[label] = (horizon, before + step.get(label, 0))
    tail = _count(conn, labels, horizon, None)
    return {label: totals.below[label][1] + tail.get(label, 0) for label in labels}


def conversation_stats(conn: sqlite3.Connection, names: list[str], viewer: str,
                       totals: ConversationTotals) -> dict[str, ConversationStats]:
    """The figures of ``#name`` for each of ``names`` as ``viewer`` sees them, whatever their
    number in four grouped reads: counts (above), the newest message of each (one index
    probe each), the whispers not meant for the viewer (``messages_whispers``: whispers only)
    taken off, and the viewer's unread deliveries."""
    if not names:
        return {}
    labels = ["#" + n for n in names]
    counts = message_counts(conn, labels, totals, time.time())
    stats = {n: ConversationStats(name=n, messages=counts["#" + n]) for n in names}
    hidden = _hidden_whispers(conn, labels, viewer)
    for name in names:
        stats[name].messages -= len(hidden.get(name, ()))
    for label, last, last_at in conn.execute(
            "SELECT j.value, (SELECT id FROM messages WHERE conversation = j.value "
            "ORDER BY id DESC LIMIT 1), (SELECT created_at FROM messages "
            "WHERE conversation = j.value ORDER BY id DESC LIMIT 1) FROM json_each(?) j",
            (json.dumps(labels),)):
        name = label[1:]
        stats[name].last_activity = (
            _newest_visible(conn, label, hidden[name]) if last in hidden.get(name, ())
            else last_at)
    for label, count in conn.execute(
            # the viewer's unread deliveries first, each message by its key: the planner
            # would rather walk every message of the conversations (30 times slower)
            "SELECT m.conversation, COUNT(*) FROM deliveries d CROSS JOIN messages m "
            "ON m.id = d.message_id WHERE d.recipient = ? "
            "AND d.state IN ('queued','pushed','delivered') AND +m.conversation IN "
            f"({','.join('?' * len(labels))}) GROUP BY m.conversation", [viewer, *labels]):
        stats[label[1:]].unread = count
    return stats


def _hidden_whispers(conn: sqlite3.Connection, labels: list[str],
                     viewer: str) -> dict[str, set[str]]:
    """Per conversation name, the ids of its whispers ``viewer`` neither sent nor received."""
    hidden: dict[str, set[str]] = {}
    for label, message_id in conn.execute(
            "SELECT m.conversation, m.id FROM messages m INDEXED BY messages_whispers "
            f"WHERE m.conversation IN ({','.join('?' * len(labels))}) "
            "AND m.whisper_json != '[]' AND m.sender != ? AND NOT EXISTS (SELECT 1 "
            "FROM deliveries d WHERE d.message_id = m.id AND d.recipient = ?)",
            [*labels, viewer, viewer]):
        hidden.setdefault(label[1:], set()).add(message_id)
    return hidden


def _newest_visible(conn: sqlite3.Connection, label: str, hidden: set[str]) -> float | None:
    """When the newest message of a conversation whose newest is a whisper hidden from the
    viewer, but for the hidden ones, was sent."""
    marks = ",".join("?" * len(hidden))
    row = conn.execute(
        f"SELECT created_at FROM messages WHERE conversation = ? AND id NOT IN ({marks}) "
        "ORDER BY id DESC LIMIT 1", [label, *hidden]).fetchone()
    return row[0] if row else None
