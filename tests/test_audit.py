"""The audit log on a real hub: the core's own events are appended (never what anyone wrote),
the owner reads them through the client library and the HTTP API, and `hub audit verify` /
`hub audit tail` from a real CLI process find a row edited in the database."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import aiohttp
import pytest

from meshhub.audit import entry_hash
from meshhub.client import ws_url
from meshhub.errors import Forbidden, MeshError, NotFound
from meshhub.members import enroll_owner

from .helpers import Identity, api_call, collect, token_for


async def test_core_events_are_logged_with_who_and_never_what(inproc, people, tmp_path):
    served = await inproc(send_rate=0)
    owner = Identity(tmp_path / "hub", "owner")
    ann, bob = people("ann", "bob")
    async with owner.client(served.url) as o, ann.client(served.url) as a, \
            bob.client(served.url) as b:
        ann_token = await token_for(a)
        await a.call("token_revoke", label="test")
        invite = await o.call("invite_create", uses=2)
        await o.call("invite_revoke", invite=invite["id"])
        asked = await a.call("approval_request", to="bob", question="ship the secret plan?")
        await collect(b, 1)
        await b.call("approval_answer", id=asked["id"], answer="approve",
                     reason="secret reason")
        question = await a.call("ask", to="bob", question="where is the secret key?")
        await b.call("approval_answer", id=question["id"], answer="secret under the mat")
        choice = await a.call("ask", to="bob", question="which?",
                              choices=["the secret one", "the other one"])
        await b.call("approval_answer", id=choice["id"], answer="the secret one")
        await o.call("member_remove", member="bob")

        rows = await o.call("audit", limit=100)
        events = [(r["event"], r["actor_name"], r["subject"]) for r in rows]
        assert events[:3] == [("member_joined", "owner", "owner"),
                              ("member_joined", "ann", "ann"), ("member_joined", "bob", "bob")]
        assert [r["details"]["via"] for r in rows[:3]] == ["owner", "local", "local"]
        token_rows = [r for r in rows if r["event"].startswith("token_")]
        assert [(r["event"], r["actor_name"]) for r in token_rows] == [
            ("token_created", "ann"), ("token_revoked", "ann")]
        assert token_rows[0]["details"] == {"label": "test", "cap": "send"}
        assert ann_token not in json.dumps(rows)
        assert ("invite_created", "owner", invite["id"]) in events
        assert ("invite_revoked", "owner", invite["id"]) in events
        answers = [r for r in rows if r["event"] == "approval_answered"]
        assert [(r["actor_name"], r["subject"], r["details"]["option"]) for r in answers] == [
            ("bob", asked["id"], 0), ("bob", question["id"], None), ("bob", choice["id"], 0)]
        assert {r["details"]["answer"] for r in answers} == {None}  # the asker's words
        assert events[-1] == ("member_removed", "owner", "bob")
        assert "secret" not in json.dumps(rows)  # no question, reason or free-text answer

        assert [r["event"] for r in await o.call("audit", event="token_created")] == [
            "token_created"]
        assert {r["actor_name"] for r in await o.call("audit", actor="ann")} == {"ann"}
        with pytest.raises(NotFound, match="closest known: ann"):
            await o.call("audit", actor="anne")
        assert [r["seq"] for r in await o.call("audit", limit=2)] == [
            rows[-2]["seq"], rows[-1]["seq"]]
        assert await o.call("audit_verify") == {
            "ok": True, "checked": rows[-1]["seq"], "seq": None, "reason": "",
            "head": {"seq": rows[-1]["seq"], "hash": rows[-1]["hash"]}}
        owner_token = await token_for(o, cap="admin")
        over_http = await api_call(served.url, owner_token, "audit", limit=3,
                                   event="member_removed")
        assert [r["subject"] for r in over_http] == ["bob"]
        assert (await api_call(served.url, owner_token, "audit_verify"))["ok"] is True
        with pytest.raises(Forbidden):
            await a.call("audit")
        with pytest.raises(Forbidden):
            await a.call("audit_verify")
        refused = await api_call(served.url, await token_for(a), "audit")
        assert refused["code"] == "forbidden"


def test_cli_verify_and_tail_find_an_edited_row(hub):
    owner = Identity(hub.home, "owner")
    evil = "x\u202e\x1b[31mred"
    label = f"ci {evil}"
    owner.cli(hub.url, "token", "create", "--label", label)
    intact = owner.cli(hub.url, "audit", "verify")
    export = owner.cli(hub.url, "audit", "export").stdout
    exported = [json.loads(line) for line in export.splitlines()]
    assert [row["seq"] for row in exported] == [1, 2]
    assert all(row["hash"] == entry_hash(row) for row in exported)
    assert exported[1]["details"]["label"] == label
    assert "\x1b" not in export and "\u202e" not in export
    assert intact.stdout.strip() == (f"2 rows, chain intact (head: row 2, sha256 "
                                     f"{exported[1]['hash']})")
    tail = owner.cli(hub.url, "audit", "tail", "-n", "5")
    assert "token_created" in tail.stdout and "member_joined" in tail.stdout
    assert "\x1b" not in tail.stdout and "\u202e" not in tail.stdout
    shown = owner.cli(hub.url, "audit", "tail", "--event", "token_created", "--json")
    [row] = json.loads(shown.stdout)
    assert row["details"]["label"] == label and row["seq"] == 2

    with sqlite3.connect(hub.home / "meshhub.db") as db:
        value = json.loads(db.execute("SELECT value FROM rec_audit WHERE key = ?",
                                      ("000000000001",)).fetchone()[0])
        value["actor_name"] = "someone-else"
        db.execute("UPDATE rec_audit SET value = ? WHERE key = ?",
                   (json.dumps(value), "000000000001"))
    broken = owner.cli(hub.url, "audit", "verify", check=False)
    assert broken.returncode == 1
    assert "chain broken at row 1" in broken.stderr and "changed" in broken.stderr
    as_json = owner.cli(hub.url, "audit", "verify", "--json", check=False)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["seq"] == 1


async def test_a_revoked_tokens_connection_closes_even_when_the_log_fails(inproc, people,
                                                                          monkeypatch):
    served = await inproc()
    (ann,) = people("ann")
    async with ann.client(served.url) as a, aiohttp.ClientSession() as http:
        token = await token_for(a)
        ws = await http.ws_connect(ws_url(served.url))
        await ws.receive_json()
        await ws.send_json({"type": "hello", "token": token})
        assert (await ws.receive_json())["type"] == "welcome"

        async def failing(*args: Any, **kwargs: Any) -> None:
            raise OSError("the log's disk is full")

        monkeypatch.setattr(served.hub.audit, "append", failing)
        with pytest.raises(MeshError):
            await a.call("token_revoke", label="test")
        while (frame := await ws.receive(timeout=30)).type == aiohttp.WSMsgType.TEXT:
            pass  # presence events until the close
        assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()


async def test_pairing_codes_and_the_owners_name_taken_back_are_logged(inproc, people,
                                                                      tmp_path):
    served = await inproc()
    owner = Identity(tmp_path / "hub", "owner")
    (ann,) = people("ann")
    async with owner.client(served.url) as o, ann.client(served.url) as a:
        made = await o.call("pair_create", connector="telegram", new_person=True)
        token = await token_for(o, cap="admin")
        over_http = await api_call(served.url, token, "pair_create", connector="telegram",
                                   new_person=True)
        ann_key = a.peer["key"]
        member_key = served.hub.directory.peers[ann_key].member_key
        await enroll_owner(served.hub, "f" * 64, "ann")  # an owner whose name ann held

        rows = await o.call("audit", event="pairing_code_created")
        assert [(r["actor_name"], r["subject"], r["details"]) for r in rows] == [
            ("owner", made["id"], {"connector": "telegram", "new_person": True}),
            ("owner", over_http["id"], {"connector": "telegram", "new_person": True})]
        codes = (made["code"], over_http["code"])
        logged = json.dumps(await o.call("audit", limit=100))
        assert not any(c in logged or c.replace("-", "") in logged for c in codes)
        renamed = await o.call("audit", event="owner_name_reclaimed")
        directory = served.hub.directory
        assert [(r["actor_name"], r["subject"], r["details"]) for r in renamed] == [
            ("hub", "ann", {"key": member_key,
                            "renamed_to": directory.members[member_key].name}),
            ("hub", "ann", {"key": ann_key, "renamed_to": directory.peers[ann_key].name})]
        assert (await served.hub.audit.verify()).ok
