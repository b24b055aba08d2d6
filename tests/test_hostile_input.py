"""Hostile input at the edge, against a real hub: every stored field has a maximum (refused with
the field and the limit named, nothing stored); bodies and frames that choke JSON readers get a
documented error code, never ``internal`` or a traceback; and the smaller leaks (a file's name
is the uploader's own, a refused ``file_put`` keeps nothing, loopback names match exactly)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nacl.signing import SigningKey

from meshhub.admission import is_loopback
from meshhub.bridge.chat import parse_call
from meshhub.builtins.hello_auth import sign_hello
from meshhub.client import audience, ws_url
from meshhub.errors import MeshError
from meshhub.fields import (
    MAX_CLIENT_ID,
    MAX_CONNECTOR,
    MAX_GROUP,
    MAX_GROUPS,
    MAX_LABEL,
    MAX_MIME,
    MAX_NAMES,
    MAX_REASON,
    MAX_ROLE,
    MAX_SESSION,
    MAX_SUMMARY,
    MAX_TOPIC,
)

from .helpers import Identity, collect

PROTOCOL = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
DOCUMENTED = set(re.findall(r"^\| `([a-z_]+)`\s*\|", PROTOCOL.split("## Error codes")[1]
                            .split("## Close codes")[0], re.M))
DEEP = "[" * 10_000 + "]" * 10_000
NESTED = "[" * 1000 + "]" * 1000  # within what a JSON reader may parse, too deep to answer


def long_group(n: int) -> str:
    """A valid group name of ``n`` characters (parts of at most 40, joined by '/')."""
    parts, left = [], n
    while left > 0:
        part = min(40, left)
        parts.append("g" * part)
        left -= part + 1
    return "/".join(parts)[:n].rstrip("/")


async def refused(call: Any, code: str) -> MeshError:
    with pytest.raises(MeshError) as err:
        await call
    assert err.value.code == code, err.value.to_dict()
    assert code in DOCUMENTED
    return err.value


def assert_too_long(err: MeshError, field: str, limit: int) -> None:
    assert err.code == "too_long"
    assert err.details["field"] == field and err.details["limit"] == limit, err.to_dict()
    assert field in err.message and str(limit) in err.message


def rows(hub: Any, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(hub.hub.config.home / "meshhub.db") as db:
        return db.execute(sql).fetchall()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


def owner(hub: Any) -> Identity:
    return Identity(hub.hub.config.home, "owner")


# -- field limits --------------------------------------------------------------------------------
async def test_hello_fields_over_their_limits_are_refused_and_register_nothing(inproc, people):
    hub = await inproc()
    (ann,) = people("ann")
    before = rows(hub, "SELECT key, name, role, groups_json FROM peers")
    cases = [
        ({"role": "r" * (MAX_ROLE + 1)}, "role", MAX_ROLE),
        ({"role": "r" * 700_000}, "role", MAX_ROLE),
        ({"connector": "c" * (MAX_CONNECTOR + 1)}, "connector", MAX_CONNECTOR),
        ({"groups": {f"g{i}": "member" for i in range(MAX_GROUPS + 1)}}, "groups", MAX_GROUPS),
        ({"groups": {f"g{i}": "member" for i in range(20_000)}}, "groups", MAX_GROUPS),
        ({"groups": {long_group(MAX_GROUP + 1): "member"}}, "group", MAX_GROUP),
        ({"groups": {"ops": "r" * (MAX_ROLE + 1)}}, "groups (a role in it)", MAX_ROLE),
        ({"session": "s" * (MAX_SESSION + 1)}, "session", MAX_SESSION),
    ]
    for options, field, limit in cases:
        err = await refused(ann.client(hub.url, **options).connect(), "too_long")
        assert_too_long(err, field, limit)
    assert rows(hub, "SELECT key, name, role, groups_json FROM peers") == before
    assert not hub.hub.directory.by_name.get("ann")
    full = {long_group(MAX_GROUP)[:-2] + f"{i:02}": "r" * MAX_ROLE for i in range(MAX_GROUPS)}
    async with ann.client(hub.url, role="r" * MAX_ROLE, groups=full) as a:  # at the limits
        assert len((await a.call("whoami"))["groups"]) == MAX_GROUPS


async def test_join_group_is_bounded_in_role_name_and_count(inproc, people):
    hub = await inproc()
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        err = await refused(a.call("join_group", group="ops", role="r" * 700_000), "too_long")
        assert_too_long(err, "role", MAX_ROLE)
        err = await refused(a.call("join_group", group=long_group(MAX_GROUP + 1)), "too_long")
        assert_too_long(err, "group", MAX_GROUP)
        for i in range(MAX_GROUPS):
            await a.call("join_group", group=f"g{i}")
        err = await refused(a.call("join_group", group="one-too-many"), "too_long")
        assert_too_long(err, "groups", MAX_GROUPS)
        await a.call("join_group", group="g0", role="lead")  # a group it is in: a new role
        groups = (await a.call("whoami"))["groups"]
        assert len(groups) == MAX_GROUPS and "ops" not in groups and groups["g0"] == "lead"
        stored = json.loads(rows(hub, "SELECT groups_json FROM peers WHERE name='ann'")[0][0])
        assert stored == groups


async def test_a_summary_over_its_limit_is_refused_not_cut(inproc, people):
    hub = await inproc()
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        await a.call("set_summary", summary="fixing the flaky test")
        err = await refused(a.call("set_summary", summary="s" * (MAX_SUMMARY + 1)), "too_long")
        assert_too_long(err, "summary", MAX_SUMMARY)
        assert (await a.call("whoami"))["summary"] == "fixing the flaky test"
        assert rows(hub, "SELECT summary FROM peers WHERE name='ann'") == [
            ("fixing the flaky test",)]
        await a.call("set_summary", summary="s" * MAX_SUMMARY)


async def test_topics_and_conversation_names_are_bounded(inproc, people):
    hub = await inproc()
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        huge = "t" * 900_000
        err = await refused(a.call("conversation_create", name="ops", topic=huge), "too_long")
        assert_too_long(err, "topic", MAX_TOPIC)
        err = await refused(a.call("conversation_topic", name="general", topic=huge), "too_long")
        assert_too_long(err, "topic", MAX_TOPIC)
        err = await refused(a.call("conversation_create", name=long_group(MAX_GROUP + 1)),
                            "too_long")
        assert_too_long(err, "name", MAX_GROUP)
        listed = {c["name"]: c["topic"] for c in await a.call("conversations")}
        assert listed == {"#general": "Everyone"}
        assert rows(hub, "SELECT name, topic FROM conversations") == [("general", "Everyone")]
        await a.call("conversation_topic", name="general", topic="t" * MAX_TOPIC)


async def test_labels_invites_reasons_media_types_and_client_ids_are_bounded(inproc, people):
    hub = await inproc()
    ann, bob = people("ann", "bob")
    async with owner(hub).client(hub.url, name="owner") as boss, \
            ann.client(hub.url) as a, bob.client(hub.url) as b:
        tokens = rows(hub, "SELECT COUNT(*) FROM tokens")
        err = await refused(a.call("token_create", label="l" * (MAX_LABEL + 1)), "too_long")
        assert_too_long(err, "label", MAX_LABEL)
        assert rows(hub, "SELECT COUNT(*) FROM tokens") == tokens

        err = await refused(boss.call("invite_create", role="r" * 700_000), "too_long")
        assert_too_long(err, "role", MAX_ROLE)
        err = await refused(boss.call("invite_create", groups={f"g{i}": "m" for i in
                                                               range(MAX_GROUPS + 1)}),
                            "too_long")
        assert_too_long(err, "groups", MAX_GROUPS)
        err = await refused(boss.call("invite_create", groups={"ops": "r" * (MAX_ROLE + 1)}),
                            "too_long")
        assert_too_long(err, "groups.ops", MAX_ROLE)
        assert rows(hub, "SELECT COUNT(*) FROM rec_invites") == [(0,)]

        asked = await a.call("approval_request", to="bob", question="deploy?")
        await collect(b, 1)
        err = await refused(b.call("approval_answer", id=asked["id"], answer="approve",
                                   reason="x" * (MAX_REASON + 1)), "too_long")
        assert_too_long(err, "reason", MAX_REASON)
        assert (await a.call("approval_get", id=asked["id"]))["state"] == "pending"

        content = base64.b64encode(b"report").decode()
        err = await refused(a.call("file_put", content=content, name="r.txt",
                                   mime="m" * (MAX_MIME + 1)), "too_long")
        assert_too_long(err, "mime", MAX_MIME)
        assert not list((hub.hub.config.home / "files").rglob("*"))

        messages = rows(hub, "SELECT COUNT(*) FROM messages")
        err = await refused(a.call("send", to="bob", text="hi",
                                   client_id="c" * (MAX_CLIENT_ID + 1)), "too_long")
        assert_too_long(err, "client_id", MAX_CLIENT_ID)
        err = await refused(a.call("send", to="bob", text="hi",
                                   mentions=["bob"] * (MAX_NAMES + 1)), "too_long")
        assert_too_long(err, "mentions", MAX_NAMES)
        assert rows(hub, "SELECT COUNT(*) FROM messages") == messages


async def test_the_schemas_show_the_limits(inproc, people):
    hub = await inproc()
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        described = {d["name"]: d["input_schema"]["properties"] for d in await a.call("actions")}
    assert described["set_summary"]["summary"]["maxLength"] == MAX_SUMMARY
    assert described["join_group"]["role"]["maxLength"] == MAX_ROLE
    assert described["conversation_topic"]["topic"]["maxLength"] == MAX_TOPIC
    assert described["token_create"]["label"]["maxLength"] == MAX_LABEL
    async with aiohttp.ClientSession() as http, http.get(hub.url + "/openapi.json") as resp:
        document = json.dumps(await resp.json())
    assert f'"maxLength": {MAX_SUMMARY}' in document and f'"maxLength": {MAX_TOPIC}' in document


async def test_a_peers_answer_stays_bounded(inproc, people):
    """A peer with every field at its maximum, after trying to go past them: its entry in
    ``peers`` stays under the bound docs/protocol.md gives (16 KB)."""
    hub = await inproc()
    ann, bob = people("ann", "bob")
    groups = {long_group(MAX_GROUP)[:-2] + f"{i:02}": "r" * MAX_ROLE for i in range(MAX_GROUPS)}
    async with ann.client(hub.url, role="r" * MAX_ROLE, groups=groups) as a, \
            bob.client(hub.url) as b:
        await a.call("set_summary", summary="s" * MAX_SUMMARY)
        for attempt in (a.call("join_group", group="extra", role="r" * 700_000),
                        a.call("set_summary", summary="s" * 700_000)):
            with pytest.raises(MeshError):
                await attempt
        listed = {p["name"]: p for p in await b.call("peers")}
    assert len(json.dumps(listed["ann"])) < 16_000


# -- clean errors --------------------------------------------------------------------------------
BAD_BODIES = [
    ("not UTF-8", b'{"to": "bob", "text": "\xff\xfe"}', 400, "malformed"),
    ("10,000 deep", DEEP.encode(), 400, "malformed"),
    ("10,000 deep inside", b'{"to": "bob", "text": ' + DEEP.encode() + b"}", 400, "malformed"),
    ("1,000 deep inside", b'{"to": "bob", "text": "x", "client_id": ' + NESTED.encode() + b"}",
     400, "malformed"),
    ("lone surrogate", b'{"to": "bob", "text": "\\ud800"}', 400, "malformed"),
    ("NaN", b'{"to": "bob", "text": NaN}', 400, "malformed"),
    ("wrong types", b'{"to": {"a": 1}, "text": 5}', 400, "invalid_request"),
    ("not an object", b'["bob", "hi"]', 400, "malformed"),
    ("too large", b'{"to": "bob", "text": "' + b"x" * (2 << 20) + b'"}', 413, "too_large"),
]


@pytest.mark.parametrize("what, body, status, code", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_http_bodies_that_choke_json_readers_get_4xx(inproc, people, caplog, what, body,
                                                           status, code):
    caplog.set_level(logging.WARNING)
    hub = await inproc()
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url):
        token = (await a.call("token_create"))["token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as http:
            for action in ("send", "set_summary"):
                async with http.post(f"{hub.url}/api/{action}", data=body,
                                     headers=headers) as resp:
                    answer = await resp.json()
                    assert (resp.status, answer["error"]["code"]) == (status, code), answer
            summary = b'{"summary": "\\ud800"}' if what == "lone surrogate" else body
            async with http.post(f"{hub.url}/api/set_summary", data=summary,
                                 headers=headers) as resp:
                assert resp.status == status
        assert (await a.call("whoami"))["summary"] == ""
    assert rows(hub, "SELECT COUNT(*) FROM messages") == [(0,)]
    assert rows(hub, "SELECT summary FROM peers WHERE name='ann'") == [("",)]
    no_tracebacks(caplog)


HOSTILE_FRAMES = [
    ("10,000 deep", DEEP),
    ("1,000 deep", '{"type": "hello", "name": ' + NESTED + "}"),
    ("lone surrogate", '{"type": "hello", "name": "\\ud800"}'),
    ("not UTF-8 inside", '{"type": "hello", "name": "\\udcff\\udcfe"}'),
    ("wrong kind", '{"type": "hello", "kind": [1]}'),
    ("wrong groups", '{"type": "hello", "groups": ["a"]}'),
    ("wrong name", '{"type": "hello", "name": 5}'),
    ("wrong token", '{"type": "hello", "token": {"a": 1}}'),
    ("wrong type", '{"type": 5}'),
]


async def _answers(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < n:
        frame = await asyncio.wait_for(ws.receive_json(), 10)
        if frame.get("type") == "error":
            out.append(frame)
    return out


async def test_hostile_frames_before_hello_get_error_frames(inproc, caplog):
    caplog.set_level(logging.WARNING)
    hub = await inproc()
    async with aiohttp.ClientSession() as http:
        for what, frame in HOSTILE_FRAMES:
            async with http.ws_connect(ws_url(hub.url)) as ws:
                assert (await ws.receive_json())["type"] == "challenge"
                await ws.send_str(frame)
                (answer,) = await _answers(ws, 1)
                assert answer["code"] in DOCUMENTED - {"internal"}, (what, answer)
    assert hub.hub.directory.peers == {}
    no_tracebacks(caplog)


async def test_signed_hellos_with_wrong_types_are_refused_cleanly(inproc, caplog):
    """Past the signature check, each field of a hello is read with its type in mind."""
    caplog.set_level(logging.WARNING)
    hub = await inproc()
    key = SigningKey.generate()
    wrong = [{"kind": ["agent"]}, {"groups": ["ops"]}, {"groups": {"ops": 5}}, {"name": 5},
             {"connector": {"a": 1}}, {"role": 5}, {"session": ["s"]}, {"receive": "x"},
             {"invite": 5}, {"member_name": []}, {"attestation": "x"}, {"member_key": 5},
             {"ts": "1"}, {"audience": 5}, {"nonce": ["x"]}, {"token": 5},
             {"groups": {"": "lead"}}]
    async with aiohttp.ClientSession() as http:
        for fields in wrong:
            async with http.ws_connect(ws_url(hub.url)) as ws:
                nonce = (await ws.receive_json())["nonce"]
                hello = {"type": "hello", "name": "zed", "nonce": nonce,
                         "audience": audience(hub.url), **fields}
                await ws.send_str(json.dumps(sign_hello(key, hello)))
                (answer,) = await _answers(ws, 1)
                assert answer["code"] in DOCUMENTED - {"internal"}, (fields, answer)
    assert hub.hub.directory.peers == {}
    no_tracebacks(caplog)


AFTER_HELLO = [
    ('{"type": "call", "action": "whoami", "id": ' + NESTED + "}", "malformed"),
    (DEEP, "malformed"),
    ('{"type": "call", "id": 1, "action": "set_summary", "params": {"summary": "\\ud800"}}',
     "malformed"),
    ('{"type": "call", "id": 2, "action": "send", "params": {"to": "bob", "text": "\\udfff"}}',
     "malformed"),
    ('{"type": "call", "id": 3, "action": "send", "params": {"to": "bob", "text": "x", '
     '"client_id": ' + NESTED + "}}", "malformed"),
    ('{"type": "call", "id": 4, "action": "send", "params": {"to": 5, "text": []}}',
     "invalid_request"),
    ('{"type": "call", "id": 5, "action": ["send"]}', "malformed"),
    ('{"type": "ack", "ids": [' + NESTED + "]}", "malformed"),
]


async def test_hostile_frames_after_hello_get_error_frames_and_the_connection_lives(
        inproc, people, caplog):
    caplog.set_level(logging.WARNING)
    hub = await inproc()
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        for frame, code in AFTER_HELLO:
            await a.send_frame(frame)
            answer = await asyncio.wait_for(a.errors.get(), 10)
            assert answer["code"] == code, (frame[:80], answer)
        await a.send("bob", "still here")
        assert (await collect(b, 1))[0]["text"] == "still here"
        assert (await a.call("whoami"))["summary"] == ""
    assert rows(hub, "SELECT COUNT(*) FROM messages") == [(1,)]
    no_tracebacks(caplog)


async def test_the_web_pages_socket_answers_hostile_frames_with_errors(inproc, people, caplog):
    caplog.set_level(logging.WARNING)
    hub = await inproc()
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url):
        link = await a.call("web_login_create")
    async with aiohttp.ClientSession() as http:
        async with http.get(hub.url + link["path"], allow_redirects=False,
                            headers={"Sec-Fetch-Site": "none"}) as resp:
            page = re.search(r'name=meshhub-session content="([^"]+)"', await resp.text())
            cookie = next(f"{k}={m.value}" for k, m in resp.cookies.items())
        assert page is not None
        async with http.ws_connect(hub.url + "/web/ws",
                                   protocols=("meshhub.v1", "session." + page.group(1)),
                                   headers={"Cookie": cookie, "Origin": hub.url}) as ws:
            for frame, code in AFTER_HELLO:
                await ws.send_str(frame)
                (answer,) = await _answers(ws, 1)
                assert answer["code"] == code, (frame[:80], answer)
    assert rows(hub, "SELECT COUNT(*) FROM messages") == [(0,)]
    no_tracebacks(caplog)


async def test_plugin_routes_answer_hostile_bodies_without_5xx(inproc, people, caplog):
    caplog.set_level(logging.WARNING)
    hub = await inproc()
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        token = (await a.call("token_create"))["token"]
    mcp = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
           "Accept": "application/json, text/event-stream"}
    bodies = [DEEP.encode(), b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "x": "\xff"}',
              b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": '
              b'"set_summary", "arguments": {"summary": "\\ud800"}}}', b"\xff" * 100]
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(hub.url + "/mcp", data=body, headers=mcp) as resp:
                assert 400 <= resp.status < 500, (body[:40], resp.status)
            async with http.post(hub.url + "/web/join", data=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Origin": hub.url}) as resp:
                assert resp.status < 500
            async with http.post(hub.url + "/web/logout", data=body,
                                 headers={"Origin": hub.url}) as resp:
                assert resp.status < 500
        for query in ("code=%ED%A0%80", "code=%FF%FE", "code=" + "%5B" * 5000):
            async with http.get(f"{hub.url}/web/login?{query}",
                                headers={"Sec-Fetch-Site": "none"}) as resp:
                assert resp.status < 500
            async with http.post(f"{hub.url}/web/join?{query}", data=f"name=x&{query}",
                                 headers={"Origin": hub.url, "Content-Type":
                                          "application/x-www-form-urlencoded"}) as resp:
                assert resp.status < 500
    assert (await asyncio.to_thread(rows, hub, "SELECT summary FROM peers WHERE name='ann'")
            ) == [("",)]
    no_tracebacks(caplog)


async def test_the_hook_socket_shrugs_off_hostile_lines(tmp_path, caplog):
    from meshhub_mcp.hook_server import HookServer

    caplog.set_level(logging.WARNING)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))

    async def call(action: str, **params: Any) -> Any:
        return {}

    server = HookServer(tmp_path, "s1", call, lambda: True)
    await server.start()
    try:
        for line in (DEEP.encode(), b'{"event": "\\ud800"}', b"\xff\xfe", NESTED.encode()):
            reader, writer = await asyncio.open_unix_connection(str(server.path))
            writer.write(line + b"\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
    finally:
        await server.stop()
    assert errors == []
    no_tracebacks(caplog)


# -- the smaller leaks ---------------------------------------------------------------------------
async def test_a_files_name_is_the_one_its_reader_was_given(inproc, people):
    hub = await inproc()
    ann, bob = people("ann", "bob")
    content = base64.b64encode(b"quarterly numbers").decode()
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        mine = await a.call("file_put", content=content, name="acquisition-plan.pdf")
        theirs = await b.call("file_put", content=content, name="notes.txt")
        assert mine["file"] == theirs["file"]
        got = await b.call("file_get", id=theirs["file"])
        assert got["name"] == "notes.txt" and "acquisition" not in json.dumps(got)
        assert (await a.call("file_get", id=mine["file"]))["name"] == "acquisition-plan.pdf"
        assert [f["name"] for f in await b.call("files")] == ["notes.txt"]


async def test_a_file_put_that_cannot_be_sent_keeps_nothing(inproc, people):
    hub = await inproc()
    ann, bob, eve = people("ann", "bob", "eve")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b, eve.client(hub.url) as e:
        private = await a.send("bob", "just between us")
        await collect(b, 1)
        data = b"eve's upload"
        content = base64.b64encode(data).decode()
        await refused(e.call("file_put", content=content, name="x.txt",
                             reply_to=private["id"]), "not_found")
        await refused(e.call("file_put", content=content, name="x.txt", to="nobody-here"),
                      "unknown_target")
        assert not list((hub.hub.config.home / "files").rglob("*"))
        assert await hub.hub.records.count("files") == 0
        assert await e.call("files") == []
        digest = hashlib.sha256(data).hexdigest()
        await refused(e.call("file_get", id=digest), "not_found")
        sent = await e.call("file_put", content=content, name="x.txt", to="bob")
        assert sent["sent"]["id"] and sent["file"] == digest
        got = await collect(b, 1)
        assert got[0]["attachments"][0]["file"] == digest
        assert (await b.call("file_get", id=digest))["name"] == "x.txt"


def test_loopback_names_match_exactly():
    for host in ("localhost", "LOCALHOST:7420", "app.localhost", "127.0.0.1", "127.5.6.7:80",
                 "[::1]:7420", "::1"):
        assert is_loopback(host), host
    for host in ("localhost.attacker.example", "127.evil.example", "127.0.0.1.nip.io",
                 "localhostx", "evil-localhost", "0x7f.0.0.1", "[::1].evil.example",
                 "localhost.:7420.evil.example"):
        assert not is_loopback(host), host



def test_a_chat_call_reads_its_values_as_safe_json_or_as_text():
    """``/call`` on Telegram or Slack: a value that is JSON the hub cannot keep (a lone
    surrogate, nesting a JSON reader cannot follow) stays the text it was, never an error."""
    action, params = parse_call("set_summary summary='\"\\ud800\"' n=3 groups='{\"a\": \"b\"}'")
    assert (action, params["n"], params["groups"]) == ("set_summary", 3, {"a": "b"})
    assert params["summary"] == '"\\ud800"'
    deep = "[" * 3000 + "]" * 3000
    assert parse_call(f"whoami x={deep}")[1] == {"x": deep}


async def test_a_body_that_is_not_utf8_text_is_refused_on_every_path(inproc, people):
    """The WebSocket and HTTP refuse a lone surrogate as they read JSON; a connector inside the
    hub that hands one over (its platform's JSON reader let it through) is refused too."""
    hub = await inproc()
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url), bob.client(hub.url):
        sender = hub.hub.directory.find("ann")
        err = await refused(hub.hub.send(sender, "bob", "hi \ud800"), "malformed")
        assert "surrogate" in err.message
    assert rows(hub, "SELECT COUNT(*) FROM messages") == [(0,)]
