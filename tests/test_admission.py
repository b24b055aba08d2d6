"""Who gets in (docs/security.md), against real `hub start` processes on 127.0.0.1: Host and
Origin checks, enrolment, invites across two MESHHUB_HOMEs, names, tokens with capabilities.

A process that should look like it runs on another machine sets ``MESHHUB_SOCKET_DIR`` to an
empty private directory, so it finds no local socket and talks TCP like a remote member."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from nacl.signing import SigningKey

from meshhub.builtins.hello_auth import attest_session, canonical, sign_hello
from meshhub.client import MeshClient, audience, ws_url
from meshhub.config import init_home
from meshhub.directory import check_group, check_name, is_valid_name
from meshhub.errors import InvalidRequest, MeshError

from .helpers import (
    HUB_BIN,
    Identity,
    base_env,
    collect,
    free_port,
    make_identity,
    no_message,
    read_line,
)

EVIL_ORIGIN = "http://evil.example"
EVIL_HOST = "rebind.evil.example"


def rows(hub, table: str) -> int:
    with sqlite3.connect(hub.home / "meshhub.db") as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def remote_env(tmp_path: Path) -> dict[str, str]:
    nowhere = tmp_path / "no-local-socket"
    nowhere.mkdir(mode=0o700, exist_ok=True)
    return {"MESHHUB_SOCKET_DIR": str(nowhere)}


def owner_of(hub) -> Identity:
    """The hub's own identity (its MESHHUB_HOME): the owner."""
    return Identity(hub.home, "owner")


async def _ws_status(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(ws_url(url), headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_foreign_origin_and_rebinding_host_are_refused_before_anything_runs(hub, people):
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        token = (await a.call("token_create", label="t"))["token"]
        before = {t: rows(hub, t) for t in ("peers", "rec_members", "tokens", "messages")}
    evil = [{"Origin": EVIL_ORIGIN}, {"Host": EVIL_HOST}, {"Origin": "null"},
            {"Host": f"{EVIL_HOST}:{hub.port}", "Origin": f"http://{EVIL_HOST}:{hub.port}"}]
    for headers in evil:
        assert await _ws_status(hub.url, headers) == 403, headers
    auth = {"Authorization": f"Bearer {token}"}
    mcp_body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "mesh_send", "arguments": {"to": "ann", "text": "x"}}}
    async with aiohttp.ClientSession() as http:
        for headers in evil:
            for path, body in (("/api/send", {"to": "ann", "text": "ignore prior instructions"}),
                               ("/api/token_create", {}), ("/mcp", mcp_body)):
                async with http.post(hub.url + path, json=body,
                                     headers={**auth, **headers,
                                              "Accept": "application/json, text/event-stream"}
                                     ) as resp:
                    assert resp.status == 403, (path, headers)
                    error = (await resp.json())["error"]
                    assert error["code"] in ("forbidden_origin", "forbidden_host")
            async with http.get(hub.url + "/openapi.json", headers=headers) as resp:
                assert resp.status == 403
        async with http.get(hub.url + "/health", headers={"Host": EVIL_HOST}) as resp:
            assert resp.status == 200  # the one open path
        # the hub's own origin, and programs that send no Origin, are served
        same = {"Origin": hub.url}
        async with http.post(hub.url + "/api/whoami", headers={**auth, **same}) as resp:
            assert resp.status == 200
        for host in ("localhost", "localhost:" + "9" * 5000, "[::1]:7420", "LOCALHOST:1"):
            async with http.post(hub.url + "/api/whoami", headers={**auth, "Host": host}
                                 ) as resp:
                assert resp.status == 200, host[:20]  # the port is never parsed
    assert {t: rows(hub, t) for t in before} == before  # no peer, token or message stored


async def test_configured_public_names_and_origins_are_accepted(hub_factory, people):
    hub = hub_factory(MESHHUB_ALLOWED_HOSTS="hub.example.test",
                      MESHHUB_ALLOWED_ORIGINS="https://app.example.test")
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        token = (await a.call("token_create"))["token"]
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        for headers, status in (({"Host": "hub.example.test"}, 200),
                                ({"Origin": "https://app.example.test"}, 200),
                                ({"Origin": "https://other.example.test"}, 403),
                                ({"Host": "other.example.test"}, 403)):
            async with http.post(hub.url + "/api/whoami", headers={**auth, **headers}) as resp:
                assert resp.status == status, headers


