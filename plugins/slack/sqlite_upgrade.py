"""The SQLite upgrade path of the connector's data (migration set ``meshhub.slack``).

Before the record API the connector kept its own tables (``m001``, never edited); ``m002`` moves
their rows into the collections of :mod:`.state` and drops them. On a new hub the tables are
made empty and go.
"""

from __future__ import annotations

import json

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub.builtins.sqlite_records import write_record

from .state import ATTEMPTS, EVENTS, KEEP_EVENTS, MESSAGES, attempt_key, message_key

migrations = Migrations("meshhub.slack")


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


@migrations()
def m002_move_to_records(db: Database) -> None:
    """Every row of the old tables into the collections, then the tables go: a handled event
    expires a day after it was handled, a kept one waits (its body as a document)."""
    conn = db.conn
    for event_id, body, received, handled, attempts in conn.execute(
            "SELECT event_id, body, received_at, handled_at, attempts FROM slack_events"
    ).fetchall():
        value = {"body": json.loads(body) if body else None, "received_at": received,
                 "handled_at": handled, "attempts": attempts}
        write_record(conn, EVENTS, event_id, value, created_at=received,
                     expires_at=None if handled is None else handled + KEEP_EVENTS)
    for channel, ts, mesh_id, part, outgoing, created in conn.execute(
            "SELECT channel, ts, mesh_id, part, outgoing, created_at FROM slack_messages"
    ).fetchall():
        value = {"channel": channel, "ts": ts, "mesh_id": mesh_id, "part": part,
                 "outgoing": bool(outgoing)}
        write_record(conn, MESSAGES, message_key(channel, ts), value, created_at=created)
    for mesh_id, channel, part, started in conn.execute(
            "SELECT mesh_id, channel, part, started_at FROM slack_attempts").fetchall():
        value = {"mesh_id": mesh_id, "channel": channel, "part": part, "started_at": started}
        write_record(conn, ATTEMPTS, attempt_key(mesh_id, channel, part), value,
                     created_at=started)
    for name in ("slack_events", "slack_messages", "slack_attempts"):
        conn.execute(f"DROP TABLE {name}")
