"""Schema of the core namespace ``meshhub``. Never edit an applied migration: add one."""

from __future__ import annotations

import json

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub.directory import INVITES, MEMBERS

from .sqlite_records import write_record

core_migrations = Migrations("meshhub")


@core_migrations()
def m001_create_peers(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE peers (
            key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            name_lower TEXT NOT NULL UNIQUE,
            identity TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            connector TEXT NOT NULL,
            role TEXT NOT NULL DEFAULT '',
            groups_json TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'offline',
            summary TEXT NOT NULL DEFAULT '',
            public_key TEXT,
            member_key TEXT,
            created_at REAL NOT NULL,
            last_seen REAL NOT NULL
        )
        """
    )


@core_migrations()
def m002_create_conversations(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE conversations (
            name TEXT PRIMARY KEY,
            topic TEXT NOT NULL DEFAULT '',
            archived INTEGER NOT NULL DEFAULT 0,
            created_by TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE conversation_members (
            conversation TEXT NOT NULL,
            peer TEXT NOT NULL,
            PRIMARY KEY (conversation, peer)
        ) WITHOUT ROWID
        """
    )


@core_migrations()
def m003_create_messages(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            sender TEXT NOT NULL,
            target TEXT NOT NULL,
            conversation TEXT NOT NULL,
            body TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'text',
            recipients_json TEXT NOT NULL,
            mentions_json TEXT NOT NULL DEFAULT '[]',
            whisper_json TEXT NOT NULL DEFAULT '[]',
            reply_to TEXT,
            priority TEXT NOT NULL DEFAULT 'next',
            attachments_json TEXT NOT NULL DEFAULT '[]',
            data_json TEXT,
            client_id TEXT,
            created_at REAL NOT NULL
        ) WITHOUT ROWID
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX messages_client_id ON messages (sender, client_id) "
        "WHERE client_id IS NOT NULL"
    )
    db.execute("CREATE INDEX messages_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL")
    db.execute("CREATE INDEX messages_created_at ON messages (created_at)")


