"""Each hook, exercised by a test plugin registered inline on a fresh plugin manager, against an
in-process hub served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlite_utils.migrations import Migrations

from meshhub import hookimpl
from meshhub.builtins.sqlite_store import SQLiteStore
from meshhub.client import ws_url
from meshhub.config import load_config
from meshhub.errors import MeshError
from meshhub.hub import Hub
from meshhub.plugins import build_plugin_host
from meshhub.records import Collection
from meshhub.report import ReportSection, build_report

from .helpers import collect, make_identity


class Recorder:
    """Fan-out hooks: records what the core told it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def meshhub_startup(self, hub):
        self.calls.append(("startup", None))

    @hookimpl
    async def meshhub_shutdown(self, hub):
        self.calls.append(("shutdown", None))

    @hookimpl
    def meshhub_presence_changed(self, hub, peer, event):
        self.calls.append(("presence", (peer.name, event)))

    @hookimpl
    def meshhub_message_accepted(self, hub, message):
        self.calls.append(("accepted", message.body))

    @hookimpl
    def meshhub_describe_peer(self, hub, peer):
        return {"badge": f"{peer.name}-badge"}

    @hookimpl
    async def meshhub_reaction_changed(self, hub, message, peer, emoji, added, by):
        self.calls.append(("reaction", (message.body, peer.name, emoji, added, len(by))))

    @hookimpl
    def meshhub_approval_settled(self, hub, approval, message):
        self.calls.append(("settled", (approval["label"], message.id if message else None)))

    @hookimpl
    def meshhub_card_settled(self, hub, message, label):
        self.calls.append(("card", (message.id, label)))

    @hookimpl
    async def meshhub_report_sections(self, hub, viewer, since, until):
        self.calls.append(("report", (viewer.name, until - since)))
        return [ReportSection("Builds", ["- nightly *passed*"], order=70),
                ReportSection("Empty", [], order=1)]


