"""The SQLite store's count of the messages of a time window for one viewer
(``message_window``), for the session report.

A message's id starts with the milliseconds of its making, so a window is a range of ids: what
the viewer received is a range of ``deliveries_recipient`` (recipient, state, message_id) per
live state, what it sent a range of ``messages_sender`` (sender, id). Both are counted by
aggregates in SQLite, never brought into Python one row at a time.
"""

from __future__ import annotations

import sqlite3

from meshhub.ids import id_floor
from meshhub.store import MessageWindow, WindowCount

from .sqlite_reads import LIVE_STATES

_SEEN = (
    "WITH seen(conversation, sender, reply_to) AS ("
    "SELECT m.conversation, m.sender, m.reply_to FROM deliveries d JOIN messages m "
    "ON m.id = d.message_id WHERE d.recipient = :me AND d.state IN "
    f"({','.join(repr(s) for s in LIVE_STATES)}) "
    "AND d.message_id >= :lo AND d.message_id < :hi "
    "UNION ALL "
    "SELECT m.conversation, m.sender, m.reply_to FROM messages m WHERE m.sender = :me "
    "AND m.id >= :lo AND m.id < :hi AND NOT EXISTS (SELECT 1 FROM deliveries o "
    "WHERE o.message_id = m.id AND o.recipient = :me AND o.state != 'dead')) "
)


def message_window(conn: sqlite3.Connection, viewer: str, since: float,
                   until: float) -> MessageWindow:
    """Count what ``viewer`` sent or received (a live delivery) in ``[since, until)``: per
    conversation and sender, and the threads replied to in each conversation. A message to
    oneself counts once."""
    params = {"me": viewer, "lo": id_floor(since), "hi": id_floor(until)}
    counts = [WindowCount(conversation, sender, messages, replies)
              for conversation, sender, messages, replies in conn.execute(
                  _SEEN + "SELECT conversation, sender, COUNT(*), COUNT(reply_to) FROM seen "
                  "GROUP BY conversation, sender", params)]
    if not any(c.replies for c in counts):  # the second pass only when it finds something
        return MessageWindow(counts=counts)
    threads = dict(conn.execute(
        _SEEN + "SELECT conversation, COUNT(DISTINCT reply_to) FROM seen "
        "WHERE reply_to IS NOT NULL GROUP BY conversation", params).fetchall())
    return MessageWindow(counts=counts, threads=threads)
