"""A hub from before the record API keeps its pairings and its Telegram state: the old tables
of ``meshhub.bridge`` and ``meshhub.telegram`` are built and filled as the old code filled them,
then a hub starts on that home and everything is read back through the features themselves."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import tomli_w
from sqlite_utils.migrations import Migrations

from meshhub.bridge.pairing import Link, PairingBook
from meshhub.bridge.sqlite_upgrade_pairing import m001_create_pairing, m002_linked_codes
from meshhub.builtins.sqlite_store import SQLiteStore
from meshhub.config import init_home
from meshhub.directory import INVITES, MEMBERS, Directory
from meshhub.models import Conversation, Member
from meshhub.records import Records
from meshhub_telegram.sqlite_upgrade import m001_create_telegram_state
from meshhub_telegram.state import TelegramState

from .fakes.telegram_api import FakeTelegram, TgUser
from .helpers import Identity, make_identity

LIVE_CODE = "K7MX4QPA"
USED_CODE = "H2PW9RTA"
LINKED = "telegram:5002"  # Ann's phone, linked to the member ann
REVOKED = "telegram:5003"  # Bob, a person of his own, revoked
GROUP = "telegram:chat:-100123"
INTRUDER = TgUser(5009, "Eve")  # sent the live code before the stored offset
NEWCOMER = TgUser(5004, "Dave")
LATE = TgUser(5005, "Carol")
DAY = 86400.0


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _old_set(name: str, *steps: Any) -> Migrations:
    """A migration set holding only the steps the old code had (recorded as sqlite_utils does
    when the store applies it)."""
    old = Migrations(name)
    for step in steps:
        old()(step)
    return old


def _with_telegram(home: Path, tg: FakeTelegram) -> None:
    path = home / "config.toml"
    raw = tomllib.loads(path.read_text())
    raw["telegram"] = tg.settings()
    path.write_text(tomli_w.dumps(raw))


async def _old_hub(home: Path, ann_key: str, now: float) -> dict[str, str]:
    """The old schema in a fresh database, filled; the peers' keys by identity."""
    store = SQLiteStore(home / "meshhub.db")
    await store.open([_old_set("meshhub.bridge", m001_create_pairing, m002_linked_codes),
                      _old_set("meshhub.telegram", m001_create_telegram_state)],
                     [MEMBERS, INVITES])
    records = Records(SimpleNamespace(store=store))  # type: ignore[arg-type]
    for collection in (MEMBERS, INVITES):
        records.declare(collection)
    directory = Directory(store, records)
    await directory.load()
    await directory.enroll(Member(key=ann_key, name="ann", via="invite", created_at=now - 900))
    phone, _ = await directory.register(identity=LINKED, name="ann-telegram", kind="human",
                                        connector="telegram", member_key=ann_key)
    bob, _ = await directory.register(identity=REVOKED, name="Bob", kind="human",
                                      connector="telegram")
    chat, _ = await directory.register(identity=GROUP, name="Ops chat", kind="service",
                                       connector="telegram")
    ops = Conversation("ops", created_at=now - 800)
    await directory.save_conversation(ops)
    await directory.join(ops, chat.key)

    def fill(conn: sqlite3.Connection) -> None:  # the old code's own statements
        insert_code = ("INSERT INTO bridge_codes (code_hash, connector, created_by, created_at, "
                       "expires_at, attempts_left, member_key) VALUES (?,?,?,?,?,?,?)")
        conn.execute(insert_code, (_hash(LIVE_CODE), "telegram", "owner-key", now - 60,
                                   now + 540, 5, None))
        conn.execute(insert_code, (_hash(USED_CODE), "telegram", ann_key, now - 700,
                                   now - 100, 4, ann_key))
        conn.execute("UPDATE bridge_codes SET used_by=? WHERE code_hash=? AND connector=? "
                     "AND used_by IS NULL", (LINKED, _hash(USED_CODE), "telegram"))
        conn.execute("INSERT INTO bridge_codes (code_hash, connector, created_by, created_at, "
                     "expires_at, attempts_left, member_key) VALUES (?,?,?,?,?,?,?)",
                     (_hash("OLDOLDXX"), "telegram", "owner-key", now - 3 * DAY,
                      now - 2 * DAY, 5, None))  # past the day the old code kept it
        insert_pairing = (
            "INSERT INTO bridge_pairings (identity, connector, peer, paired_at, member_key) "
            "VALUES (?,?,?,?,?) ON CONFLICT(identity) DO UPDATE SET peer=excluded.peer, "
            "paired_at=excluded.paired_at, revoked_at=NULL, member_key=excluded.member_key")
        conn.execute(insert_pairing, (LINKED, "telegram", phone.key, now - 600, ann_key))
        conn.execute(insert_pairing, (REVOKED, "telegram", bob.key, now - 500, None))
        conn.execute("UPDATE bridge_pairings SET revoked_at=? WHERE identity=?",
                     (now - 400, REVOKED))
        conn.execute("INSERT INTO bridge_targets (peer, target, updated_at) VALUES (?,?,?) "
                     "ON CONFLICT(peer) DO UPDATE SET target=excluded.target, "
                     "updated_at=excluded.updated_at", (phone.key, "#ops", now - 300))
        conn.execute("INSERT INTO bridge_links (identity, connector, peer, conversation, "
                     "linked_by, linked_at) VALUES (?,?,?,?,?,?)",
                     (GROUP, "telegram", chat.key, "ops", "config", now - 200))
        conn.execute("INSERT INTO telegram_state (key, value) VALUES (?,?)",
                     ("update_offset", "4"))
        conn.execute("INSERT INTO telegram_state (key, value) VALUES (?,?)",
                     ("webhook_secret", "kept-secret"))
        for update_id, handled_at in ((77, now - 60), (78, now - 2 * DAY)):
            conn.execute("INSERT OR IGNORE INTO telegram_updates (update_id, handled_at) "
                         "VALUES (?,?)", (update_id, handled_at))
        for chat_id, tg_id, mesh_id, part, outgoing in (
                ("5002", 10, "msg-a", 0, 1), ("5002", 11, "msg-a", 1, 1),
                ("-100123", 12, "msg-a", 0, 1), ("5002", 13, "msg-b", 0, 0)):
            conn.execute("INSERT OR REPLACE INTO telegram_messages (chat_id, tg_message_id, "
                         "mesh_id, part, outgoing, created_at) VALUES (?,?,?,?,?,?)",
                         (chat_id, tg_id, mesh_id, part, outgoing, now - 100))

    await store.transact(fill)
    await store.close()
    return {LINKED: phone.key, REVOKED: bob.key, GROUP: chat.key}


