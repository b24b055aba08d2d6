"""The connector's own tables (migration set ``meshhub.telegram``): the update offset, the
updates a webhook already handled, and which platform messages carry which mesh message (for
reply threading, settled approval cards, and not posting a part twice after a retry)."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

if TYPE_CHECKING:
    from meshhub.store import Store

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


class TelegramState:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, key: str) -> str | None:
        row = await self.store.transact(lambda conn: conn.execute(
            "SELECT value FROM telegram_state WHERE key=?", (key,)).fetchone())
        return row[0] if row else None

    async def put(self, key: str, value: str) -> None:
        await self.store.transact(lambda conn: conn.execute(
            "INSERT INTO telegram_state (key, value) VALUES (?,?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)))

    async def offset(self) -> int | None:
        value = await self.get("update_offset")
        return int(value) if value is not None else None

    async def save_offset(self, offset: int) -> None:
        await self.put("update_offset", str(offset))

    async def claim_update(self, update_id: int) -> bool:
        """Record a webhook update as handled; ``False`` when it was handled before."""
        now = time.time()

        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("INSERT OR IGNORE INTO telegram_updates (update_id, handled_at) "
                               "VALUES (?,?)", (update_id, now))
            if update_id % 1000 == 0:  # keep the table small
                conn.execute("DELETE FROM telegram_updates WHERE handled_at < ?", (now - 86400,))
            return cur.rowcount > 0

        return await self.store.transact(run)

    async def forget_update(self, update_id: int) -> None:
        await self.store.transact(lambda conn: conn.execute(
            "DELETE FROM telegram_updates WHERE update_id=?", (update_id,)))

    async def map_message(self, chat_id: str, tg_message_id: int, mesh_id: str, *,
                          part: int = 0, outgoing: bool) -> None:
        now = time.time()
        await self.store.transact(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO telegram_messages (chat_id, tg_message_id, mesh_id, part, "
            "outgoing, created_at) VALUES (?,?,?,?,?,?)",
            (chat_id, tg_message_id, mesh_id, part, int(outgoing), now)))

    async def mesh_id(self, chat_id: str, tg_message_id: int) -> str | None:
        row = await self.store.transact(lambda conn: conn.execute(
            "SELECT mesh_id FROM telegram_messages WHERE chat_id=? AND tg_message_id=?",
            (chat_id, tg_message_id)).fetchone())
        return row[0] if row else None

    async def sent_parts(self, mesh_id: str, chat_id: str) -> dict[int, int]:
        """Parts of ``mesh_id`` already posted to ``chat_id``: part -> platform message id."""
        rows = await self.store.transact(lambda conn: conn.execute(
            "SELECT part, tg_message_id FROM telegram_messages WHERE mesh_id=? AND chat_id=? "
            "AND outgoing=1", (mesh_id, chat_id)).fetchall())
        return {part: tg_id for part, tg_id in rows}

    async def posts_of(self, mesh_id: str) -> dict[str, dict[int, int]]:
        """Every chat ``mesh_id`` was posted to: chat -> (part -> platform message id)."""
        rows = await self.store.transact(lambda conn: conn.execute(
            "SELECT chat_id, part, tg_message_id FROM telegram_messages WHERE mesh_id=? "
            "AND outgoing=1", (mesh_id,)).fetchall())
        posts: dict[str, dict[int, int]] = {}
        for chat_id, part, tg_id in rows:
            posts.setdefault(chat_id, {})[part] = tg_id
        return posts
