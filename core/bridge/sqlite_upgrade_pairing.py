"""The pairing plugin's SQLite upgrade path (migration set ``meshhub.bridge``): the tables it
kept before the record API, and the move of their rows into its collections
(:mod:`meshhub.bridge.pairing`). Applied migrations are never edited."""

from __future__ import annotations

import time

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub.builtins.sqlite_records import write_record

from .pairing import CODE_KEPT, CODES, LINKS, PAIRINGS, TARGETS

migrations = Migrations("meshhub.bridge")


@migrations()
def m001_create_pairing(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE bridge_codes (
            code_hash TEXT PRIMARY KEY,
            connector TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            attempts_left INTEGER NOT NULL,
            used_by TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE bridge_pairings (
            identity TEXT PRIMARY KEY,
            connector TEXT NOT NULL,
            peer TEXT NOT NULL,
            paired_at REAL NOT NULL,
            revoked_at REAL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE bridge_targets (
            peer TEXT PRIMARY KEY,
            target TEXT NOT NULL,
            updated_at REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE bridge_links (
            identity TEXT PRIMARY KEY,
            connector TEXT NOT NULL,
            peer TEXT NOT NULL,
            conversation TEXT NOT NULL,
            linked_by TEXT NOT NULL,
            linked_at REAL NOT NULL
        )
        """
    )


@migrations()
def m002_linked_codes(db: Database) -> None:
    """Codes made by a member link the account to that member (``member_key``)."""
    db.execute("ALTER TABLE bridge_codes ADD COLUMN member_key TEXT")
    db.execute("ALTER TABLE bridge_pairings ADD COLUMN member_key TEXT")


@migrations()
def m003_move_to_records(db: Database) -> None:
    """Every code, pairing, target and link into its collection, then the tables go. Codes
    expire a day after they stopped working, as the old table dropped them; those past that
    are left behind."""
    conn = db.conn
    codes = conn.execute(
        "SELECT code_hash, connector, created_by, created_at, expires_at, attempts_left, "
        "used_by, member_key FROM bridge_codes WHERE expires_at + ? > ?",
        (CODE_KEPT, time.time())).fetchall()
    for code_hash, connector, by, created, expires, attempts, used_by, member_key in codes:
        write_record(conn, CODES, code_hash, {
            "connector": connector, "created_by": by, "created_at": created,
            "expires_at": expires, "attempts_left": attempts, "used_by": used_by,
            "member_key": member_key}, created_at=created, expires_at=expires + CODE_KEPT)
    pairings = conn.execute("SELECT identity, connector, peer, paired_at, revoked_at, "
                            "member_key FROM bridge_pairings").fetchall()
    for identity, connector, peer, paired_at, revoked_at, member_key in pairings:
        write_record(conn, PAIRINGS, identity, {
            "connector": connector, "peer": peer, "paired_at": paired_at,
            "revoked_at": revoked_at, "member_key": member_key}, created_at=paired_at)
    for peer, target, updated_at in conn.execute(
            "SELECT peer, target, updated_at FROM bridge_targets").fetchall():
        write_record(conn, TARGETS, peer, {"target": target}, created_at=updated_at)
    links = conn.execute("SELECT identity, connector, peer, conversation, linked_by, linked_at "
                         "FROM bridge_links").fetchall()
    for identity, connector, peer, conversation, linked_by, linked_at in links:
        write_record(conn, LINKS, identity, {
            "connector": connector, "peer": peer, "conversation": conversation,
            "linked_by": linked_by, "linked_at": linked_at}, created_at=linked_at)
    for table in ("bridge_codes", "bridge_pairings", "bridge_targets", "bridge_links"):
        conn.execute(f"DROP TABLE {table}")
