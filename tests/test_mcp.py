"""The MCP connector end to end: real `hub mcp` subprocesses and the hub's /mcp endpoint, driven by
the real `mcp` client library, against a real hub process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client import NotificationBinding
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel, ConfigDict

from meshhub_mcp import tool_docs
from meshhub_mcp.sdk import CHANNEL_METHOD
from meshhub_mcp.tools import HUB_ADMIN_ACTIONS

from .helpers import HUB_BIN, Identity, base_env, free_port

MCP_DOC = Path(__file__).resolve().parent.parent / "docs" / "mcp.md"
META_KEYS = {"id", "from", "from_key", "conversation", "reply_to", "priority", "kind"}


class Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str
    meta: dict[str, str]


class Pushes:
    """The channel notifications one client received."""

    def __init__(self) -> None:
        self.items: list[Channel] = []
        self._changed = anyio.Event()

    async def handler(self, params: Channel) -> None:
        self.items.append(params)
        self._changed.set()
        self._changed = anyio.Event()

    def binding(self) -> NotificationBinding[Channel]:
        return NotificationBinding(method=CHANNEL_METHOD, params_type=Channel,
                                   handler=self.handler)

    async def wait(self, n: int, timeout: float = 10) -> list[Channel]:
        with anyio.fail_after(timeout):
            while len(self.items) < n:
                await self._changed.wait()
        return self.items

    async def none(self, wait: float = 0.4) -> bool:
        before = len(self.items)
        await anyio.sleep(wait)
        return len(self.items) == before


class Session:
    def __init__(self, session: ClientSession, pushes: Pushes, init: types.InitializeResult,
                 tool_changes: list[types.ToolListChangedNotification]):
        self.session, self.pushes, self.init = session, pushes, init
        self.tool_changes = tool_changes  # the notifications/tools/list_changed received

    async def tool_names(self) -> set[str]:
        return {t.name for t in (await self.session.list_tools()).tools}

    async def call(self, tool: str, **args: Any) -> dict[str, Any]:
        res = await self.session.call_tool(tool, args)
        block = res.content[0]
        assert isinstance(block, types.TextContent)
        if res.is_error:
            raise AssertionError(f"{tool} failed: {block.text}")
        data = json.loads(block.text)
        assert res.structured_content == data and isinstance(data["summary"], str)
        self.last_summary = data["summary"]
        return data["result"]  # type: ignore[no-any-return]

    async def error(self, tool: str, **args: Any) -> str:
        res = await self.session.call_tool(tool, args)
        assert res.is_error
        block = res.content[0]
        assert isinstance(block, types.TextContent)
        return block.text


def mcp_params(who: Identity, hub_url: str, *args: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(command=HUB_BIN, args=["mcp", *args],
                                 env=base_env(who.home, MESHHUB_URL=hub_url, **env))


@contextlib.asynccontextmanager
async def stdio_session(params: StdioServerParameters,
                        errlog: TextIO | None = None) -> AsyncIterator[Session]:
    pushes = Pushes()
    changes: list[types.ToolListChangedNotification] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changes.append(message)

    async with stdio_client(params, errlog=errlog or sys.stderr) as (read, write), ClientSession(
        read, write, notification_bindings=[pushes.binding()], message_handler=on_message
    ) as session:
        init = await session.initialize()
        yield Session(session, pushes, init, changes)


@contextlib.asynccontextmanager
async def http_session(url: str, token: str | None) -> AsyncIterator[Session]:
    pushes = Pushes()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http, streamable_http_client(
        url, http_client=http
    ) as (read, write), ClientSession(
        read, write, notification_bindings=[pushes.binding()]
    ) as session:
        init = await session.initialize()
        yield Session(session, pushes, init, [])


async def wait_for_peer(s: Session, name: str, timeout: float = 10,
                        online: bool = True) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            peers = await s.call("mesh_peers", online_only=online)
            found = [p for p in peers if p["name"] == name]
            if found:
                return found[0]
            await anyio.sleep(0.05)


def check_push(push: Channel, *, sender: str, text: str, conversation: str) -> None:
    assert set(push.meta) == META_KEYS
    assert all("-" not in k and isinstance(v, str) for k, v in push.meta.items())
    assert push.meta["from"] == sender and push.meta["conversation"] == conversation
    assert text in push.content and sender in push.content


async def expected_tools(who: Identity, hub_url: str) -> set[str]:
    """The registry, through the documented rule: no admin, no token_*, web_* or pair_*
    (credentials), no hub introspection or session plumbing."""
    async with who.client(hub_url, receive=False) as c:
        described = await c.call("actions")
    return {
        "mesh_" + a["name"] for a in described
        if not a["admin"] and not a["name"].startswith(("token_", "web_", "pair_"))
        and a["name"] not in HUB_ADMIN_ACTIONS
    }


async def exchange(a: Session, b: Session, a_name: str, b_name: str) -> None:
    """DM, group message and thread reply between two sessions in @team."""
    await wait_for_peer(a, b_name)
    sent = await a.call("mesh_send", to=b_name, text="hello b, DM")
    assert sent["recipients"] == [b_name] and a.last_summary.startswith("sent ")
    push = (await b.pushes.wait(1))[0]
    check_push(push, sender=a_name, text="hello b, DM", conversation="dm")
    assert push.meta["id"] == sent["id"] and push.meta["reply_to"] == ""

    group = await a.call("mesh_send", to="@team", text="to the team")
    push = (await b.pushes.wait(2))[1]
    check_push(push, sender=a_name, text="to the team", conversation="@team")

    reply = await b.call("mesh_send", reply_to=group["id"], text="team reply in thread")
    assert reply["recipients"] == [a_name]
    push = (await a.pushes.wait(1))[0]
    check_push(push, sender=b_name, text="team reply in thread", conversation="@team")
    assert push.meta["reply_to"] == group["id"]

    # also readable through the inbox tool: pushed means delivered, not yet read
    inbox = await b.call("mesh_inbox")
    assert [m["text"] for m in inbox["messages"]] == ["hello b, DM", "to the team"]
    assert inbox["unread"] == [m["id"] for m in inbox["messages"]]
    assert (await b.call("mesh_inbox"))["messages"] == []  # reading marked them read
    everything = await b.call("mesh_inbox", unread_only=False)
    assert len(everything["messages"]) == 2 and everything["unread"] == []
    thread = await a.call("mesh_thread", root=group["id"])
    assert [m["text"] for m in thread["replies"]] == ["team reply in thread"]
    assert await a.pushes.none(0.2) and len(b.pushes.items) == 2  # each arrival once


async def test_two_stdio_sessions_talk_and_get_pushes(hub, people):
    (ann,) = people("ann")
    async with stdio_session(mcp_params(ann, hub.url, "--name", "ann-a", "--groups",
                                        "team:lead")) as a, \
            stdio_session(mcp_params(ann, hub.url, MESHHUB_SESSION_NAME="ann-b",
                                     MESHHUB_GROUPS="team")) as b:
        for s in (a, b):
            assert s.init.capabilities.experimental == {"claude/channel": {},
                                                        "claude/channel/permission": {}}
            assert "untrusted" in (s.init.instructions or "")
        tools = {t.name for t in (await a.session.list_tools()).tools}
        assert tools == await expected_tools(ann, hub.url)
        me = await a.call("mesh_whoami")
        assert me["name"] == "ann-a" and me["groups"] == {"team": "lead"}
        assert me["connector"] == "mcp" and me["kind"] == "agent"
        peer_b = await wait_for_peer(a, "ann-b")
        assert peer_b["key"] != me["key"]  # two sessions of one member: two peers
        await exchange(a, b, "ann-a", "ann-b")
        # an excluded action is not callable as a tool either
        assert "unknown tool" in await a.error("mesh_token_create")


async def test_inbox_mode_gets_counts_and_off_gets_nothing(hub, people):
    ann, bob = people("ann", "bob")
    async with stdio_session(mcp_params(ann, hub.url, "--name", "sender")) as a, \
            stdio_session(mcp_params(bob, hub.url, "--name", "counter", "--mode", "inbox")) as c, \
            stdio_session(mcp_params(bob, hub.url, "--name", "quiet",
                                     MESHHUB_MODE="off")) as q:
        await wait_for_peer(a, "counter")
        await wait_for_peer(a, "quiet", online=False)  # off: not receiving, so not online
        await a.call("mesh_send", to="counter", text="one")
        await a.call("mesh_send", to="counter", text="two")
        await a.call("mesh_send", to="quiet", text="shh")
        with anyio.fail_after(10):
            while not c.pushes.items or c.pushes.items[-1].meta.get("unread") != "2":
                await c.pushes.wait(len(c.pushes.items) + 1)
        last = c.pushes.items[-1]
        assert last.content.startswith("2 unread from sender") and "one" not in last.content
        assert last.meta["kind"] == "unread" and last.meta["senders"] == "sender"
        inbox = await c.call("mesh_inbox")  # still unread: the counts did not read them
        assert [m["text"] for m in inbox["messages"]] == ["one", "two"]
        assert await q.pushes.none(0.3) and q.pushes.items == []
        assert [m["text"] for m in (await q.call("mesh_inbox"))["messages"]] == ["shh"]


async def test_http_endpoint_with_token(hub, people):
    ann, bob = people("ann", "bob")
    token = json.loads(ann.cli(hub.url, "token", "create", "--json").stdout)["token"]
    url = hub.url + "/mcp"
    async with http_session(url, token) as h, \
            stdio_session(mcp_params(bob, hub.url, "--name", "bob-s", "--groups", "team")) as b:
        assert h.init.capabilities.experimental == {"claude/channel": {}}
        assert "untrusted" in (h.init.instructions or "")
        tools = {t.name for t in (await h.session.list_tools()).tools}
        assert tools == await expected_tools(ann, hub.url)
        me = await h.call("mesh_whoami")
        assert me["name"] == "ann"  # the token's peer
        await h.call("mesh_join_group", group="team")
        await exchange(h, b, "ann", "bob-s")
        # a revoked token stops at once: no more pushes on the open stream
        control = await b.call("mesh_send", to="ann", text="before the revocation")
        with anyio.fail_after(5):
            while control["id"] not in {p.meta["id"] for p in h.pushes.items}:
                await h.pushes.wait(len(h.pushes.items) + 1)
        ann.cli(hub.url, "token", "revoke")
        sent = await b.call("mesh_send", to="ann", text="after the revocation")
        await anyio.sleep(1.5)
        assert sent["id"] not in {p.meta["id"] for p in h.pushes.items}
        async with ann.client(hub.url, receive=False) as a:
            assert (await a.call("inbox", mark_read=False))["messages"][-1]["id"] == sent["id"]


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic abc"])
async def test_http_endpoint_refuses_without_valid_token(hub, people, auth):
    (ann,) = people("ann")
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "mesh_send", "arguments": {"to": "ann", "text": "sneaky"}}}
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    async with httpx2.AsyncClient() as http:
        for method in ("POST", "GET", "DELETE"):
            r = await http.request(method, hub.url + "/mcp", json=body, headers=headers)
            assert r.status_code == 401, (method, r.status_code, r.text)
    async with ann.client(hub.url) as c:  # nothing ran
        assert (await c.call("hub_stats"))["messages"] == 0


async def test_killed_session_gets_queued_messages_once_after_restart(hub, people):
    ann, bob = people("ann", "bob")
    params = mcp_params(bob, hub.url, "--name", "bob-session")
    async with ann.client(hub.url, receive=False) as a:
        async with stdio_session(params) as s:  # first life
            with anyio.fail_after(10):  # `hub mcp` joins the mesh in the background
                while not any(p["name"] == "bob-session" for p in await a.peers()):
                    await anyio.sleep(0.05)
            first = await a.send("bob-session", "before the crash")
            assert (await s.pushes.wait(1))[0].meta["id"] == first["id"]
            burst = [await a.send("bob-session", f"in flight {i}") for i in range(5)]
            os.kill(_server_pid("bob-session"), signal.SIGKILL)  # messages in flight
            await anyio.sleep(0.3)
            burst += [await a.send("bob-session", f"while dead {i}") for i in range(5)]
            # what the first life acked is what it wrote before dying: the hub knows which
            acked = set()
            for m in burst:
                state = (await a.message_status(m["id"]))["recipients"][0]["state"]
                if state == "delivered":
                    acked.add(m["id"])
            # the notifications it wrote are still in the pipe: let the client read them all
            with anyio.fail_after(10):
                while not acked <= {p.meta["id"] for p in s.pushes.items}:
                    await anyio.sleep(0.05)
        async with stdio_session(params) as s2:  # second life, same name: same peer
            assert (await s2.call("mesh_whoami"))["name"] == "bob-session"
            expected = [m["id"] for m in burst if m["id"] not in acked]
            assert expected  # the ones sent while it was dead at least
            with anyio.fail_after(20):
                while not set(expected) <= {p.meta["id"] for p in s2.pushes.items}:
                    await s2.pushes.wait(len(s2.pushes.items) + 1)
            await anyio.sleep(0.5)  # nothing more comes
            ids = [p.meta["id"] for p in s2.pushes.items]
            assert len(ids) == len(set(ids)), "a message was pushed twice"
            assert ids == expected  # what was not acked, in order, exactly once; nothing else
            with anyio.fail_after(5):
                while True:
                    states = [(await a.message_status(m["id"]))["recipients"][0]["state"]
                              for m in burst]
                    if set(states) == {"delivered"}:
                        break
                    await anyio.sleep(0.05)


def _server_pid(name: str) -> int:
    """The pid of the `hub mcp --name <name>` process this test started."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = proc.cmdline()
            if "mcp" in cmd and name in cmd:
                return proc.pid
    raise AssertionError(f"no hub mcp --name {name} process found")


