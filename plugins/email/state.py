"""The gateway's own tables (migration set ``meshhub.email``):

- ``email_tokens``: reply addresses (``reply+<token>@domain``): each token stands for one thread
  and the one person it was mailed to, for clients that drop ``In-Reply-To``;
- ``email_confirmations``: pairings waiting for the person to answer the confirmation mail (the
  code was right; the answer proves the mailbox is theirs);
- ``email_digest``: messages waiting for a person's next digest mail.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

if TYPE_CHECKING:
    from meshhub.store import Store

migrations = Migrations("meshhub.email")
TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # case-insensitive, as local parts may be
TOKEN_LENGTH = 26  # 130 bits
CONFIRM_TTL = 3600.0


@migrations()
def m001_create_email_state(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE email_tokens (
            token TEXT PRIMARY KEY,
            peer TEXT NOT NULL,
            root TEXT NOT NULL,
            created_at REAL NOT NULL
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE UNIQUE INDEX email_tokens_thread ON email_tokens (peer, root)")
    db.execute(
        """
        CREATE TABLE email_confirmations (
            token TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            name TEXT NOT NULL,
            expires_at REAL NOT NULL
        ) WITHOUT ROWID
        """
    )
    db.execute(
        """
        CREATE TABLE email_digest (
            peer TEXT NOT NULL,
            mesh_id TEXT NOT NULL,
            queued_at REAL NOT NULL,
            PRIMARY KEY (peer, mesh_id)
        ) WITHOUT ROWID
        """
    )


@migrations()
def m002_create_email_secret(db: Database) -> None:
    """A secret of this hub's gateway: it signs the Message-ID of each mail out, so a delivery
    report is believed only about a mail the gateway really sent to that person."""
    db.execute("CREATE TABLE email_secret (id INTEGER PRIMARY KEY CHECK (id = 1), "
               "secret TEXT NOT NULL)")
    db.execute("INSERT INTO email_secret (id, secret) VALUES (1, ?)", (secrets.token_hex(32),))


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


class EmailState:
    """The gateway's tables, through the store's writer (one transaction per call)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def secret(self) -> bytes:
        row = await self.store.transact(lambda conn: conn.execute(
            "SELECT secret FROM email_secret WHERE id=1").fetchone())
        return bytes.fromhex(row[0])

    # -- reply addresses -------------------------------------------------------------------------
    async def token_for(self, peer: str, root: str) -> str:
        """The reply token of thread ``root`` for ``peer`` (made on first use)."""
        now = time.time()
        token = new_token()

        def run(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT OR IGNORE INTO email_tokens (token, peer, root, created_at) "
                         "VALUES (?,?,?,?)", (token, peer, root, now))
            row = conn.execute("SELECT token FROM email_tokens WHERE peer=? AND root=?",
                               (peer, root)).fetchone()
            return str(row[0])

        result: str = await self.store.transact(run)
        return result

    async def thread_of(self, token: str) -> tuple[str, str] | None:
        """(peer, thread root) of a reply token."""
        row = await self.store.transact(lambda conn: conn.execute(
            "SELECT peer, root FROM email_tokens WHERE token=?", (token.lower(),)).fetchone())
        return (row[0], row[1]) if row else None

    # -- pairing confirmations -------------------------------------------------------------------
    async def confirmation(self, address: str, name: str) -> str:
        """A new confirmation token for ``address`` (valid an hour)."""
        token = new_token()
        now = time.time()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM email_confirmations WHERE expires_at < ?", (now,))
            conn.execute("INSERT INTO email_confirmations (token, address, name, expires_at) "
                         "VALUES (?,?,?,?)", (token, address, name, now + CONFIRM_TTL))

        await self.store.transact(run)
        return token

    async def pending_confirmation(self, token: str) -> tuple[str, str] | None:
        """(address, name) a live confirmation token is for."""
        row = await self.store.transact(lambda conn: conn.execute(
            "SELECT address, name FROM email_confirmations WHERE token=? AND expires_at > ?",
            (token.lower(), time.time())).fetchone())
        return (row[0], row[1]) if row else None

    async def confirmed(self, token: str) -> None:
        await self.store.transact(lambda conn: conn.execute(
            "DELETE FROM email_confirmations WHERE token=?", (token.lower(),)))

    # -- digests ---------------------------------------------------------------------------------
    async def queue_digest(self, peer: str, mesh_id: str) -> None:
        now = time.time()
        await self.store.transact(lambda conn: conn.execute(
            "INSERT OR IGNORE INTO email_digest (peer, mesh_id, queued_at) VALUES (?,?,?)",
            (peer, mesh_id, now)))

    async def digests_due(self, before: float) -> dict[str, list[str]]:
        """Per person, the messages waiting for a digest, for those whose oldest waiting
        message was queued before ``before``; oldest first."""

        def run(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT peer, mesh_id FROM email_digest WHERE peer IN (SELECT peer FROM "
                "email_digest GROUP BY peer HAVING MIN(queued_at) < ?) "
                "ORDER BY peer, queued_at, mesh_id", (before,)).fetchall()

        due: dict[str, list[str]] = {}
        for peer, mesh_id in await self.store.transact(run):
            due.setdefault(peer, []).append(mesh_id)
        return due

    async def digest_sent(self, peer: str, mesh_ids: list[str]) -> None:
        await self.store.transact(lambda conn: conn.executemany(
            "DELETE FROM email_digest WHERE peer=? AND mesh_id=?",
            [(peer, mesh_id) for mesh_id in mesh_ids]))
