"""The SQLite upgrade path of the gateway's data (migration set ``meshhub.email``).

Before the record API the gateway kept its own tables (``m001``, ``m002``, never edited);
``m003`` moves their rows into the collections of :mod:`.state` and drops them. On a new hub
the tables are made empty, the secret made by ``m002`` moves, and the tables go.
"""

from __future__ import annotations

import secrets

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub.builtins.sqlite_records import write_record

from .state import (
    CONFIRMATIONS,
    DIGEST,
    SECRET,
    SECRET_KEY,
    THREADS,
    TOKENS,
    digest_key,
    thread_key,
)

migrations = Migrations("meshhub.email")


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


@migrations()
def m003_move_to_records(db: Database) -> None:
    """Every row of the old tables into the collections, then the tables go. The secret keeps
    its bytes: mails sent before the upgrade still verify."""
    conn = db.conn
    for token, peer, root, created in conn.execute(
            "SELECT token, peer, root, created_at FROM email_tokens").fetchall():
        write_record(conn, TOKENS, token, {"peer": peer, "root": root}, created_at=created)
        write_record(conn, THREADS, thread_key(peer, root), {"token": token},
                     created_at=created)
    for token, address, name, expires in conn.execute(
            "SELECT token, address, name, expires_at FROM email_confirmations").fetchall():
        write_record(conn, CONFIRMATIONS, token, {"address": address, "name": name},
                     expires_at=expires)
    for peer, mesh_id, queued in conn.execute(
            "SELECT peer, mesh_id, queued_at FROM email_digest").fetchall():
        write_record(conn, DIGEST, digest_key(peer, mesh_id),
                     {"peer": peer, "mesh_id": mesh_id, "queued_at": queued},
                     created_at=queued)
    for (secret,) in conn.execute("SELECT secret FROM email_secret").fetchall():
        write_record(conn, SECRET, SECRET_KEY, {"secret": secret})
    for name in ("email_tokens", "email_confirmations", "email_digest", "email_secret"):
        conn.execute(f"DROP TABLE {name}")
