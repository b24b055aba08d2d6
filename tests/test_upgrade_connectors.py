"""A hub from before the record API keeps the email gateway's and the Slack connector's data:
the old tables, with rows written the way the old code wrote them, move into the collections at
the first start, and the connectors' state objects read every row back."""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from meshhub.builtins.migrations import core_migrations
from meshhub_email import sqlite_upgrade as email_upgrade
from meshhub_email.state import EmailState
from meshhub_slack import sqlite_upgrade as slack_upgrade
from meshhub_slack.state import SlackState

ANN = "a" * 64
BOB = "b" * 64
NOW = time.time()


def _old_database(home: Path, *steps: tuple[str, Callable[[Database], None]]) -> Database:
    """``<home>/meshhub.db`` with the core schema and the given old migrations, each recorded
    as applied the way sqlite-utils records it."""
    home.mkdir(parents=True, exist_ok=True)
    db = Database(sqlite3.connect(str(home / "meshhub.db"), isolation_level=None))
    core_migrations.apply(db)
    for migration_set, step in steps:
        with db.atomic():
            step(db)
            db["_sqlite_migrations"].insert({  # type: ignore[union-attr]
                "migration_set": migration_set, "name": step.__name__,
                "applied_at": str(datetime.datetime.now(datetime.UTC))})
    return db


def _old_email_rows(db: Database) -> bytes:
    """Rows in every table of ``meshhub.email`` as the old code wrote them; the secret."""
    rows: list[tuple[str, tuple[Any, ...]]] = [
        ("INSERT OR IGNORE INTO email_tokens (token, peer, root, created_at) VALUES (?,?,?,?)",
         ("tokenannthreadoneaaaaaaaaa", ANN, "m-root-1", NOW - 500)),
        ("INSERT OR IGNORE INTO email_tokens (token, peer, root, created_at) VALUES (?,?,?,?)",
         ("tokenbobthreadoneaaaaaaaaa", BOB, "m-root-1", NOW - 400)),
        ("INSERT INTO email_confirmations (token, address, name, expires_at) VALUES (?,?,?,?)",
         ("confirmpendingaaaaaaaaaaaa", "ann@example.com", "ann", NOW + 1800)),
        ("INSERT INTO email_confirmations (token, address, name, expires_at) VALUES (?,?,?,?)",
         ("confirmexpiredaaaaaaaaaaaa", "old@example.com", "old", NOW - 10)),
        ("INSERT OR IGNORE INTO email_digest (peer, mesh_id, queued_at) VALUES (?,?,?)",
         (ANN, "m-2", NOW - 900)),
        ("INSERT OR IGNORE INTO email_digest (peer, mesh_id, queued_at) VALUES (?,?,?)",
         (ANN, "m-1", NOW - 900)),
        ("INSERT OR IGNORE INTO email_digest (peer, mesh_id, queued_at) VALUES (?,?,?)",
         (ANN, "m-3", NOW - 30)),
        ("INSERT OR IGNORE INTO email_digest (peer, mesh_id, queued_at) VALUES (?,?,?)",
         (BOB, "m-4", NOW - 30)),
    ]
    with db.conn:
        for sql, args in rows:
            db.conn.execute(sql, args)
    return bytes.fromhex(db.conn.execute("SELECT secret FROM email_secret WHERE id=1")
                         .fetchone()[0])


KEPT = {"type": "event_callback", "team_id": "T1", "event_id": "EvKEPT",
        "event": {"type": "message", "channel": "C1", "text": "acked, not handled"}}


