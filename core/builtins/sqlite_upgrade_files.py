"""The files table of before the record API, and its move into the ``files`` collection
(SQLite engine only)."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub.builtins.sqlite_records import write_record

from .files_actions import FILES, file_key

migrations = Migrations("meshhub.files")


@migrations()
def m001_create_files(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE files (
            file TEXT NOT NULL,
            peer TEXT NOT NULL,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            mime TEXT NOT NULL,
            uploaded INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            PRIMARY KEY (file, peer)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX files_peer ON files (peer, created_at)")


@migrations()
def m002_move_to_records(db: Database) -> None:
    """Every grant becomes a document of the ``files`` collection, then the table goes."""
    rows = db.conn.execute(
        "SELECT file, peer, name, size, mime, uploaded, created_at FROM files").fetchall()
    for file, peer, name, size, mime, uploaded, created_at in rows:
        write_record(db.conn, FILES, file_key(file, peer),
                     {"file": file, "peer": peer, "name": name, "size": size, "mime": mime,
                      "uploaded": bool(uploaded)}, created_at=created_at)
    db.execute("DROP TABLE files")
