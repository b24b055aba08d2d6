"""A hub whose members and invites are in the tables from before the record API keeps every one
of them when it starts on the new code (core migration m012)."""

from __future__ import annotations

import json
import time

from nacl.signing import SigningKey
from sqlite_utils import Database

from meshhub.admission import invite_hash
from meshhub.builtins.migrations import core_migrations
from meshhub.client import MeshClient
from meshhub.config import init_home

INVITE_CODE = "ABCD-EFGH-JKLM-NPQR"


def _old_hub(home) -> None:  # type: ignore[no-untyped-def]
    init_home(home, "owner")
    db = Database(home / "meshhub.db")
    core_migrations.apply(db, stop_before="m012_members_and_invites_to_records")
    now = time.time()
    db.execute(
        "INSERT INTO members (key, name, via, role, groups_json, invite, created_at, "
        "removed_at, prefs_json) VALUES (?,?,?,?,?,?,?,?,?)",
        ("b0b" * 21 + "b", "bob", "invite", "reviewer", json.dumps({"ops": "lead"}), "inv1",
         now - 100, None, json.dumps({"reach": "always", "muted": ["k1"]})))
    db.execute(
        "INSERT INTO members (key, name, via, role, groups_json, invite, created_at, "
        "removed_at, prefs_json) VALUES (?,?,?,?,?,?,?,?,'{}')",
        ("ca7" * 21 + "c", "carol", "local", "", "{}", None, now - 90, now - 10))
    db.execute(
        "INSERT INTO invites (id, code_hash, created_by, uses, used, role, groups_json, "
        "expires_at, revoked_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        ("inv1", invite_hash(INVITE_CODE), "owner-peer", 3, 1, "reviewer",
         json.dumps({"ops": "member"}), now + 3600, None, now - 200))
    db.conn.close()


async def test_members_and_invites_survive_the_move_to_records(inproc, tmp_path):
    _old_hub(tmp_path / "hub")
    served = await inproc()
    directory = served.hub.directory
    bob = directory.member_named("bob")
    assert bob is not None
    assert (bob.via, bob.role, bob.groups, bob.invite) == ("invite", "reviewer",
                                                          {"ops": "lead"}, "inv1")
    assert bob.prefs == {"reach": "always", "muted": ["k1"]}
    carol = directory.members["ca7" * 21 + "c"]
    assert carol.removed_at is not None and directory.member_named("carol") is None
    invite = directory.invites[invite_hash(INVITE_CODE)]
    assert (invite.id, invite.uses, invite.used, invite.groups) == ("inv1", 3, 1,
                                                                   {"ops": "member"})
    # the invite still works, and its use is counted where the records keep it
    dave = MeshClient(served.url, SigningKey.generate(), name="dave", local=False,
                      invite=INVITE_CODE)
    async with dave:
        pass
    assert directory.member_named("dave") is not None
    stored = await served.hub.records.get("invites", "inv1")
    assert stored is not None and stored.value["used"] == 2
    assert await served.hub.records.count("members") >= 4  # bob, carol, dave, the owner
    await served.stop()
    served = await inproc()  # and again after a restart, from the records alone
    assert served.hub.directory.member_named("dave") is not None
    assert served.hub.directory.invites[invite_hash(INVITE_CODE)].used == 2