@core_migrations()
def m004_create_deliveries(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE deliveries (
            message_id TEXT NOT NULL,
            recipient TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued',
            mentioned INTEGER NOT NULL DEFAULT 0,
            lease_until REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (message_id, recipient)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX deliveries_recipient ON deliveries (recipient, state, message_id)")
    db.execute(
        "CREATE INDEX deliveries_leases ON deliveries (lease_until) WHERE state = 'pushed'"
    )


@core_migrations()
def m005_create_tokens(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE tokens (
            token_hash TEXT PRIMARY KEY,
            peer TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0
        )
        """
    )


@core_migrations()
def m006_create_members_and_invites(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE members (
            key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            via TEXT NOT NULL,
            role TEXT NOT NULL DEFAULT '',
            groups_json TEXT NOT NULL DEFAULT '{}',
            invite TEXT,
            created_at REAL NOT NULL,
            removed_at REAL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE invites (
            id TEXT PRIMARY KEY,
            code_hash TEXT NOT NULL UNIQUE,
            created_by TEXT NOT NULL,
            uses INTEGER NOT NULL,
            used INTEGER NOT NULL DEFAULT 0,
            role TEXT NOT NULL DEFAULT '',
            groups_json TEXT NOT NULL DEFAULT '{}',
            expires_at REAL,
            revoked_at REAL,
            created_at REAL NOT NULL
        )
        """
    )
    # keys that already had key-holding peers before admission existed stay members (the owner
    # sees them in `hub members list` and can remove them)
    db.execute(
        """
        INSERT INTO members (key, name, via, created_at)
        SELECT member_key, MIN(name), 'existing', MIN(created_at) FROM peers
        WHERE member_key IS NOT NULL GROUP BY member_key
        """
    )


@core_migrations()
def m007_token_capabilities(db: Database) -> None:
    db.execute("ALTER TABLE tokens ADD COLUMN token_id TEXT")
    # tokens made before capabilities could do everything their peer could
    db.execute("ALTER TABLE tokens ADD COLUMN cap TEXT NOT NULL DEFAULT 'admin'")
    db.execute("ALTER TABLE tokens ADD COLUMN expires_at REAL")
    db.execute("CREATE INDEX tokens_peer ON tokens (peer, revoked)")


@core_migrations()
def m008_open_deliveries(db: Database) -> None:
    """The TTL sweep's index: the deliveries still open are few, the stored messages many, so
    the sweep reads these instead of every message older than the TTL."""
    db.execute(
        "CREATE INDEX deliveries_open ON deliveries (message_id) "
        "WHERE state IN ('queued','pushed')"
    )


@core_migrations()
def m009_messages_by_conversation(db: Database) -> None:
    """History pages of one conversation (the web page, ``history``) read this index newest
    first instead of every message."""
    db.execute("CREATE INDEX messages_conversation ON messages (conversation, id)")


@core_migrations()
def m010_history_by_sender(db: Database) -> None:
    """History pages of everything a peer sent or received (and of its direct messages) read
    what it sent newest first from this index. (What it received comes from
    ``deliveries_recipient``, one range per state: an index of deliveries by recipient and
    message would cost every send about 12 % of its throughput.)"""
    db.execute("CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender, id)")


@core_migrations()
def m011_member_prefs(db: Database) -> None:
    """A member's choices about how it is reached (:attr:`meshhub.models.Member.prefs`)."""
    db.execute("ALTER TABLE members ADD COLUMN prefs_json TEXT NOT NULL DEFAULT '{}'")


@core_migrations()
def m012_members_and_invites_to_records(db: Database) -> None:
    """Members and invites move into the record collections ``members`` and ``invites``
    (:mod:`meshhub.directory`), which every engine serves; the tables go."""
    conn = db.conn
    members = conn.execute(
        "SELECT key, name, via, role, groups_json, invite, created_at, removed_at, prefs_json "
        "FROM members").fetchall()
    for key, name, via, role, groups, invite, created_at, removed_at, prefs in members:
        write_record(conn, MEMBERS, key, {
            "key": key, "name": name, "via": via, "role": role, "groups": json.loads(groups),
            "invite": invite, "created_at": created_at, "removed_at": removed_at,
            "prefs": json.loads(prefs)}, created_at=created_at)
    invites = conn.execute(
        "SELECT id, code_hash, created_by, uses, used, role, groups_json, expires_at, "
        "revoked_at, created_at FROM invites").fetchall()
    for (ident, code_hash, created_by, uses, used, role, groups, expires_at, revoked_at,
         created_at) in invites:
        write_record(conn, INVITES, ident, {
            "id": ident, "code_hash": code_hash, "created_by": created_by, "uses": uses,
            "used": used, "role": role, "groups": json.loads(groups), "expires_at": expires_at,
            "revoked_at": revoked_at, "created_at": created_at}, created_at=created_at)
    db.execute("DROP TABLE members")
    db.execute("DROP TABLE invites")


@core_migrations()
def m013_message_search(db: Database) -> None:
    """The full-text index of message bodies (:mod:`meshhub.builtins.sqlite_search`). Empty
    here: a hub with many messages would wait for it at start; the background indexer fills
    it from ``high_water`` on, a batch at a time."""
    db.execute("CREATE TABLE message_search_rows (row INTEGER PRIMARY KEY, "
               "id TEXT NOT NULL UNIQUE)")
    # what the index reads: each indexed message's body (without the two snippet marks), and
    # who may see it (sender and recipients: keys, so a search reads only the viewer's part),
    # beside one token each for its sender, conversation and kind (f, c, k and the value in
    # hex), so those filters narrow the matches inside the index too
    db.execute("CREATE VIEW message_search_text AS SELECT r.row AS row, "
               "replace(replace(m.body, char(2), ' '), char(3), ' ') AS body, "
               "m.sender || ' ' || COALESCE((SELECT group_concat(j.value, ' ') "
               "FROM json_each(m.recipients_json) j), '') || ' f' || hex(m.sender) || "
               "' c' || hex(m.conversation) || ' k' || hex(m.kind) AS who "
               "FROM message_search_rows r JOIN messages m ON m.id = r.id")
    db.execute("CREATE VIRTUAL TABLE message_search USING fts5(body, who, "
               "content='message_search_text', content_rowid='row', "
               "tokenize='porter unicode61 remove_diacritics 2')")
    db.execute("CREATE TABLE message_search_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
               "high_water TEXT NOT NULL)")
    db.execute("INSERT INTO message_search_state (id, high_water) VALUES (1, '')")


@core_migrations()
def m014_whispers_by_conversation(db: Database) -> None:
    """The whispers of a conversation, found without reading its other messages: a
    conversation's message count leaves out those not meant for the reader. Partial, so a
    plain send writes no entry."""
    db.execute("CREATE INDEX messages_whispers ON messages (conversation, id) "
               "WHERE whisper_json != '[]'")
