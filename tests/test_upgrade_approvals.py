"""A hub from before the record API keeps its approvals, file grants and reactions: the old
tables (built by their old migrations, filled as the old code wrote them) move into the
``approvals``, ``files`` and ``reactions`` collections when the new hub starts, and the
actions serve them as before, pending approvals' timers included."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub.builtins import approval_book
from meshhub.builtins.approval_book import ApprovalBook
from meshhub.builtins.migrations import core_migrations
from meshhub.builtins.sqlite_upgrade_approvals import (
    m001_create_approvals,
    m002_approvers_and_settlements,
)
from meshhub.builtins.sqlite_upgrade_files import m001_create_files
from meshhub.builtins.sqlite_upgrade_reactions import m001_create_reactions
from meshhub.config import init_home, load_config
from meshhub.files import FileStore
from meshhub.ids import new_id, peer_key_for

from .helpers import Identity, eventually

OLD = {"meshhub.approvals": (m001_create_approvals, m002_approvers_and_settlements),
       "meshhub.files": (m001_create_files,), "meshhub.reactions": (m001_create_reactions,)}
APPROVAL_COLUMNS = ("id", "message_id", "asker", "approver", "question", "options_json",
                    "state", "answer", "reason", "answer_message_id", "created_at",
                    "answered_at", "kind", "ref", "approvers_json", "answered_by",
                    "answered_on", "tool", "input_preview", "expires_at", "held_until",
                    "recipients_json")


def key_of(person: Identity) -> str:
    """The peer key the hub gives a CLI user on first sight."""
    return peer_key_for(f"cli:{person.key.verify_key.encode().hex()}")


def old_schema(db: Database) -> None:
    """The core schema and the old migrations of these three sets, recorded as applied."""
    core_migrations.apply(db)
    for namespace, functions in OLD.items():
        old = Migrations(namespace)
        for fn in functions:
            old()(fn)
        old.apply(db)


def insert_approval(conn: sqlite3.Connection, **values: Any) -> None:
    row = dict.fromkeys(APPROVAL_COLUMNS) | values
    conn.execute(f"INSERT INTO approvals ({', '.join(row)}) VALUES "
                 f"({', '.join('?' for _ in row)})", tuple(row.values()))


def fill(conn: sqlite3.Connection, ann: str, bob: str, blob: dict[str, Any],
         now: float) -> dict[str, str]:
    """Rows as the old code wrote them; the ids of what they are."""
    ids = {"open": new_id(), "overdue": new_id(), "answered": new_id(), "message": new_id()}
    asked = {"asker": ann, "approver": bob, "options_json": json.dumps(["approve", "deny"]),
             "kind": "approval", "approvers_json": json.dumps({"members": [], "peers": [bob]}),
             "recipients_json": json.dumps([bob])}
    insert_approval(conn, id=ids["open"], message_id=ids["message"], question="deploy?",
                    state="pending", created_at=now - 60, ref="abcde",
                    expires_at=now + 3600, **asked)
    insert_approval(conn, id=ids["overdue"], question="still there?", state="pending",
                    created_at=now - 7200, expires_at=now - 3600, **asked)
    # from before several approvers: one approver, the columns' defaults
    conn.execute("INSERT INTO approvals (id, asker, approver, question, options_json, state, "
                 "answer, reason, created_at, answered_at, answered_by, answered_on) VALUES "
                 "(?,?,?,?,?,?,?,?,?,?,?,?)",
                 (ids["answered"], ann, bob, "merge?", json.dumps(["yes", "no"]), "answered",
                  "yes", "looks fine", now - 500, now - 400, bob, "web"))
    conn.execute("INSERT INTO files (file, peer, name, size, mime, uploaded, created_at) "
                 "VALUES (?,?,?,?,?,?,?)",
                 (blob["file"], ann, "notes.txt", blob["size"], "text/plain", 1, now - 300))
    # a message to bob with the file attached, whose grant to bob was never written
    attachment = dict(blob, name="for-bob.txt")
    conn.execute("INSERT INTO messages (id, sender, target, conversation, body, "
                 "recipients_json, attachments_json, created_at) VALUES (?,?,?,?,?,?,?,?)",
                 (ids["message"], ann, bob, "dm", "see attached", json.dumps([bob]),
                  json.dumps([attachment]), now - 60))
    conn.execute("INSERT INTO deliveries (message_id, recipient, state, updated_at) "
                 "VALUES (?,?,?,?)", (ids["message"], bob, "read", now - 50))
    conn.execute("INSERT INTO reactions (message_id, peer, emoji, created_at) VALUES "
                 "(?,?,?,?)", (ids["message"], bob, "👍", now - 40))
    return ids


async def test_old_approvals_files_and_reactions_survive_the_upgrade(inproc, tmp_path, people,
                                                                     monkeypatch):
    monkeypatch.setattr(approval_book, "START_GRACE", 0.2)  # the overdue one expires soon
    ann, bob = people("ann", "bob")
    home = tmp_path / "hub"
    init_home(home, "owner")
    data = b"release notes\n"
    blob = FileStore.for_config(load_config(home)).put(data, "notes.txt").attachment()
    now = time.time()
    db = Database(sqlite3.connect(str(home / "meshhub.db"), isolation_level=None))
    old_schema(db)
    with db.conn:
        ids = fill(db.conn, key_of(ann), key_of(bob), blob, now)
    db.conn.close()

    served = await inproc()
    book = ApprovalBook.of(served.hub)
    assert ids["open"] in book.timers  # its expiry is armed again
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        listed = await b.call("approvals", role="approver", state="all")
        assert {x["id"] for x in listed} == {ids["open"], ids["overdue"], ids["answered"]}
        mine = await a.call("approvals", role="asker", state="all")
        assert [x["id"] for x in mine] == [ids["answered"], ids["overdue"], ids["open"]]
        assert [x["id"] for x in await a.call("approvals", role="any", state="all")] == \
            [x["id"] for x in mine]

        answered = await b.call("approval_get", id=ids["answered"])
        assert (answered["state"], answered["answer"], answered["reason"]) == \
            ("answered", "yes", "looks fine")
        assert (answered["answered_by"], answered["answered_on"]) == ("bob", "web")
        assert answered["approvers"] == ["bob"] and answered["options"] == ["yes", "no"]
        assert answered["created_at"] == now - 500 and answered["answered_at"] == now - 400
        assert answered["label"] == "yes, answered by bob on web"

        pending = await a.call("approval_get", id="ABCDE")  # by its short ref
        assert (pending["id"], pending["state"], pending["question"]) == \
            (ids["open"], "pending", "deploy?")
        assert pending["expires_at"] == now + 3600 and pending["asker"] == "ann"
        assert pending["options"] == ["approve", "deny"] and pending["approvers"] == ["bob"]
        assert pending["message_id"] == ids["message"]
        settled = await b.call("approval_answer", id="abcde", answer="approve")
        assert settled["state"] == "answered" and settled["answered_by"] == "bob"
        assert ids["open"] not in book.timers

        async def expired() -> bool:
            got = await a.call("approval_get", id=ids["overdue"])
            return bool(got["state"] == "expired")

        await eventually(expired)
        assert len(await b.call("approvals", role="approver", state="settled")) == 3

        files = await a.call("files")
        assert files == [{"file": blob["file"], "name": "notes.txt", "size": len(data),
                          "mime": "text/plain", "uploaded": True, "created_at": now - 300,
                          "expires": None}]  # kept: granted before attachments expired
        got = await a.call("file_get", id=blob["file"])
        assert base64.b64decode(got["content"]) == data and got["name"] == "notes.txt"
        given = await b.call("file_get", id=blob["file"])  # through the message it came with
        assert given["name"] == "for-bob.txt"
        # the upload and the message's body count against ann's quota, once the stored
        # bodies are counted (in the background, from the start)

        async def counted() -> bool:
            return served.hub.limits.storage.loaded

        await eventually(counted)
        assert served.hub.limits.storage.used[key_of(ann)] == len(data) + len(b"see attached")

        reactions = await a.call("reactions", ids=[ids["message"]])
        assert reactions == {ids["message"]: {"👍": ["bob"]}}

    with sqlite3.connect(home / "meshhub.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                             "type='table'")}
    assert not tables & {"approvals", "files", "reactions"}