async def test_fan_out_hooks_startup_presence_accepted_describe_shutdown(inproc, tmp_path):
    recorder = Recorder()
    served = await inproc(("recorder", recorder))
    ann, bob = make_identity(tmp_path, "ann"), make_identity(tmp_path, "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        await a.send("bob", "observed")
        await collect(b, 1)
        peers = {p["name"]: p for p in await a.peers()}
        assert peers["bob"]["badge"] == "bob-badge"
        await a.set_status("working")
        sent = await a.send("bob", "react to me")
        await collect(b, 1)
        await b.call("react", id=sent["id"], emoji="👍")
        await b.call("react", id=sent["id"], emoji="👍")  # no change: not reported again
        await b.call("react", id=sent["id"], emoji="👍", remove=True)
        await collect(a, 1)  # the notice of bob's reaction
        await b.call("reactions", ids=[sent["id"]])  # a round trip: the hooks have run
        asked = await a.call("approval_request", to="bob", question="ship it?")
        await b.call("approval_answer", id=asked["id"], answer="approve")
        await collect(a, 1)  # the answer: the hook has been started
        viewer = served.hub.directory.peers[(await a.call("whoami"))["key"]]
        report = await build_report(served.hub, viewer, 1000.0, 4600.0)
    await served.stop()
    kinds = [c[0] for c in recorder.calls]
    assert kinds[0] == "startup" and kinds[-1] == "shutdown"
    assert ("accepted", "observed") in recorder.calls
    assert ("presence", ("bob", "joined")) in recorder.calls  # new on the mesh
    assert ("presence", ("bob", "online")) in recorder.calls  # and connected
    assert ("presence", ("ann", "status")) in recorder.calls
    reactions = [c[1] for c in recorder.calls if c[0] == "reaction"]
    assert reactions == [("react to me", "bob", "👍", True, 1),
                         ("react to me", "bob", "👍", False, 0)]
    assert ("settled", ("approve, answered by bob on cli", asked["message_id"])) in recorder.calls
    assert ("card", (asked["message_id"], "approve, answered by bob on cli")) in recorder.calls
    assert ("report", ("ann", 3600.0)) in recorder.calls
    assert "## Builds\n\n- nightly *passed*\n" in report and "## Empty" not in report
    assert report.startswith("# Mesh report: 1970-01-01 00:16 UTC to 1970-01-01 01:16 UTC")


class RoleTargets:
    @hookimpl
    def meshhub_resolve_target(self, hub, token, sender):
        if not token.startswith("role:"):
            return None
        role = token[5:]
        return [p.key for p in hub.directory.peers.values() if p.role == role]


async def test_resolve_target_adds_a_target_kind(inproc, tmp_path):
    served = await inproc(("roles", RoleTargets()))
    ann, bob = make_identity(tmp_path, "ann"), make_identity(tmp_path, "bob")
    async with ann.client(served.url) as a, bob.client(served.url, role="reviewer") as b:
        result = await a.send("role:reviewer", "please review")
        assert result["recipients"] == ["bob"]
        assert (await collect(b, 1))[0]["text"] == "please review"


class FakeChat:
    """A bridged connector: its peers live on another platform, reached through deliver."""

    def __init__(self) -> None:
        self.outbox: list[str] = []
        self.failures = 1
        self.stopped = False

    @hookimpl
    def meshhub_register_connectors(self, register):
        register("fakechat", self)

    async def start(self, hub: Hub) -> None:
        await hub.directory.register(identity="fakechat:42", name="zed", kind="human",
                                     connector="fakechat")

    async def stop(self) -> None:
        self.stopped = True

    @hookimpl
    async def meshhub_deliver(self, hub, peer, message):
        if peer.connector != "fakechat":
            return None
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the platform is down")
        self.outbox.append(message.body)
        return True


async def test_deliver_hands_messages_to_a_connector_and_retries_after_failure(inproc, tmp_path):
    chat = FakeChat()
    served = await inproc(("fakechat", chat), lease_seconds=0.3)
    ann = make_identity(tmp_path, "ann")
    async with ann.client(served.url) as a:
        sent = await a.send("zed", "across the bridge")
        for _ in range(50):
            if chat.outbox:
                break
            await asyncio.sleep(0.1)
        assert chat.outbox == ["across the bridge"]  # failed once, retried once, not twice
        for _ in range(50):  # the hub records the platform's answer right after it
            status = await a.message_status(sent["id"])
            if status["recipients"][0]["state"] == "delivered":
                break
            await asyncio.sleep(0.05)
        assert status["recipients"][0]["state"] == "delivered"
        assert status["recipients"][0]["attempts"] == 2
        # a WebSocket peer cannot pass itself off as one of the connector's peers
        mallory = make_identity(tmp_path, "mallory")
        with pytest.raises(MeshError) as refused:
            await mallory.client(served.url, connector="fakechat").connect()
        assert refused.value.code == "unauthorized"
    await served.stop()
    assert chat.stopped


class TokenHello:
    """Another hello scheme, and an identity bound to an existing peer."""

    @hookimpl(tryfirst=True)
    def meshhub_authenticate_hello(self, hub, hello, nonce):
        if hello.get("scheme") != "shared-secret":
            return None
        if hello.get("secret") != "open sesame":
            from meshhub.errors import AuthFailed

            raise AuthFailed("wrong secret", code="bad_secret")
        return {"identity": f"secret:{hello['name']}"}

    @hookimpl
    def meshhub_resolve_identity(self, hub, identity):
        if identity == "secret:ann-phone":  # ann's phone is ann
            return hub.directory.find("ann")
        return None


async def _raw(url: str, hello: dict) -> dict:
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(url)) as ws:
        await ws.receive_json()
        await ws.send_json(hello)
        return await ws.receive_json()  # type: ignore[no-any-return]


async def test_authenticate_hello_and_resolve_identity(inproc, tmp_path):
    served = await inproc(("token-hello", TokenHello()))
    ann = make_identity(tmp_path, "ann")
    async with ann.client(served.url) as a:
        answer = await _raw(served.url, {"type": "hello", "scheme": "shared-secret",
                                         "secret": "nope", "name": "eve"})
        assert answer["code"] == "bad_secret"
        answer = await _raw(served.url, {"type": "hello", "scheme": "shared-secret",
                                         "secret": "open sesame", "name": "svc"})
        assert answer["type"] == "welcome" and answer["peer"]["name"] == "svc"
        answer = await _raw(served.url, {"type": "hello", "scheme": "shared-secret",
                                         "secret": "open sesame", "name": "ann-phone"})
        assert answer["peer"]["key"] == a.peer["key"]


