"""Shared state end to end: the client library, the HTTP API and real `hub mcp` sessions (and
the hub's /mcp endpoint) against a real hub on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import anyio
import pytest

from meshhub.builtins import shared_state
from meshhub.client import MeshClient
from meshhub.errors import Forbidden, InvalidRequest, MeshError, TooLarge
from meshhub_mcp import push
from meshhub_mcp.http_endpoint import ChannelSocket
from meshhub_mcp.push import Pusher, StateNotices, state_setting
from meshhub_mcp.tools import STATE_SHOWN, state_content

from .helpers import make_identity
from .test_mcp import Session, http_session, mcp_params, stdio_session


async def next_record(client: MeshClient, key: str,
                      passed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The next ``record`` event of the state collection for ``key``; the events passed over
    on the way (presence, other keys' changes) are added to ``passed`` when given."""
    with anyio.fail_after(10):
        while True:
            event = await client.events.get()
            if event.get("event") == "record" and event["collection"] == "state" \
                    and event["key"] == key:
                return event
            if passed is not None:
                passed.append(event)


async def api(http: aiohttp.ClientSession, url: str, token: str, action: str,
              **params: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/api/{action}", json=params,
                         headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def test_set_get_list_delete_push_and_restart(inproc, tmp_path):
    served = await inproc()
    ann, bob, cy = (make_identity(tmp_path / "people", n) for n in ("ann", "bob", "cy"))
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            cy.client(served.url) as c:
        token = (await a.call("token_create", label="state test"))["token"]
        first = await a.call("state_set", key="build/status", value={"green": True, "n": 3})
        assert first["key"] == "build/status" and first["scope"] is None
        assert first["author"] == "ann" and first["revision"] > 0
        assert first["value"] == {"green": True, "n": 3}

        event = await next_record(b, "build/status")  # another connected peer hears of it
        assert event["op"] == "put" and event["revision"] == first["revision"]
        assert event["value"] == {"key": "build/status", "scope": None,
                                  "value": {"green": True, "n": 3}, "author": "ann",
                                  "author_key": a.peer["key"]}

        async with aiohttp.ClientSession() as http:
            status, body = await api(http, served.url, token, "state_get", key="build/status")
            assert status == 200 and body["result"]["value"] == {"green": True, "n": 3}
            # a stale compare-and-set through HTTP: 409, the current value and revision
            status, body = await api(http, served.url, token, "state_set", key="build/status",
                                     value="red", revision=first["revision"] + 1000)
            assert status == 409 and body["error"]["code"] == "conflict"
            assert body["error"]["details"]["revision"] == first["revision"]
            assert body["error"]["details"]["value"] == {"green": True, "n": 3}
            status, body = await api(http, served.url, token, "state_set", key="build/status",
                                     value="red", revision=first["revision"])
            assert status == 200
        second = body["result"]
        assert second["value"] == "red" and second["revision"] > first["revision"]
        assert (await next_record(b, "build/status"))["value"]["value"] == "red"

        # the client library: the same refusal, the same details
        with pytest.raises(MeshError) as lost:
            await b.call("state_set", key="build/status", value="blue",
                         revision=first["revision"])
        assert lost.value.code == "conflict" and lost.value.details["value"] == "red"
        assert lost.value.details["revision"] == second["revision"]
        with pytest.raises(MeshError, match="it is at revision"):  # 0: only if absent
            await b.call("state_set", key="build/status", value="blue", revision=0)
        made = await b.call("state_set", key="build/owner", value=None, revision=0)
        assert made["author"] == "bob" and made["value"] is None
        await b.call("state_set", key="deploy/lock", value=[1, "two"])

        listed = await c.call("state_list", prefix="build/")
        assert [e["key"] for e in listed["entries"]] == ["build/owner", "build/status"]
        every = await c.call("state_list")
        assert [e["key"] for e in every["entries"]] == ["build/owner", "build/status",
                                                        "deploy/lock"]
        assert every["more"] is False

        gone = await c.call("state_delete", key="deploy/lock")
        assert gone == {"key": "deploy/lock", "scope": None, "deleted": True}
        deleted = await next_record(a, "deploy/lock")
        while deleted["op"] != "delete":
            deleted = await next_record(a, "deploy/lock")
        assert deleted["value"] is None
        assert (await c.call("state_get", key="deploy/lock"))["revision"] == 0
        assert (await c.call("state_delete", key="deploy/lock"))["deleted"] is False

    await served.stop()
    again = await inproc()  # same home: the values are still there
    async with cy.client(again.url, receive=False) as c:
        kept = await c.call("state_get", key="build/status")
        assert kept["value"] == "red" and kept["revision"] == second["revision"]
        assert kept["author"] == "ann"
        assert [e["key"] for e in (await c.call("state_list"))["entries"]] == [
            "build/owner", "build/status"]


async def test_conversation_scope_is_for_its_members(inproc, tmp_path):
    served = await inproc()
    ann, bob, cy = (make_identity(tmp_path / "people", n) for n in ("ann", "bob", "cy"))
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            cy.client(served.url) as c:
        await a.call("conversation_create", name="ops")
        await b.call("conversation_join", name="#ops")
        set_ = await a.call("state_set", key="lock", value="ann", scope="#ops")
        assert set_["scope"] == "#ops"
        event = await next_record(b, "#ops lock")
        assert event["value"]["scope"] == "#ops" and event["value"]["value"] == "ann"
        with pytest.raises(Forbidden):
            await c.call("state_get", key="lock", scope="ops")
        with pytest.raises(Forbidden):
            await c.call("state_set", key="lock", value="cy", scope="#ops")
        # the mesh-wide scope and the conversation's are apart
        assert (await c.call("state_get", key="lock"))["value"] is None
        await c.call("state_set", key="lock", value="mesh")
        assert [e["value"] for e in (await b.call("state_list", scope="#ops"))["entries"]] == [
            "ann"]
        assert [e["value"] for e in (await b.call("state_list"))["entries"]] == ["mesh"]
        # cy is no member: of everything it got, until a mesh-wide change made after the
        # conversation's (the feed tells in order), nothing was of #ops
        await a.call("state_set", key="barrier", value=1)
        received: list[dict[str, Any]] = []
        mesh_event = await next_record(c, "lock", received)
        assert mesh_event["value"]["value"] == "mesh"
        await next_record(c, "barrier", received)
        assert [e["key"] for e in received + _drain(c) if e.get("event") == "record"
                and e["key"].startswith("#")] == []


def _drain(client: MeshClient) -> list[dict[str, Any]]:
    out = []
    while not client.events.empty():
        out.append(client.events.get_nowait())
    return out


async def test_keys_and_values_are_checked(inproc, tmp_path):
    served = await inproc()
    ann = make_identity(tmp_path / "people", "ann")
    async with ann.client(served.url, receive=False) as a:
        for bad in ("", "has space", "#ops", "x" * 129, "-dash", "ümlaut", "x\n", "lock\n"):
            with pytest.raises(InvalidRequest, match="letters, digits"):
                await a.call("state_set", key=bad, value=1)
        with pytest.raises(TooLarge, match="65536 bytes"):
            await a.call("state_set", key="big", value="x" * (64 * 1024))
        fits = "x" * (64 * 1024 - 2)  # with its quotes: exactly the limit
        assert (await a.call("state_set", key="big", value=fits))["value"] == fits
        for bad_prefix in ("a b", "build/\n"):
            with pytest.raises(InvalidRequest, match="prefix"):
                await a.call("state_list", prefix=bad_prefix)


def test_state_setting():
    assert state_setting(None) == ("",) and state_setting("ALL") == ("",)
    assert state_setting("off") == ()
    assert state_setting(" build/, deploy ") == ("build/", "deploy")
    with pytest.raises(ValueError):
        state_setting(" , ")


async def test_a_burst_of_changes_is_one_notification(monkeypatch):
    monkeypatch.setattr(push, "STATE_DEBOUNCE", 0.01)
    sent: list[tuple[str, dict[str, str]]] = []
    done = asyncio.Event()

    async def send(text: str, meta: dict[str, str]) -> None:
        sent.append((text, meta))
        done.set()

    notices = StateNotices(("build/",), send)
    for n, key in enumerate(["build/a", "deploy/x", "build/b", "build/a"]):
        notices.offer({"type": "event", "event": "record", "collection": "state", "key": key,
                       "op": "put", "revision": n + 1,
                       "value": {"key": key, "value": n, "author": "ann\x1b[2J"}})
    notices.offer({"type": "event", "event": "presence"})
    await asyncio.wait_for(done.wait(), 10)
    await notices.close()
    ((text, meta),) = sent
    assert meta == {"kind": "state", "keys": "build/b,build/a", "changes": "2"}
    assert "build/a = 3 (by ann\\x1b[2J, revision 4)" in text and "deploy" not in text
    assert "\x1b" not in text


async def stdio_ready(s: Session) -> None:
    """A session that answered a tool call is connected to the hub, receiving."""
    await s.call("mesh_whoami")


async def test_mcp_sessions_get_state_notifications_by_their_setting(hub, people):
    ann, bob = people("ann", "bob")
    token = json.loads(bob.cli(hub.url, "token", "create", "--json").stdout)["token"]
    async with stdio_session(mcp_params(bob, hub.url, "--name", "every")) as every, \
            stdio_session(mcp_params(bob, hub.url, "--name", "quiet", "--state", "off")) as quiet, \
            stdio_session(mcp_params(bob, hub.url, "--name", "builds",
                                     MESHHUB_STATE="build/")) as builds, \
            http_session(hub.url + "/mcp?state=build/", token) as web_mcp, \
            ann.client(hub.url, receive=False) as a:
        for s in (every, quiet, builds, web_mcp):
            await stdio_ready(s)
        with anyio.fail_after(10):  # the /mcp GET stream is bob's receiving connection
            while not any(p["name"] == "bob" and p["online"] for p in await a.peers()):
                await anyio.sleep(0.05)
        await a.call("state_set", key="deploy/lock", value="ann")
        await a.call("state_set", key="build/status", value={"green": True})

        for s in (builds, web_mcp):
            (note,) = await s.pushes.wait(1)
            assert note.meta == {"kind": "state", "keys": "build/status", "changes": "1"}
            assert 'build/status = {"green":true} (by ann' in note.content
        with anyio.fail_after(10):
            while "build/status" not in ",".join(p.meta["keys"] for p in every.pushes.items):
                await every.pushes.wait(len(every.pushes.items) + 1)
        keys = ",".join(p.meta["keys"] for p in every.pushes.items).split(",")
        assert keys == ["deploy/lock", "build/status"]  # each once, in the order made
        assert all(p.meta["kind"] == "state" for p in every.pushes.items)
        assert await quiet.pushes.none(0.5) and quiet.pushes.items == []
        assert await builds.pushes.none(0.3) and len(builds.pushes.items) == 1

        # the model reads the state through the tools, and a stale write is refused
        got = await every.call("mesh_state_get", key="build/status")
        assert got["value"] == {"green": True} and got["author"] == "ann"
        error = await every.error("mesh_state_set", key="build/status", value="x", revision=0)
        assert f"at revision {got['revision']} now, by ann: {{\"green\":true}}" in error


def test_a_big_burst_names_ten_keys_in_its_meta_too():
    changes = [{"event": "record", "collection": "state", "key": f"k{n:04}", "op": "put",
                "revision": n, "value": {"key": f"k{n:04}", "value": n, "author": "ann"}}
               for n in range(5000)]
    text, meta = state_content(changes)
    assert meta["keys"] == ",".join(f"k{n:04}" for n in range(STATE_SHOWN)) + ",+4990 more"
    assert meta["changes"] == "5000" and "and 4990 more keys" in text


async def test_a_revoked_stream_is_told_no_state_change(monkeypatch):
    monkeypatch.setattr(push, "STATE_DEBOUNCE", 0.01)
    sent: list[str] = []

    async def send(text: str, meta: dict[str, str]) -> None:
        sent.append(text)

    async def nothing(*args: Any) -> Any:
        return {}

    async def revoked() -> bool:
        return False

    notices = StateNotices(("",), send)
    sock = ChannelSocket(Pusher("push", send, nothing, nothing), notices, revoked)
    frame = {"type": "event", "event": "record", "collection": "state", "key": "lock",
             "op": "put", "revision": 1, "value": {"key": "lock", "value": 1, "author": "ann"}}
    with pytest.raises(ConnectionError, match="revoked"):
        await sock.send_str(json.dumps(frame))
    assert sock.closed
    await asyncio.sleep(0.05)  # past the debounce: a pending notice would have gone out
    await notices.close()
    assert sent == []


async def test_a_bad_state_setting_on_http_is_refused(inproc, tmp_path):
    served = await inproc()
    ann = make_identity(tmp_path / "people", "ann")
    async with ann.client(served.url, receive=False) as a:
        token = (await a.call("token_create", label="mcp"))["token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http:
        for query, words in (("state=%20,%20", "comma-separated key prefixes"),
                             ("mode=loud", "mode must be one of push, inbox, off")):
            async with http.get(f"{served.url}/mcp?{query}", headers=headers) as resp:
                assert resp.status == 400 and words in (await resp.json())["error"]


async def _counted(served: Any, total: int) -> None:
    """Wait (bounded) until the start-up count reached ``total`` bytes."""
    for _ in range(3000):
        if served.hub.limits.storage.total == total:
            return
        await asyncio.sleep(0.01)
    assert served.hub.limits.storage.total == total


async def test_values_count_against_the_writers_storage_quota(inproc, tmp_path):
    served = await inproc(member_quota_bytes=1000)
    ann, bob = (make_identity(tmp_path / "people", n) for n in ("ann", "bob"))
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False) as b:
        await a.call("state_set", key="a", value="x" * 598)  # 600 bytes as JSON
        with pytest.raises(MeshError) as err:
            await a.call("state_set", key="b", value="y" * 498)
        assert err.value.code == "quota_exceeded" and err.value.details["used"] == 600
        assert (await a.call("state_get", key="b"))["revision"] == 0  # nothing was stored
        await a.call("state_set", key="a", value="z" * 898)  # a new value replaces the old
        with pytest.raises(MeshError, match="quota"):
            await a.send("bob", "m" * 200)  # messages and state share the quota
        await b.call("state_set", key="a", value="bob")  # ann's 900 bytes are hers no more
        await a.call("state_set", key="b", value="y" * 798)
        await a.call("state_delete", key="b")  # a delete gives them back
        await a.call("state_set", key="c", value="w" * 898)
    await served.stop()
    again = await inproc(member_quota_bytes=1000)  # the same home: counted again at start
    await _counted(again, 900 + 5)
    async with ann.client(again.url, receive=False) as a:
        with pytest.raises(MeshError) as err:
            await a.call("state_set", key="d", value="v" * 198)
        assert err.value.code == "quota_exceeded" and err.value.details["used"] == 900


async def test_state_list_pages_on_with_after(inproc, tmp_path, monkeypatch):
    monkeypatch.setattr(shared_state, "MAX_LIST", 2)
    served = await inproc(action_rate=0)
    ann = make_identity(tmp_path / "people", "ann")
    async with ann.client(served.url, receive=False) as a:
        await a.call("conversation_create", name="ops")
        for key in ("a1", "a2", "a3", "a4", "a5", "b1"):
            await a.call("state_set", key=key, value=key)
            await a.call("state_set", key=key, value=key, scope="#ops")
        for scope in (None, "#ops"):
            seen, after, more = [], None, True
            while more:
                page = await a.call("state_list", scope=scope, prefix="a", after=after)
                seen += [e["key"] for e in page["entries"]]
                after, more = seen[-1], page["more"]
            assert seen == ["a1", "a2", "a3", "a4", "a5"]
            below = await a.call("state_list", scope=scope, prefix="a", after="0")
            assert [e["key"] for e in below["entries"]] == ["a1", "a2"] and below["more"]
        rest = await a.call("state_list", after="a4")
        assert [e["key"] for e in rest["entries"]] == ["a5", "b1"] and not rest["more"]
        with pytest.raises(InvalidRequest, match="letters, digits"):
            await a.call("state_list", after="a b")
