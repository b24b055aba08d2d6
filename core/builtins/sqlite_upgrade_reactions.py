"""The reactions table of before the record API, and its move into the ``reactions``
collection (SQLite engine only)."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub.builtins.sqlite_records import write_record

from .reactions import REACTIONS, reaction_key

reaction_migrations = Migrations("meshhub.reactions")


@reaction_migrations()
def m001_create_reactions(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE reactions (
            message_id TEXT NOT NULL,
            peer TEXT NOT NULL,
            emoji TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (message_id, peer, emoji)
        ) WITHOUT ROWID
        """
    )


@reaction_migrations()
def m002_move_to_records(db: Database) -> None:
    """Every reaction becomes a document of the ``reactions`` collection, then the table
    goes."""
    rows = db.conn.execute(
        "SELECT message_id, peer, emoji, created_at FROM reactions").fetchall()
    for message_id, peer, emoji, created_at in rows:
        write_record(db.conn, REACTIONS, reaction_key(message_id, peer, emoji),
                     {"message_id": message_id, "peer": peer, "emoji": emoji},
                     created_at=created_at)
    db.execute("DROP TABLE reactions")