class Extras:
    """Routes and migrations."""

    migrations = Migrations("meshhub.extras")

    @staticmethod
    @migrations()
    def m001_create_notes(db):
        db["notes"].create({"id": int, "text": str}, pk="id")

    @hookimpl
    def meshhub_register_migrations(self, register):
        register(self.migrations)

    @hookimpl
    def meshhub_register_routes(self, register):
        from aiohttp import web

        async def hello(request: web.Request) -> web.Response:
            hub = request.app["hub"] if "hub" in request.app else None
            return web.json_response({"hello": "from a plugin", "hub": hub is not None})

        register("GET", "/extras/hello", hello)


async def test_register_routes_and_migrations(inproc):
    served = await inproc(("extras", Extras()))
    async with aiohttp.ClientSession() as http, http.get(served.url + "/extras/hello") as resp:
        assert resp.status == 200
        assert (await resp.json())["hello"] == "from a plugin"
    db = sqlite3.connect(served.hub.config.db_path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    applied = db.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?",
                         ("meshhub.extras",)).fetchall()
    db.close()
    assert "notes" in tables and applied == [("m001_create_notes",)]
    record = served.hub.plugins.records["extras"]
    assert record.registered == {"routes": ["GET /extras/hello"],
                                 "migrations": ["meshhub.extras"]}


class OtherStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    @hookimpl(tryfirst=True)
    def meshhub_provide_store(self, hub):
        return SQLiteStore(self.path)


async def test_provide_store_replaces_the_engine(inproc, tmp_path):
    path = tmp_path / "elsewhere.db"
    served = await inproc(("other-store", OtherStore(path)))
    ann, bob = make_identity(tmp_path, "ann"), make_identity(tmp_path, "bob")
    async with ann.client(served.url) as a, bob.client(served.url):
        await a.send("bob", "stored elsewhere")
    db = sqlite3.connect(path)
    bodies = [r[0] for r in db.execute("SELECT body FROM messages")]
    db.close()
    assert bodies == ["stored elsewhere"]
    assert not served.hub.config.db_path.exists()


def test_register_actions_rejects_duplicates_and_records_the_failure():
    from meshhub.builtins.core_actions import send

    class Copycat:
        @hookimpl
        def meshhub_register_actions(self, register):
            register(send)

    host = build_plugin_host()
    host.register(Copycat(), "copycat", "0.0", "test")
    hub = Hub(load_config(Path("/nonexistent-meshhub-home")), plugins=host)
    hub.collect_contributions()
    assert host.records["copycat"].status == "failed"
    assert "already registered" in (host.records["copycat"].error or "")
    assert hub.actions.get("send").plugin == "core_actions"
    assert json.dumps(host.table())  # the table is plain data


class Notes:
    """A plugin keeping its data in a record collection with a change feed."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str, int]] = []

    @hookimpl
    def meshhub_register_collections(self, register):
        register(Collection("notes", indexes=("author",), search=("text",), feed=True,
                            notify=lambda hub, change: [(change.value or change.previous
                                                         or {})["for"]]))

    @hookimpl
    async def meshhub_record_changed(self, hub, change):
        self.changes.append((change.key, change.op, change.revision))


async def test_register_collections_and_record_changed(inproc, tmp_path):
    notes = Notes()
    served = await inproc(("notes", notes))
    hub = served.hub
    assert served.hub.plugins.records["notes"].registered == {"collections": ["notes"]}
    bob = make_identity(tmp_path, "bob")
    async with bob.client(served.url) as b:
        me = next(p for p in await b.peers() if p["name"] == "bob")
        first = await hub.records.put("notes", "n1", {"author": "x", "text": "hi",
                                                      "for": me["key"]})
        event = await asyncio.wait_for(b.events.get(), 10)
        assert event["event"] == "record" and event["collection"] == "notes"
        assert (event["key"], event["op"], event["revision"]) == ("n1", "put", first.revision)
        assert event["value"]["text"] == "hi" and event["seq"] > 0
        await hub.records.delete("notes", "n1", revision=first.revision)
        gone = await asyncio.wait_for(b.events.get(), 10)  # told: notify had the old document
        assert (gone["key"], gone["op"], gone["value"]) == ("n1", "delete", None)
        assert "previous" not in gone
        for _ in range(100):
            if len(notes.changes) == 2:
                break
            await asyncio.sleep(0.05)
    assert notes.changes == [("n1", "put", first.revision), ("n1", "delete", first.revision)]
