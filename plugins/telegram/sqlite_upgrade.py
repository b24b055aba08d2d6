"""The Telegram connector's SQLite upgrade path (migration set ``meshhub.telegram``): the tables
it kept before the record API, and the move of their rows into its collections
(:mod:`.state`). Applied migrations are never edited."""

from __future__ import annotations

import time

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub.builtins.sqlite_records import write_record

from .state import MESSAGES, STATE, UPDATE_KEPT, UPDATES, message_key

migrations = Migrations("meshhub.telegram")


@migrations()
def m001_create_telegram_state(db: Database) -> None:
    db.execute("CREATE TABLE telegram_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        """
        CREATE TABLE telegram_updates (
            update_id INTEGER PRIMARY KEY,
            handled_at REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE telegram_messages (
            chat_id TEXT NOT NULL,
            tg_message_id INTEGER NOT NULL,
            mesh_id TEXT NOT NULL,
            part INTEGER NOT NULL DEFAULT 0,
            outgoing INTEGER NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (chat_id, tg_message_id)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX telegram_messages_mesh ON telegram_messages (mesh_id, chat_id)")


@migrations()
def m002_move_to_records(db: Database) -> None:
    """The state, the handled updates of the last day (remembered until a day after they were
    handled) and the message map into their collections, then the tables go."""
    conn = db.conn
    for key, value in conn.execute("SELECT key, value FROM telegram_state").fetchall():
        write_record(conn, STATE, key, {"value": value})
    handled = conn.execute("SELECT update_id, handled_at FROM telegram_updates WHERE "
                           "handled_at + ? > ?", (UPDATE_KEPT, time.time())).fetchall()
    for update_id, handled_at in handled:
        write_record(conn, UPDATES, str(update_id), {}, created_at=handled_at,
                     expires_at=handled_at + UPDATE_KEPT)
    mapped = conn.execute("SELECT chat_id, tg_message_id, mesh_id, part, outgoing, created_at "
                          "FROM telegram_messages").fetchall()
    for chat_id, tg_message_id, mesh_id, part, outgoing, created_at in mapped:
        write_record(conn, MESSAGES, message_key(chat_id, tg_message_id), {
            "chat_id": chat_id, "tg_message_id": tg_message_id, "mesh_id": mesh_id,
            "part": part, "outgoing": bool(outgoing)}, created_at=created_at)
    for table in ("telegram_state", "telegram_updates", "telegram_messages"):
        conn.execute(f"DROP TABLE {table}")
