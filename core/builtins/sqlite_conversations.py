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
from collections.abc import Callable
from dataclasses import dataclass, field

from meshhub.store import ConversationStats

# a message is written within moments of its id being made (the hub queues the write in the
# same loop turn); an id this much older than now is written, or never will be
SETTLED_AFTER = 300.0


@dataclass
class ConversationTotals:
    """Counts taken up to a horizon, which cannot change once taken: per conversation label,
    the horizon it was counted up to and how many ids lie below it (``below``), and the same
    for the whispers each viewer may not see (``hidden``, per viewer key: the recipients of a
    message are fixed when it is sent). ``horizon`` only grows, so every conversation's own
    horizon is at most it."""

    horizon: str = ""
    below: dict[str, tuple[str, int]] = field(default_factory=dict)
    hidden: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)


Counter = Callable[[sqlite3.Connection, list[str], str, "str | None"], dict[str, int]]


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


def _hidden_counter(viewer: str) -> Counter:
    """Like :func:`_count`, for the whispers ``viewer`` neither sent nor received, read from
    ``messages_whispers`` (whispers only)."""
    def count(conn: sqlite3.Connection, labels: list[str], start: str,
              end: str | None) -> dict[str, int]:
        marks = ",".join("?" * len(labels))
        bound = " AND m.id < ?" if end is not None else ""
        return dict(conn.execute(
            "SELECT m.conversation, COUNT(*) FROM messages m INDEXED BY messages_whispers "
            f"WHERE m.conversation IN ({marks}) AND m.whisper_json != '[]' AND m.id >= ?"
            f"{bound} AND m.sender != ? AND NOT EXISTS (SELECT 1 FROM deliveries d "
            "WHERE d.message_id = m.id AND d.recipient = ?) GROUP BY m.conversation",
            [*labels, start, *([end] if end is not None else []), viewer, viewer]).fetchall())
    return count


def _settled_counts(conn: sqlite3.Connection, labels: list[str], horizon: str,
                    kept: dict[str, tuple[str, int]], count: Counter) -> dict[str, int]:
    """``count`` per conversation over all ids: what ``kept`` holds below its horizon, what
    lies between that and ``horizon`` (added to ``kept``), and the tail above ``horizon``."""
    by_start: dict[str, list[str]] = {}
    for label in labels:
        by_start.setdefault(kept.get(label, ("", 0))[0], []).append(label)
    for start, group in by_start.items():
        if start < horizon:
            step = count(conn, group, start, horizon)
            for label in group:
                kept[label] = (horizon, kept.get(label, ("", 0))[1] + step.get(label, 0))
    tail = count(conn, labels, horizon, None)
    return {label: kept[label][1] + tail.get(label, 0) for label in labels}


def message_counts(conn: sqlite3.Connection, labels: list[str], viewer: str,
                   totals: ConversationTotals, now: float) -> dict[str, int]:
    """The messages of each conversation ``viewer`` may see (all but the whispers to others),
    counting only what the last call did not."""
    horizon = max(f"{int((now - SETTLED_AFTER) * 1000):012x}", totals.horizon)
    totals.horizon = horizon
    every = _settled_counts(conn, labels, horizon, totals.below, _count)
    hidden = _settled_counts(conn, labels, horizon, totals.hidden.setdefault(viewer, {}),
                             _hidden_counter(viewer))
    return {label: every[label] - hidden[label] for label in labels}


def conversation_stats(conn: sqlite3.Connection, names: list[str], viewer: str,
                       totals: ConversationTotals) -> dict[str, ConversationStats]:
    """The figures of ``#name`` for each of ``names`` as ``viewer`` sees them, whatever their
    number, in a few grouped reads: counts (above), the newest message the viewer may see of
    each (read newest first from ``messages_conversation``, stopping at the first), and the
    viewer's unread deliveries."""
    if not names:
        return {}
    labels = ["#" + n for n in names]
    counts = message_counts(conn, labels, viewer, totals, time.time())
    stats = {n: ConversationStats(name=n, messages=counts["#" + n]) for n in names}
    for label, last_at in conn.execute(
            "SELECT j.value, (SELECT m.created_at FROM messages m WHERE m.conversation = j.value "
            "AND (m.whisper_json = '[]' OR m.sender = ? OR EXISTS (SELECT 1 FROM deliveries d "
            "WHERE d.message_id = m.id AND d.recipient = ?)) ORDER BY m.id DESC LIMIT 1) "
            "FROM json_each(?) j", (viewer, viewer, json.dumps(labels))):
        stats[label[1:]].last_activity = last_at
    for label, count in conn.execute(
            # the viewer's unread deliveries first, each message by its key: the planner
            # would rather walk every message of the conversations (30 times slower)
            "SELECT m.conversation, COUNT(*) FROM deliveries d CROSS JOIN messages m "
            "ON m.id = d.message_id WHERE d.recipient = ? "
            "AND d.state IN ('queued','pushed','delivered') AND +m.conversation IN "
            f"({','.join('?' * len(labels))}) GROUP BY m.conversation", [viewer, *labels]):
        stats[label[1:]].unread = count
    return stats