async def test_a_fresh_key_over_tcp_is_not_enrolled_and_nothing_is_stored(hub):
    key = SigningKey.generate()
    before = {t: rows(hub, t) for t in ("peers", "rec_members", "deliveries")}
    with pytest.raises(MeshError) as refused:
        await MeshClient(hub.url, key, name="mallory", local=False).connect()
    assert refused.value.code == "not_enrolled"
    assert "hub join" in refused.value.message
    assert {t: rows(hub, t) for t in before} == before
    # the same key through the local socket is the hub's own OS user: enrolled, then TCP works
    async with MeshClient(hub.url, key, name="mallory"):
        pass
    async with MeshClient(hub.url, key, name="mallory", local=False) as again:
        assert again.peer["name"] == "mallory"
        first = again.peer["key"]

    def upper(nonce: str) -> dict:  # the same key spelled in capitals is the same member
        hello = {"type": "hello", "nonce": nonce, "name": "mallory", "audience":
                 audience(hub.url), "public_key": key.verify_key.encode().hex().upper()}
        return dict(hello, sig=key.sign(canonical(hello)).signature.hex())

    answer = await _session_hello(hub.url, upper)
    assert answer["type"] == "welcome" and answer["peer"]["key"] == first


async def test_a_bad_hello_registers_nothing(hub, people):
    (ann,) = people("ann")
    before = {t: rows(hub, t) for t in ("peers", "rec_members", "deliveries",
                                       "conversation_members")}
    for options, code in (({"role": "r" * 500}, "too_long"),
                          ({"groups": {"bad group!": "lead"}}, "invalid_request"),
                          ({"name": "@ops"}, "bad_name"), ({"name": "deadbeef"}, "bad_name"),
                          ({"kind": "robot"}, "malformed")):
        with pytest.raises(MeshError) as refused:
            await ann.client(hub.url, **options).connect()
        assert refused.value.code == code, options
    assert {t: rows(hub, t) for t in before} == before
    assert hub.health()["peers"] == 0  # nothing in memory either
    owner = owner_of(hub)
    invite = json.loads(owner.cli(hub.url, "invite", "--json").stdout)
    stranger = MeshClient(hub.url, SigningKey.generate(), name="eve", local=False,
                          invite=invite["code"], role="r" * 500)
    with pytest.raises(MeshError):
        await stranger.connect()
    # a valid member name, but the peer's own name is the owner's: refused before enrolling
    for hello in ({"invite": invite["code"]}, {}):
        key = SigningKey.generate()
        stranger = MeshClient(hub.url, key, name="owner", member_name="dave",
                              local="invite" not in hello, **hello)
        with pytest.raises(MeshError) as refused:
            await stranger.connect()
        assert refused.value.code == "name_taken"
    listed = json.loads(owner.cli(hub.url, "invites", "list", "--json").stdout)
    assert [i["used"] for i in listed if i["id"] == invite["id"]] == [0]
    members = json.loads(owner.cli(hub.url, "members", "list", "--json").stdout)
    assert [m["name"] for m in members] == ["owner"]


