"""One JSON shape for a message, and one for a peer, on every surface: a WebSocket push,
`hub watch --json`, `hub inbox --json`, `POST /api/inbox`, an MCP tool result and the `thread`
action; the welcome, presence events, `whoami` and `peers`. The keys are the ones
docs/protocol.md documents."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from .helpers import HUB_BIN, base_env, collect, read_line
from .test_mcp import mcp_params, stdio_session

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def documented_keys(table_head: str) -> set[str]:
    """The keys a table of docs/protocol.md lists (``| `a`, `b` | ...`` rows)."""
    text = PROTOCOL.read_text()
    table = text[text.index(f"| {table_head}"):]
    table = table[:table.index("\n\n")]
    keys: set[str] = set()
    for row in table.splitlines()[2:]:
        keys |= set(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    return keys


async def test_a_message_has_one_shape_everywhere(hub, people) -> None:
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(hub.url) as a:
        watch = subprocess.Popen([HUB_BIN, "watch", "--json", "--no-read"],
                                 env=base_env(bob.home, MESHHUB_URL=hub.url),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert watch.stdout is not None
            while not ((event := await asyncio.wait_for(a.events.get(), 20))["change"]
                       == "online" and event["peer"]["name"] == "bob"):
                pass
            probe = await a.send("bob", "probe")  # once it shows, bob's watch has it all
            while json.loads(read_line(watch)).get("message", {}).get("id") != probe["id"]:
                pass
            async with carl.client(hub.url) as c:  # the same messages, pushed to carl
                root = await a.send("bob,carl", "the root, @bob", priority="now")
                await a.send("bob,carl", "a reply", reply_to=root["id"])
                pushed = await collect(c, 2)
                thread = await c.call("thread", root=root["id"])
            watched: list[dict[str, Any]] = []
            while len(watched) < 2:
                frame = json.loads(read_line(watch))
                if frame["type"] == "message":
                    watched.append(frame["message"])
        finally:
            watch.terminate()
            watch.wait(10)
    inbox_cli = json.loads(bob.cli(hub.url, "inbox", "--all", "--json").stdout)["messages"][1:]
    token = json.loads(bob.cli(hub.url, "token", "create", "--cap", "read", "--json").stdout)
    async with aiohttp.ClientSession() as http, http.post(
            hub.url + "/api/inbox", json={"unread_only": False},
            headers={"Authorization": f"Bearer {token['token']}"}) as resp:
        assert resp.status == 200
        inbox_http = (await resp.json())["result"]["messages"][1:]  # after the probe
    async with stdio_session(mcp_params(bob, hub.url, "--name", "bob-shapes")) as s:
        # the MCP session is a peer of its own: give it a message of its own to read
        async with ann.client(hub.url) as a2:
            await a2.send("bob-shapes", "for the session")
        inbox_mcp = (await s.call("mesh_inbox"))["messages"]

    surfaces = {
        "ws push": pushed, "hub watch --json": watched, "hub inbox --json": inbox_cli,
        "POST /api/inbox": inbox_http, "mesh_inbox (MCP)": inbox_mcp,
        "thread": [thread["root"], *thread["replies"]],
    }
    documented = documented_keys("message key")
    assert {"v", "id", "from", "from_key", "text", "conversation", "reply_to"} <= documented
    for surface, messages in surfaces.items():
        assert messages, surface
        for m in messages:
            assert set(m) == documented, (surface, sorted(set(m) ^ documented))
            assert m["v"] == 1 and m["from"] == "ann" and m["from_key"] == a.peer["key"]
    # and the same values: a message read anywhere is the same message
    assert pushed == watched == inbox_cli == inbox_http == surfaces["thread"]
    assert pushed[0]["mentions"] == ["bob"] and pushed[1]["reply_to"] == root["id"]


async def test_a_peer_has_one_shape_everywhere(hub, people) -> None:
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a:
        async with bob.client(hub.url) as b:
            joined = await asyncio.wait_for(a.events.get(), 5)
            online = await asyncio.wait_for(a.events.get(), 5)
            whoami = await b.call("whoami")
            listed = {p["name"]: p for p in await b.peers()}
            welcome = b.welcome["peer"]
            status = await b.set_status("dnd")
    token = json.loads(ann.cli(hub.url, "token", "create", "--cap", "read", "--json").stdout)
    async with aiohttp.ClientSession() as http, http.post(
            hub.url + "/api/peers", json={},
            headers={"Authorization": f"Bearer {token['token']}"}) as resp:
        over_http = {p["name"]: p for p in (await resp.json())["result"]}
    views = {
        "welcome": welcome, "joined event": joined["peer"], "online event": online["peer"],
        "whoami": whoami, "peers": listed["bob"], "set_status": status,
        "POST /api/peers": over_http["bob"], "peers (another)": listed["ann"],
    }
    documented = documented_keys("peer key")
    assert {"v", "key", "name", "status", "online", "reach", "you"} <= documented
    for view, peer in views.items():
        assert set(peer) == documented, (view, sorted(set(peer) ^ documented))
    assert (joined["change"], online["change"]) == ("joined", "online")
    assert welcome["you"] and whoami["you"] and not listed["ann"]["you"]
    assert (welcome["reach"], welcome["online"]) == ("live", True)
    assert over_http["bob"]["reach"] == "inbox"  # bob has gone: messages wait for him