def _old_slack_rows(db: Database) -> None:
    """Rows in every table of ``meshhub.slack`` as the old code wrote them."""
    rows: list[tuple[str, tuple[Any, ...]]] = [
        ("INSERT INTO slack_events (event_id, body, received_at, attempts) VALUES (?,?,?,?)",
         ("EvKEPT", json.dumps(KEPT, separators=(",", ":")), NOW - 300, 1)),
        ("INSERT INTO slack_events (event_id, body, received_at, attempts) VALUES (?,?,?,?)",
         ("EvGAVEUP", json.dumps(KEPT, separators=(",", ":")), NOW - 250, 5)),
        ("INSERT INTO slack_events (event_id, body, received_at, handled_at) VALUES (?,'',?,?)",
         ("EvDONE", NOW - 200, NOW - 190)),
        ("INSERT INTO slack_events (event_id, body, received_at, handled_at) VALUES (?,'',?,?)",
         ("EvSTALE", NOW - 90000, NOW - 88000)),
        ("INSERT OR REPLACE INTO slack_messages (channel, ts, mesh_id, part, outgoing, "
         "created_at) VALUES (?,?,?,?,?,?)", ("C1", "100.1", "m-out", 0, 1, NOW - 60)),
        ("INSERT OR REPLACE INTO slack_messages (channel, ts, mesh_id, part, outgoing, "
         "created_at) VALUES (?,?,?,?,?,?)", ("C1", "100.2", "m-out", 1, 1, NOW - 59)),
        ("INSERT OR REPLACE INTO slack_messages (channel, ts, mesh_id, part, outgoing, "
         "created_at) VALUES (?,?,?,?,?,?)", ("C2", "200.1", "m-out", 0, 1, NOW - 58)),
        ("INSERT OR REPLACE INTO slack_messages (channel, ts, mesh_id, part, outgoing, "
         "created_at) VALUES (?,?,?,?,?,?)", ("C1", "300.1", "m-in", 0, 0, NOW - 50)),
        ("INSERT OR IGNORE INTO slack_attempts (mesh_id, channel, part, started_at) "
         "VALUES (?,?,?,?)", ("m-out", "C1", 2, NOW - 40)),
    ]
    with db.conn:
        for sql, args in rows:
            db.conn.execute(sql, args)


def _tables(home: Path) -> set[str]:
    conn = sqlite3.connect(str(home / "meshhub.db"))
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


async def test_email_and_slack_tables_move_into_records(inproc, tmp_path):
    home = tmp_path / "hub"
    db = _old_database(home, ("meshhub.email", email_upgrade.m001_create_email_state),
                       ("meshhub.email", email_upgrade.m002_create_email_secret),
                       ("meshhub.slack", slack_upgrade.m001_create_slack_state))
    secret = _old_email_rows(db)
    _old_slack_rows(db)
    db.conn.close()
    served = await inproc()
    await _email_survived(EmailState(served.hub.records), secret)
    await _slack_survived(SlackState(served.hub.records))
    tables = _tables(home)
    assert not tables & {"email_tokens", "email_confirmations", "email_digest", "email_secret",
                         "slack_events", "slack_messages", "slack_attempts"}


async def _email_survived(state: EmailState, secret: bytes) -> None:
    assert await state.secret() == secret  # mails signed before the upgrade still verify
    assert await state.thread_of("TOKENANNTHREADONEAAAAAAAAA") == (ANN, "m-root-1")
    assert await state.thread_of("tokenbobthreadoneaaaaaaaaa") == (BOB, "m-root-1")
    assert await state.token_for(ANN, "m-root-1") == "tokenannthreadoneaaaaaaaaa"
    assert await state.token_for(BOB, "m-root-1") == "tokenbobthreadoneaaaaaaaaa"
    assert await state.pending_confirmation("confirmpendingaaaaaaaaaaaa") == (
        "ann@example.com", "ann")
    assert await state.pending_confirmation("confirmexpiredaaaaaaaaaaaa") is None
    assert await state.digests_due(NOW - 60) == {ANN: ["m-1", "m-2", "m-3"]}
    assert await state.digests_due(NOW) == {ANN: ["m-1", "m-2", "m-3"], BOB: ["m-4"]}
    assert await state.records.count("email_digest") == 4


async def _slack_survived(state: SlackState) -> None:
    assert await state.pending_events(5) == [KEPT]
    assert await state.pending_events(6) == [KEPT, KEPT]
    assert await state.known_events(10) == ["EvDONE", "EvGAVEUP", "EvKEPT"]
    await state.keep_event("EvDONE", KEPT)  # a handled event stays handled
    assert await state.pending_events(5) == [KEPT]
    assert await state.mesh_id("C1", "100.2") == "m-out"
    assert await state.mesh_id("C1", "300.1") == "m-in"
    assert await state.ts_of("m-out", "C1") == "100.1"
    assert sorted(await state.posts_of("m-out")) == [("C1", "100.1"), ("C2", "200.1")]
    assert await state.every_part("m-out") == {"C1": {0: "100.1", 1: "100.2"},
                                                "C2": {0: "200.1"}}
    assert await state.every_part("m-in") == {}
    assert await state.parts("m-out", "C1") == ({0: "100.1", 1: "100.2"},
                                                {2: NOW - 40})