async def test_pairings_and_telegram_state_survive_the_move_to_records(telegram, inproc,
                                                                      tmp_path):
    tg = telegram
    home = tmp_path / "hub"  # where inproc starts its hub
    init_home(home, "owner")
    _with_telegram(home, tg)
    ann_key = make_identity(tmp_path, "ann").key.verify_key.encode().hex()
    now = time.time()
    keys = await _old_hub(home, ann_key, now)
    for _ in range(3):  # updates 1 to 3, confirmed before the stored offset 4
        await tg.send_text(INTRUDER, f"/pair {LIVE_CODE}")

    served = await inproc()
    hub = served.hub
    connector = hub.connectors["telegram"].for_hub(hub)
    await asyncio.wait_for(connector.ready.wait(), 10)
    state = TelegramState(hub.records)
    assert await state.offset() == 4
    assert await state.get("webhook_secret") == "kept-secret"
    assert await state.posts_of("msg-a") == {"5002": {0: 10, 1: 11}, "-100123": {0: 12}}
    assert await state.sent_parts("msg-a", "5002") == {0: 10, 1: 11}
    assert await state.sent_parts("msg-b", "5002") == {}  # received, not posted
    assert await state.mesh_id("5002", 13) == "msg-b"
    assert not await state.claim_update(77)  # handled a minute ago: still known
    assert await state.claim_update(78)  # two days ago: forgotten, as the old sweep did
    handled = await hub.records.get("telegram_updates", "77")
    assert handled is not None and handled.expires_at == now - 60 + DAY

    book = PairingBook.of(hub)
    assert book.paired == {LINKED: keys[LINKED]} and book.revoked == {REVOKED}
    assert book.targets == {keys[LINKED]: "#ops"}
    assert book.links == {GROUP: Link(GROUP, keys[GROUP], "ops")}
    phone = book.peer_for(LINKED)
    assert phone is not None and phone.member_key == ann_key and book.target(phone) == "#ops"
    async with Identity(home, "owner").client(served.url, receive=False) as owner:
        listed = await owner.call("pairings")
    assert listed == [
        {"identity": LINKED, "connector": "telegram", "name": "ann-telegram",
         "key": keys[LINKED], "member": "ann", "paired_at": now - 600, "revoked": False},
        {"identity": REVOKED, "connector": "telegram", "name": "Bob", "key": keys[REVOKED],
         "member": None, "paired_at": now - 500, "revoked": True}]

    live = await hub.records.get("bridge_codes", _hash(LIVE_CODE))
    assert live is not None and live.expires_at == now + 540 + DAY
    assert live.value["attempts_left"] == 5 and live.value["used_by"] is None
    assert await hub.records.get("bridge_codes", _hash("OLDOLDXX")) is None
    used = await hub.records.get("bridge_codes", _hash(USED_CODE))  # what pair() reads
    assert used is not None and used.value["used_by"] == LINKED
    assert used.value["member_key"] == ann_key and used.value["attempts_left"] == 4
    assert not await book.is_live("telegram", USED_CODE)
    assert await book.is_live("telegram", LIVE_CODE)

    await tg.send_text(NEWCOMER, "/pair K7MX-4QPA")
    paired = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == NEWCOMER.id)
    assert "Paired" in paired["text"]
    await tg.send_text(LATE, "/pair K7MX-4QPA")
    refused = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == LATE.id)
    assert "wrong, used or expired" in refused["text"]
    assert all(m["chat_id"] != INTRUDER.id for m in tg.of("sendMessage"))
    assert book.peer_for(f"telegram:{NEWCOMER.id}") is not None
    assert book.peer_for(f"telegram:{LATE.id}") is None
    assert [c["offset"] for c in tg.calls if c["method"] == "getUpdates"][0] == 4

    with sqlite3.connect(home / "meshhub.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not tables & {"bridge_codes", "bridge_pairings", "bridge_targets", "bridge_links",
                         "telegram_state", "telegram_updates", "telegram_messages"}