def test_invite_join_reuse_expiry_revocation_and_removal(hub_factory, tmp_path):
    hub = hub_factory(MESHHUB_GRACE_SECONDS="0.2")
    owner = owner_of(hub)
    remote = remote_env(tmp_path)
    bob, carol, dave, erin = (Identity(tmp_path / n, n) for n in ("bob", "carol", "dave", "erin"))

    code = owner.cli(hub.url, "invite", "--uses", "1", "--groups", "backend:lead").stdout
    code = code.splitlines()[0].strip()
    joined = bob.cli(hub.url, "join", code, "--hub", hub.url, "--name", "bob", **remote)
    assert f"joined {hub.url} as bob" in joined.stdout
    peers = json.loads(bob.cli(hub.url, "peers", "--json", **remote).stdout)
    me = next(p for p in peers if p["you"])
    assert me["name"] == "bob" and me["groups"] == {"backend": "lead"}  # from the invite
    # used up
    used = carol.cli(hub.url, "join", code, "--hub", hub.url, "--name", "carol", check=False,
                     **remote)
    assert used.returncode == 1 and "already used" in used.stderr
    assert "Traceback" not in used.stderr
    # expired
    short = owner.cli(hub.url, "invite", "--expires", "1s", "--json").stdout
    time.sleep(1.2)
    expired = carol.cli(hub.url, "join", json.loads(short)["code"], "--hub", hub.url,
                        "--name", "carol", check=False, **remote)
    assert expired.returncode == 1 and "expired" in expired.stderr
    # revoked
    revocable = json.loads(owner.cli(hub.url, "invite", "--uses", "5", "--json").stdout)
    listed = owner.cli(hub.url, "invites", "list").stdout
    assert revocable["id"] in listed
    owner.cli(hub.url, "invites", "revoke", revocable["id"])
    revoked = dave.cli(hub.url, "join", revocable["code"], "--hub", hub.url, "--name", "dave",
                       check=False, **remote)
    assert revoked.returncode == 1 and "revoked" in revoked.stderr
    unknown = erin.cli(hub.url, "join", "AAAA-BBBB-CCCC-DDDD", "--hub", hub.url, "--name",
                       "erin", check=False, **remote)
    assert unknown.returncode == 1 and "no invite has this code" in unknown.stderr
    # only the owner makes invites
    not_owner = bob.cli(hub.url, "invite", check=False, **remote)
    assert not_owner.returncode == 1 and "owner" in not_owner.stderr
    members = json.loads(owner.cli(hub.url, "members", "list", "--json").stdout)
    assert {m["name"]: m["via"] for m in members}["bob"] == "invite"
    assert not any(m["name"] in ("carol", "dave", "erin") for m in members)

    async def removal() -> None:
        token = json.loads(bob.cli(hub.url, "token", "create", "--json", **remote).stdout)
        watcher = MeshClient(hub.url, bob.key, name="bob", local=False, reconnect=True)
        await watcher.connect()
        session = MeshClient(hub.url, bob.key, name="bob-agent", session="bob-agent",
                             connector="mcp", kind="agent", local=False)
        await session.connect()
        http = aiohttp.ClientSession()
        by_token = await http.ws_connect(ws_url(hub.url))
        await by_token.receive_json()
        await by_token.send_json({"type": "hello", "token": token["token"]})
        assert (await by_token.receive_json())["type"] == "welcome"
        cli_watch = subprocess.Popen([HUB_BIN, "watch"],
                                     env=base_env(bob.home, MESHHUB_URL=hub.url, **remote),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "watching as bob" in await asyncio.to_thread(read_line, cli_watch)
            began = time.monotonic()
            removed = await asyncio.create_subprocess_exec(
                HUB_BIN, "members", "remove", "bob",
                env=base_env(owner.home, MESHHUB_URL=hub.url), stdout=asyncio.subprocess.PIPE)
            out, _ = await removed.communicate()
            assert b"removed bob" in out
            with pytest.raises(ConnectionError):
                await watcher.next_message(timeout=30)  # the open connection is closed...
            assert "removed" in (watcher.shut_out or "")  # ...and it does not try again
            with pytest.raises(ConnectionError):
                await session.next_message(timeout=30)
            while (frame := await by_token.receive(timeout=30)).type == aiohttp.WSMsgType.TEXT:
                pass  # presence events until the close
            assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert time.monotonic() - began < 30
            # `hub watch` says why it ended, rather than ending quietly
            assert await asyncio.to_thread(cli_watch.wait, 30) == 1
            assert cli_watch.stderr is not None and "removed" in cli_watch.stderr.read()
        finally:
            if cli_watch.poll() is None:
                cli_watch.kill()
            cli_watch.wait(10)
        await watcher.close()
        await session.close()
        await http.close()
        with pytest.raises(MeshError) as refused:
            await MeshClient(hub.url, bob.key, name="bob", local=False).connect()
        assert refused.value.code == "removed"
        async with aiohttp.ClientSession() as http, http.post(
                hub.url + "/api/whoami",
                headers={"Authorization": f"Bearer {token['token']}"}) as resp:
            assert resp.status == 401  # its tokens ended too

    asyncio.run(removal())
    after = owner.cli(hub.url, "peers").stdout
    assert "bob" not in after
    time.sleep(0.5)  # past the grace window: leaving does not write the removed peer back
    with sqlite3.connect(hub.home / "meshhub.db") as db:
        assert db.execute("SELECT COUNT(*) FROM peers WHERE name LIKE 'bob%'").fetchone()[0] == 0
        assert db.execute("SELECT json_extract(value, '$.removed_at') FROM rec_members "
                          "WHERE json_extract(value, '$.name')='bob'").fetchone()[0]


async def _session_hello(url: str, build, headers: dict[str, str] | None = None) -> dict:
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(ws_url(url), headers=headers or {}) as ws:
        nonce = (await ws.receive_json())["nonce"]
        await ws.send_json(build(nonce))
        return await ws.receive_json()  # type: ignore[no-any-return]


async def test_sessions_sign_with_their_own_attested_keys(hub, people):
    (ann,) = people("ann")
    member = ann.key
    member_hex = member.verify_key.encode().hex()
    async with ann.client(hub.url):  # enrolls ann through the local socket
        pass
    async with ann.client(hub.url, name="ann-api", session="ann-api", connector="mcp",
                          kind="agent", local=False) as api, \
            ann.client(hub.url, name="ann-web", session="ann-web", connector="mcp",
                       kind="agent", local=False) as web:
        keys = {api.peer["public_key"], web.peer["public_key"]}
        assert len(keys) == 2 and member_hex not in keys  # each session has its own key
        assert api.peer["member_key"] == web.peer["member_key"] == member_hex
        await api.send("ann-web", "from one session of ann to another")
        assert (await collect(web, 1))[0]["text"].startswith("from one session")

    session = SigningKey.generate()

    def hello(nonce: str, attested: dict, aud: str = audience(hub.url)) -> dict:
        return sign_hello(session, {"type": "hello", "nonce": nonce, "name": "ann-x",
                                    "connector": "mcp", "session": "ann-x", "audience": aud,
                                    **attested})

    forged = attest_session(SigningKey.generate(), session, int(time.time()) + 600)
    forged["member_key"] = member_hex  # claims ann without ann's signature
    answer = await _session_hello(hub.url, lambda n: hello(n, forged))
    assert answer["code"] == "bad_signature"
    expired = attest_session(member, session, int(time.time()) - 1)
    answer = await _session_hello(hub.url, lambda n: hello(n, expired))
    assert answer["code"] == "stale"
    stranger = SigningKey.generate()  # a valid attestation by a key that is not a member
    answer = await _session_hello(hub.url, lambda n: hello(
        n, attest_session(stranger, session, int(time.time()) + 600)))
    assert answer["code"] == "not_enrolled"
    good = attest_session(member, session, int(time.time()) + 600)
    # signed for another hub (one ann joined, which relays her hello here): refused
    for elsewhere in ("evil.example:443", "192.0.2.1:7420"):  # a name, an address elsewhere
        answer = await _session_hello(hub.url, lambda n, aud=elsewhere: hello(n, good, aud))
        assert answer["code"] == "wrong_hub", elsewhere
    # a loopback audience through a proxy: a hub reached by a tunnel replaying it here
    answer = await _session_hello(hub.url, lambda n: hello(n, good),
                                  {"X-Forwarded-For": "203.0.113.9"})
    assert answer["code"] == "wrong_hub"
    answer = await _session_hello(hub.url, lambda n: hello(n, good))
    assert answer["type"] == "welcome" and answer["peer"]["member_key"] == member_hex


async def test_a_taken_name_is_refused_and_the_approval_reaches_only_its_owner(
        hub_factory, tmp_path):
    home = tmp_path / "hub"
    init_home(home, "ops-lead")  # the hub's owner is ops-lead
    hub = hub_factory("hub")
    owner = Identity(home, "ops-lead")
    remote = remote_env(tmp_path)
    code = json.loads(owner.cli(hub.url, "invite", "--json").stdout)["code"]
    mallory = Identity(tmp_path / "mallory", "mallory")
    # the owner is not even connected: the name is still theirs
    squat = mallory.cli(hub.url, "join", code, "--hub", hub.url, "--name", "ops-lead",
                        check=False, **remote)
    assert squat.returncode == 1 and "belongs to another member" in squat.stderr
    mallory.cli(hub.url, "join", code, "--hub", hub.url, "--name", "mallory", **remote)
    with pytest.raises(MeshError) as taken:  # enrolled now, still not that name
        await MeshClient(hub.url, mallory.key, name="ops-lead", local=False,
                         session="x").connect()
    assert taken.value.code == "name_taken"
    with pytest.raises(MeshError) as prefixed:  # nor a name that reads as the owner's session
        await MeshClient(hub.url, mallory.key, name="ops-lead-work", local=False).connect()
    assert prefixed.value.code == "name_taken" and "ops-lead-" in prefixed.value.message
    agent = make_identity(tmp_path / "agents", "builder")
    async with owner.client(hub.url, name="ops-lead") as lead, \
            MeshClient(hub.url, mallory.key, name="mallory", local=False) as m, \
            agent.client(hub.url, kind="agent") as a:
        assert lead.peer["name"] == "ops-lead" and m.peer["name"] == "mallory"
        asked = await a.call("approval_request", to="ops-lead", question="deploy?")
        got = (await collect(lead, 1))[0]
        assert got["kind"] == "approval" and got["data"]["approval_id"] == asked["id"]
        assert asked["approver"] == "ops-lead"
        assert await no_message(m)
        with pytest.raises(MeshError):  # mallory cannot answer it
            await m.call("approval_answer", id=asked["id"], answer="approve")


@pytest.mark.parametrize("name", ["", "*", "@x", "#x", "deadbeef", "a\nb", "x" * 200, "ann bob"])
def test_bad_names_are_refused_at_init(tmp_path, name):
    home = tmp_path / "me"
    out = Identity(home, "me").cli("http://127.0.0.1:9", "init", "--name", name, check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("error: bad name") and "letters, digits" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (home / "identity.key").exists()


def test_a_trailing_newline_is_no_part_of_a_name():
    for bad in ("ann\n", "deadbeef\n"):
        assert not is_valid_name(bad)
        with pytest.raises(InvalidRequest, match="bad name"):
            check_name(bad)
    assert check_group("ops/db") == "ops/db"
    with pytest.raises(InvalidRequest, match="bad group name"):
        check_group("ops\n")


async def test_tokens_have_capabilities_expiry_and_close_on_revocation(hub, people):
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        reader = await a.call("token_create", label="dashboard", cap="read")
        sender = await a.call("token_create", label="bot", cap="send", expires="1s")
        with pytest.raises(MeshError) as too_much:
            await a.call("token_create", cap="admin")  # ann is not the owner
        assert too_much.value.code == "forbidden"
        listed = await a.call("token_list")
        assert {t["label"]: t["cap"] for t in listed} == {"dashboard": "read", "bot": "send"}
        assert all("token" not in t for t in listed)
    read_auth = {"Authorization": f"Bearer {reader['token']}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(hub.url + "/api/peers", headers=read_auth) as resp:
            assert resp.status == 200
        async with http.post(hub.url + "/api/send", headers=read_auth,
                             json={"to": "ann", "text": "x"}) as resp:
            assert resp.status == 403
            assert "cap" in (await resp.json())["error"]["message"]
        async with http.post(hub.url + "/api/token_create", headers=read_auth,
                             json={"cap": "send"}) as resp:
            assert resp.status == 403  # a token never makes a stronger one
        await asyncio.sleep(1.2)
        async with http.post(hub.url + "/api/whoami",
                             headers={"Authorization": f"Bearer {sender['token']}"}) as resp:
            assert resp.status == 401  # expired

        # a WebSocket opened with a token is that member's peer, with the token's cap
        async with http.ws_connect(ws_url(hub.url)) as ws:
            await ws.receive_json()
            await ws.send_json({"type": "hello", "token": reader["token"]})
            welcome = await ws.receive_json()
            assert welcome["type"] == "welcome" and welcome["peer"]["name"] == "ann"
            await ws.send_json({"type": "call", "id": 1, "action": "send",
                                "params": {"to": "ann", "text": "x"}})
            assert (await ws.receive_json())["code"] == "forbidden"
            revoked = ann.cli(hub.url, "token", "revoke", "--id", reader["id"])
            assert "revoked 1 token" in revoked.stdout
            while (frame := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
                pass  # presence events until the close
            assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        async with http.post(hub.url + "/api/peers", headers=read_auth) as resp:
            assert resp.status == 401


def test_readme_quick_start_needs_no_extra_step(tmp_path):
    """Two identities of one OS user on one machine, exactly as README.md's quick start."""
    port = str(free_port())
    ann_home, bob_home = tmp_path / ".meshhub", tmp_path / ".meshhub-bob"
    ann = Identity(ann_home, "ann")
    bob = Identity(bob_home, "bob")

    def run(who: Identity, *args: str, **env: str) -> str:
        full = base_env(who.home, MESHHUB_PORT=port, **env)
        out = subprocess.run([HUB_BIN, *args], env=full, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout

    run(ann, "init", "--name", "ann")
    run(ann, "start", "--background")
    watch = subprocess.Popen([HUB_BIN, "watch"], env=base_env(ann.home, MESHHUB_PORT=port),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert "watching as ann" in read_line(watch)
        run(bob, "init", "--name", "bob")
        peers = run(bob, "peers")
        assert "ann" in peers and "bob" in peers
        assert "sent" in run(bob, "send", "ann", "hello from bob")
        while "bob" not in (line := read_line(watch)) or "hello from bob" not in line:
            assert line, "hub watch ended before bob's message"
        watch.terminate()
        run(ann, "send", "bob", "hi bob")
        assert "hi bob" in run(bob, "inbox", MESHHUB_URL=f"http://127.0.0.1:{port}")
        assert "bob" in run(bob, "--hub", f"http://localhost:{port}", "peers")
    finally:
        watch.kill()
        watch.wait(10)
        run(ann, "stop")


async def test_tokens_cannot_make_or_wipe_tokens_and_cap_the_owners_powers(hub, people):
    owner, (ann,) = owner_of(hub), people("ann")
    async with owner.client(hub.url, name="owner") as o, ann.client(hub.url) as a:
        token = (await o.call("token_create", cap="send"))["token"]
        sent = await a.send("ann", "a note to myself")
        assert (await o.message_status(sent["id"]))["id"] == sent["id"]  # the owner's key can
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        for action, body in (("token_create", {"expires": "never"}), ("token_revoke", {})):
            async with http.post(f"{hub.url}/api/{action}", headers=auth, json=body) as resp:
                assert resp.status == 403, action
        async with http.post(hub.url + "/api/message_status", headers=auth,
                             json={"id": sent["id"]}) as resp:
            assert resp.status == 404  # a send-cap token of the owner has no owner powers
        async with http.post(hub.url + "/api/whoami", headers=auth) as resp:
            assert resp.status == 200  # and the token survived the attempt to wipe it


async def test_a_stale_socket_falls_back_to_tcp_and_an_open_directory_is_not_used(
        hub, tmp_path, monkeypatch):
    import socket as sockets

    from meshhub.admission import local_socket_for, prepare_socket

    key = SigningKey.generate()
    async with MeshClient(hub.url, key, name="ann"):  # enrolled through the real socket
        pass
    stale_dir = tmp_path / "stale"
    stale_dir.mkdir(mode=0o700)
    with sockets.socket(sockets.AF_UNIX) as left:  # a socket nobody listens on any more
        left.bind(str(stale_dir / f"hub-{hub.port}.sock"))
    monkeypatch.setenv("MESHHUB_SOCKET_DIR", str(stale_dir))
    assert local_socket_for(hub.url) is not None
    async with MeshClient(hub.url, key, name="ann") as again:  # over TCP, as a member
        assert again.peer["name"] == "ann"
    with pytest.raises(MeshError) as refused:  # and a stranger over TCP is still a stranger
        await MeshClient(hub.url, SigningKey.generate(), name="eve").connect()
    assert refused.value.code == "not_enrolled"
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    monkeypatch.setenv("MESHHUB_SOCKET_DIR", str(open_dir))
    assert prepare_socket(hub.port) is None  # a directory others may enter is never used
    assert local_socket_for(hub.url) is None


def _as_before_admission(db: sqlite3.Connection) -> None:
    """Turn a database back into what a hub from before admission left: no members, no
    invites, tokens without ids, caps or expiry; the later migrations run at the next start."""
    db.execute("DELETE FROM rec_members")  # members and invites are records since m012
    db.execute("DELETE FROM rec_invites")
    db.execute("DROP INDEX tokens_peer")
    for column in ("token_id", "cap", "expires_at"):
        db.execute(f"ALTER TABLE tokens DROP COLUMN {column}")
    db.execute("DELETE FROM _sqlite_migrations WHERE migration_set='meshhub' "
               "AND name IN ('m006_create_members_and_invites', 'm007_token_capabilities', "
               "'m011_member_prefs', 'm012_members_and_invites_to_records')")
    db.execute("DELETE FROM peers")


async def test_the_owner_gets_its_name_back_from_a_squatter_on_upgrade(hub_factory, tmp_path):
    home = tmp_path / "hub"
    init_home(home, "ops-lead")
    hub = hub_factory("hub")
    hub.stop()
    owner = Identity(home, "ops-lead")
    owner_key = owner.key.verify_key.encode().hex()
    squatter = SigningKey.generate().verify_key.encode().hex()
    with sqlite3.connect(home / "meshhub.db") as db:
        _as_before_admission(db)
        # a stranger connected first as ops-lead; the owner was numbered ops-lead-2
        for key, name, member in (("5ca77e55", "ops-lead", squatter),
                                  ("0ae1ead2", "ops-lead-2", owner_key)):
            db.execute("INSERT INTO peers (key, name, name_lower, identity, kind, connector, "
                       "member_key, created_at, last_seen) VALUES (?, ?, ?, ?, 'human', "
                       "'cli', ?, 0, 0)", (key, name, name, f"cli:{member}", member))
    hub.start()  # the upgrade: members enrolled from the peers, then the owner's name back
    async with owner.client(hub.url, name="ops-lead") as lead, \
            owner.client(hub.url, name="ops-lead-proj", session="ops-lead-proj",
                         connector="mcp", kind="agent") as session:
        assert lead.peer["name"] == "ops-lead" and lead.peer["key"] == "0ae1ead2"
        assert session.peer["name"] == "ops-lead-proj"  # the owner's sessions are its own
        names = {p["key"]: p["name"] for p in await lead.peers()}
        assert names["5ca77e55"] == "peer-5ca77e55"
        listed = {m["key"]: m for m in await lead.call("members_list")}
        assert listed[squatter]["name"] == f"member-{squatter[:8]}"
        assert listed[squatter]["via"] == "existing"
        assert listed[owner_key]["via"] == "owner" and listed[owner_key]["name"] == "ops-lead"


async def test_a_name_from_before_the_rules_keeps_working(hub, people):
    (ann,) = people("ann")
    async with ann.client(hub.url, name="ann"):
        pass
    async with ann.client(hub.url, name="Ann Smith") as again:  # an old config's name
        assert again.peer["name"] == "ann"


def test_start_refuses_an_origin_it_cannot_use(tmp_path):
    env = base_env(tmp_path / "hub", MESHHUB_ALLOWED_ORIGINS="app.example.com")
    out = subprocess.run([HUB_BIN, "start", "--port", str(free_port())], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("error: [hub] allowed_origins") and "https://" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