async def test_react_notifies_the_sender(hub, people):
    ann, bob = people("ann", "bob")
    async with stdio_session(mcp_params(ann, hub.url, "--name", "ann-s")) as a, \
            stdio_session(mcp_params(bob, hub.url, "--name", "bob-s")) as b:
        await wait_for_peer(a, "bob-s")
        sent = await a.call("mesh_send", to="bob-s", text="shall we ship?")
        await b.pushes.wait(1)
        r = await b.call("mesh_react", id=sent["id"], emoji="👍")
        assert r["reactions"] == {"👍": ["bob-s"]} and r["notified"] == "ann-s"
        push = (await a.pushes.wait(1))[0]
        assert "reacted 👍" in push.content and sent["id"] in push.content
        again = await b.call("mesh_react", id=sent["id"], emoji="👍")  # idempotent
        assert again["changed"] is False and again["notified"] is None
        gone = await b.call("mesh_react", id=sent["id"], emoji="👍", remove=True)
        assert gone["reactions"] == {}
        assert "no message" in await b.error("mesh_react", id="nope", emoji="👍")
        assert await a.pushes.none(0.3) and len(a.pushes.items) == 1


async def test_revoking_a_token_closes_its_open_mcp_stream_at_once(hub_factory, people):
    hub = hub_factory(MESHHUB_GRACE_SECONDS="0.2")
    ann, bob = people("ann", "bob")
    token = json.loads(ann.cli(hub.url, "token", "create", "--json").stdout)["token"]

    async def ann_online(b: Any) -> bool:
        return any(p["name"] == "ann" and p["online"] for p in await b.peers())

    async with http_session(hub.url + "/mcp", token) as h, \
            bob.client(hub.url, receive=False) as b:
        assert (await h.call("mesh_whoami"))["name"] == "ann"
        with anyio.fail_after(10):
            while not await ann_online(b):  # the session's GET stream is ann's connection
                await anyio.sleep(0.05)
        ann.cli(hub.url, "token", "revoke")
        with anyio.fail_after(5):  # closed by the revocation, not at the next push
            while await ann_online(b):
                await anyio.sleep(0.05)


