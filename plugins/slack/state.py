"""The connector's own tables (migration set ``meshhub.slack``):

- ``slack_events``: the Events API events taken, by Slack's ``event_id``: the id of each handled
  one (kept a day, so a retry Slack sends, ``X-Slack-Retry-Num``, is recognised even after a
  restart), and the whole body of one acked before it was handled (it outlasted Slack's ack
  window, or handling it failed), which the next start handles.
- ``slack_messages``: which Slack message (channel, ts) carries which mesh message, both ways,
  for threads, reactions, edits, button updates and not posting a part twice;
- ``slack_attempts``: a post whose answer was lost (a 5xx, the network): the next attempt looks
  the message up (by its metadata) instead of posting it again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

if TYPE_CHECKING:
    from meshhub.store import Store

migrations = Migrations("meshhub.slack")
KEEP_EVENTS = 86400.0


@migrations()
def m001_create_slack_state(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE slack_events (
            event_id TEXT PRIMARY KEY,
            body TEXT NOT NULL,
            received_at REAL NOT NULL,
            handled_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX slack_events_pending ON slack_events (handled_at, received_at)")
    db.execute(
        """
        CREATE TABLE slack_messages (
            channel TEXT NOT NULL,
            ts TEXT NOT NULL,
            mesh_id TEXT NOT NULL,
            part INTEGER NOT NULL DEFAULT 0,
            outgoing INTEGER NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (channel, ts)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX slack_messages_mesh ON slack_messages (mesh_id, channel, part)")
    db.execute(
        """
        CREATE TABLE slack_attempts (
            mesh_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            part INTEGER NOT NULL,
            started_at REAL NOT NULL,
            PRIMARY KEY (mesh_id, channel, part)
        ) WITHOUT ROWID
        """
    )


class SlackState:
    """The connector's tables, through the store's writer (one transaction per call)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the event inbox -------------------------------------------------------------------------
    async def keep_event(self, event_id: str, body: dict[str, Any], *,
                         failed: bool = False) -> None:
        """Keep an event acked before it is handled (it outlasted the ack window, or handling
        it ``failed``, which counts an attempt): it is handled again later. An event handled
        meanwhile stays handled."""
        now = time.time()
        text = json.dumps(body, separators=(",", ":"))
        await self.store.transact(lambda conn: conn.execute(
            "INSERT INTO slack_events (event_id, body, received_at, attempts) VALUES (?,?,?,?) "
            "ON CONFLICT(event_id) DO UPDATE SET body=excluded.body, "
            "attempts=attempts+excluded.attempts WHERE handled_at IS NULL",
            (event_id, text, now, int(failed))))

    async def event_handled(self, event_id: str) -> None:
        """Remember a handled event's id for a day (Slack retries for an hour at most)."""
        now = time.time()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO slack_events (event_id, body, received_at, handled_at) "
                "VALUES (?,'',?,?) ON CONFLICT(event_id) DO UPDATE SET body='', "
                "handled_at=excluded.handled_at", (event_id, now, now))
            conn.execute("DELETE FROM slack_events WHERE handled_at < ?", (now - KEEP_EVENTS,))

        await self.store.transact(run)

    async def known_events(self, limit: int) -> list[str]:
        """The ids of the newest events taken (handled or kept), newest first."""
        rows = await self.store.transact(lambda conn: conn.execute(
            "SELECT event_id FROM slack_events ORDER BY received_at DESC LIMIT ?",
            (limit,)).fetchall())
        return [row[0] for row in rows]

    async def pending_events(self, max_attempts: int) -> list[dict[str, Any]]:
        """Events kept but not handled yet (a failure, or the hub stopped in between) that
        failed fewer than ``max_attempts`` times, oldest first."""
        rows = await self.store.transact(lambda conn: conn.execute(
            "SELECT body FROM slack_events WHERE handled_at IS NULL AND attempts < ? "
            "ORDER BY received_at", (max_attempts,)).fetchall())
        return [json.loads(row[0]) for row in rows]

    # -- message map -----------------------------------------------------------------------------
    async def map_message(self, channel: str, ts: str, mesh_id: str, *, part: int = 0,
                          outgoing: bool) -> None:
        """Remember that Slack's (``channel``, ``ts``) carries part ``part`` of ``mesh_id``
        (``outgoing``: posted by the app); a post in flight for it is done."""
        now = time.time()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO slack_messages (channel, ts, mesh_id, part, outgoing, "
                "created_at) VALUES (?,?,?,?,?,?)",
                (channel, ts, mesh_id, part, int(outgoing), now))
            conn.execute("DELETE FROM slack_attempts WHERE mesh_id=? AND channel=? AND part=?",
                         (mesh_id, channel, part))

        await self.store.transact(run)

    async def mesh_id(self, channel: str, ts: str) -> str | None:
        """The mesh message a Slack message carries (either way), if any."""
        row = await self.store.transact(lambda conn: conn.execute(
            "SELECT mesh_id FROM slack_messages WHERE channel=? AND ts=?",
            (channel, ts)).fetchone())
        return row[0] if row else None

    async def ts_of(self, mesh_id: str, channel: str) -> str | None:
        """The Slack message in ``channel`` that begins ``mesh_id`` (posted or taken)."""
        row = await self.store.transact(lambda conn: conn.execute(
            "SELECT ts FROM slack_messages WHERE mesh_id=? AND channel=? ORDER BY part LIMIT 1",
            (mesh_id, channel)).fetchone())
        return row[0] if row else None

    async def posts_of(self, mesh_id: str) -> list[tuple[str, str]]:
        """Every (channel, ts) where the first part of ``mesh_id`` is on Slack."""
        rows = await self.store.transact(lambda conn: conn.execute(
            "SELECT channel, ts FROM slack_messages WHERE mesh_id=? AND part=0",
            (mesh_id,)).fetchall())
        return [(row[0], row[1]) for row in rows]

    async def every_part(self, mesh_id: str) -> dict[str, dict[int, str]]:
        """Every channel the app posted ``mesh_id`` to: channel -> (part -> ts)."""
        rows = await self.store.transact(lambda conn: conn.execute(
            "SELECT channel, part, ts FROM slack_messages WHERE mesh_id=? AND outgoing=1",
            (mesh_id,)).fetchall())
        posts: dict[str, dict[int, str]] = {}
        for channel, part, ts in rows:
            posts.setdefault(channel, {})[part] = ts
        return posts

    async def parts(self, mesh_id: str, channel: str) -> tuple[dict[int, str], dict[int, float]]:
        """What is known of ``mesh_id`` in ``channel``: the parts already posted (part -> ts),
        and those whose post may have gone through though its answer was lost (part -> when the
        first try started)."""

        def run(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            return (
                conn.execute("SELECT part, ts FROM slack_messages WHERE mesh_id=? AND channel=? "
                             "AND outgoing=1", (mesh_id, channel)).fetchall(),
                conn.execute("SELECT part, started_at FROM slack_attempts WHERE mesh_id=? AND "
                             "channel=?", (mesh_id, channel)).fetchall(),
            )

        posted, unsure = await self.store.transact(run)
        return dict(posted), {part: float(started) for part, started in unsure}

    # -- posts whose answer may be lost ----------------------------------------------------------
    async def unsure(self, mesh_id: str, channel: str, part: int, since: float) -> None:
        """Remember that a post of ``part`` may be on Slack (a try's answer was lost); the
        next try looks for it first. Written only on such a failure, never per post."""
        await self.store.transact(lambda conn: conn.execute(
            "INSERT OR IGNORE INTO slack_attempts (mesh_id, channel, part, started_at) "
            "VALUES (?,?,?,?)", (mesh_id, channel, part, since)))
