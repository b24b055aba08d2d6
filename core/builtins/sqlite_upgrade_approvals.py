"""The approvals table of before the record API, and its move into the ``approvals``
collection (SQLite engine only)."""

from __future__ import annotations

import json

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub.builtins.sqlite_records import write_record

from .approval_book import APPROVALS, PARTIES, party_docs

migrations = Migrations("meshhub.approvals")


@migrations()
def m001_create_approvals(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            message_id TEXT,
            asker TEXT NOT NULL,
            approver TEXT NOT NULL,
            question TEXT NOT NULL,
            options_json TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            answer TEXT,
            reason TEXT,
            answer_message_id TEXT,
            created_at REAL NOT NULL,
            answered_at REAL
        )
        """
    )
    db.execute("CREATE INDEX approvals_approver ON approvals (approver, state)")
    db.execute("CREATE INDEX approvals_asker ON approvals (asker, state)")


@migrations()
def m002_approvers_and_settlements(db: Database) -> None:
    """Several approvers (members or peers), kinds (tool permissions, questions), a short
    reference people can type, who settled it where, expiry and quiet-hour holds."""
    for column in ("kind TEXT NOT NULL DEFAULT 'approval'", "ref TEXT",
                   "approvers_json TEXT NOT NULL DEFAULT '{}'", "answered_by TEXT",
                   "answered_on TEXT", "tool TEXT", "input_preview TEXT", "expires_at REAL",
                   "held_until REAL", "recipients_json TEXT NOT NULL DEFAULT '[]'"):
        db.execute(f"ALTER TABLE approvals ADD COLUMN {column}")
    db.execute("CREATE INDEX approvals_ref ON approvals (ref, state)")
    db.execute("CREATE INDEX approvals_open ON approvals (state, expires_at)")


@migrations()
def m003_move_to_records(db: Database) -> None:
    """Every approval becomes a document of the ``approvals`` collection (its JSON columns as
    lists and dicts), with the ``approval_parties`` documents of who it names; then the table
    goes."""
    columns = ("id", "message_id", "asker", "approver", "question", "options_json", "state",
               "answer", "reason", "answer_message_id", "created_at", "answered_at", "kind",
               "ref", "approvers_json", "answered_by", "answered_on", "tool", "input_preview",
               "expires_at", "held_until", "recipients_json")
    rows = db.conn.execute(f"SELECT {', '.join(columns)} FROM approvals").fetchall()
    for row in rows:
        r = dict(zip(columns, row, strict=True))
        for name in ("options", "approvers", "recipients"):
            r[name] = json.loads(r.pop(f"{name}_json") or "null")
        r["approvers"] = r["approvers"] or {}
        r["recipients"] = r["recipients"] or []
        write_record(db.conn, APPROVALS, r["id"], r, created_at=r["created_at"])
        for key, named in party_docs(r).items():
            write_record(db.conn, PARTIES, key, named, created_at=r["created_at"])
    db.execute("DROP TABLE approvals")