async def test_hub_down_at_start_lists_tools_then_works_once_the_hub_is_up(
        tmp_path, hub_factory, people):
    (ann,) = people("ann")
    port = free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}"
    # this install serves no reactions; the hub started below does: its list wins once reached
    params = mcp_params(ann, url, "--name", "early", MESHHUB_DISABLE_PLUGINS="reactions")
    with (tmp_path / "mcp-stderr.txt").open("w+") as errlog:
        async with stdio_session(params, errlog) as s:
            assert s.init.capabilities.tools is not None
            assert s.init.capabilities.tools.list_changed is True
            offline = await s.tool_names()
            assert "mesh_send" in offline and "mesh_whoami" in offline
            assert "mesh_react" not in offline
            text = await s.error("mesh_send", to="ann", text="hello?")
            assert text == f"the hub at {url} is not reachable; start it with `hub start`"
            await anyio.sleep(1.0)  # a few quiet retries happen meanwhile

            hub_factory(port=port)
            with anyio.fail_after(30):  # the session reconnects by itself and says so
                while not s.tool_changes:
                    await anyio.sleep(0.05)
            assert await s.tool_names() == offline | {"mesh_react", "mesh_reactions"}
            with anyio.fail_after(30):
                while (await s.session.call_tool("mesh_whoami", {})).is_error:
                    await anyio.sleep(0.1)
            assert (await s.call("mesh_whoami"))["name"] == "early"
            sent = await s.call("mesh_send", to="early", text="to myself")
            assert sent["recipients"] == ["early"]
        errlog.seek(0)
        stderr = errlog.read()
    assert "Traceback" not in stderr, stderr
    # one line per state change: not reachable once, then connected once
    assert stderr.count("is not reachable") == 1, stderr
    assert stderr.count("connected to the hub") == 1, stderr


def test_the_tool_table_in_docs_is_generated_from_the_registry():
    text = MCP_DOC.read_text()
    described = tool_docs.project_actions()
    assert {a["name"] for a in described} >= {"send", "inbox", "react", "actions"}
    assert tool_docs.section(text) == tool_docs.table(described), (
        f"docs/mcp.md's tool table is out of date: run `{tool_docs.COMMAND}`")


async def test_hub_mcp_lists_the_documented_tools(people):
    (ann,) = people("ann")
    documented = tool_docs.documented_tools(MCP_DOC.read_text())
    assert "mesh_send" in documented and len(documented) == len(set(documented))
    no_hub = f"http://127.0.0.1:{free_port()}"  # this install's own list, as a fresh one has it
    async with stdio_session(mcp_params(ann, no_hub)) as s:
        assert await s.tool_names() == set(documented), (
            f"docs/mcp.md lists other tools than tools/list: run `{tool_docs.COMMAND}`")
