"""Probe: prove meshhub_mcp.sdk works end-to-end against the REAL mcp 2.3 client.

If the SDK changes under us, these fail loudly. Everything binds 127.0.0.1 on
free ports and is stopped by handle.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, cast

import anyio
import httpx2
import pytest
from aiohttp import web
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client import NotificationBinding
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel, ConfigDict

import meshhub_mcp
from meshhub_mcp.sdk import (
    CHANNEL_METHOD,
    Caller,
    ChannelClosed,
    ChannelSender,
    ToolSpec,
    build_server,
    current_caller,
    mount_http,
    run_stdio,
)

from .helpers import serve_app

HERE = Path(meshhub_mcp.__file__).resolve().parent  # the probe server lives in the package
pytestmark = pytest.mark.asyncio
SCHEMA = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}


class ChannelParams(BaseModel):
    """Exact wire shape of notifications/claude/channel params."""

    model_config = ConfigDict(extra="forbid")
    content: str
    meta: dict[str, str]


class Inbox:
    """Collects channel notifications the client sees, with a wait helper."""

    def __init__(self) -> None:
        self.items: list[ChannelParams] = []
        self._changed = anyio.Event()

    async def handler(self, params: ChannelParams) -> None:
        self.items.append(params)
        self._changed.set()
        self._changed = anyio.Event()

    def binding(self) -> NotificationBinding[ChannelParams]:
        return NotificationBinding(
            method=CHANNEL_METHOD, params_type=ChannelParams, handler=self.handler
        )

    async def wait_for(self, n: int, timeout: float = 10) -> list[ChannelParams]:
        with anyio.fail_after(timeout):
            while len(self.items) < n:
                await self._changed.wait()
        return self.items


async def test_stdio_end_to_end() -> None:
    """Real stdio_client + ClientSession against a subprocess running run_stdio."""
    inbox = Inbox()
    seen_by_message_handler: list[Any] = []

    async def message_handler(msg: Any) -> None:
        seen_by_message_handler.append(msg)

    params = StdioServerParameters(
        command=sys.executable, args=[str(HERE / "_probe_stdio_server.py")]
    )
    async with (
        stdio_client(params) as (read, write),
        ClientSession(
            read,
            write,
            message_handler=cast(Any, message_handler),
            notification_bindings=[inbox.binding()],
        ) as session,
    ):
        init = await session.initialize()
        assert init.capabilities.experimental == {"claude/channel": {}}
        assert init.instructions == "Probe instructions."
        assert init.server_info.name == "probe" and init.server_info.version == "0.0.1"

        # Unprompted notification sent by the on_ready background task.
        first = (await inbox.wait_for(1))[0]
        assert first == ChannelParams(content="hello from server", meta={"kind": "greeting"})

        tools = await session.list_tools()
        assert [t.name for t in tools.tools] == ["echo", "text", "fail", "push", "noisy"]
        assert tools.tools[0].input_schema == SCHEMA

        res = await session.call_tool("echo", {"x": "hi"})
        assert not res.is_error
        assert _text(res) == '{"you_said":"hi","n":1}'  # compact JSON
        assert res.structured_content == {"you_said": "hi", "n": 1}

        res = await session.call_tool("text", {"x": "a"})
        assert _text(res) == "plain a" and res.structured_content is None

        res = await session.call_tool("fail", {"x": "a"})
        assert res.is_error and _text(res) == "boom"

        res = await session.call_tool("noisy", {"x": "a"})  # print() must not corrupt the wire
        assert _text(res) == "ok"

        res = await session.call_tool("push", {"x": "later"})  # returns after the write ack
        assert res.structured_content == {"acked": True}
        pushed = (await inbox.wait_for(2))[1]
        assert pushed == ChannelParams(content="later", meta={"kind": "push", "seq": "1"})

    # SDK fact: unknown notification methods never reach message_handler.
    assert not any(getattr(m, "method", None) == CHANNEL_METHOD for m in seen_by_message_handler)


async def test_client_without_binding_drops_channel_notification() -> None:
    """SDK fact (fails loudly if it changes): no binding -> the notification is dropped."""
    seen: list[Any] = []

    async def message_handler(msg: Any) -> None:
        seen.append(msg)

    params = StdioServerParameters(
        command=sys.executable, args=[str(HERE / "_probe_stdio_server.py")]
    )
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, message_handler=cast(Any, message_handler)) as session,
    ):
        await session.initialize()
        res = await session.call_tool("push", {"x": "y"})
        assert res.structured_content == {"acked": True}
        await anyio.sleep(0.2)
    assert seen == []


def _text(res: types.CallToolResult) -> str:
    block = res.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def _tools() -> list[ToolSpec]:
    return [ToolSpec("whoami", "returns the caller", SCHEMA)]


async def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    c = current_caller()
    return {"tool": name, "token": c.token, "has_session": c.session_id is not None}


async def test_stdio_ack_means_flushed_and_closed_peer_raises() -> None:
    """In-process run_stdio over os.pipe(): send_channel returns only once bytes are in the pipe."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    server = build_server("p", "1", "i", _tools, _call, {"claude/channel": {}})
    got: dict[str, Any] = {}
    stdout = os.fdopen(out_w, "wb")
    stdin = os.fdopen(in_r, "rb")

    async def on_ready(sender: ChannelSender) -> None:
        await sender.send_channel("c1", {"k": "v"})
        os.set_blocking(out_r, False)
        raw = b""
        while b"notifications/claude/channel" not in raw:  # already in the pipe: no waiting
            raw += os.read(out_r, 65536)
        lines = [json.loads(x) for x in raw.decode().splitlines()]
        got["line"] = [x for x in lines if x.get("method") == CHANNEL_METHOD][0]
        with pytest.raises(TypeError):
            await sender.send_channel("c", {"k": 1})  # type: ignore[dict-item,unused-ignore]
        os.close(out_r)  # peer gone
        with pytest.raises(ChannelClosed):
            await sender.send_channel("c2", {})
        got["closed_ok"] = True
        os.close(in_w)  # EOF -> run_stdio returns

    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    os.write(in_w, (json.dumps(init) + "\n").encode())
    os.write(in_w, b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    with anyio.fail_after(10):
        await run_stdio(server, on_ready, stdin=stdin, stdout=stdout)
    assert got["line"] == {
        "jsonrpc": "2.0",
        "method": CHANNEL_METHOD,
        "params": {"content": "c1", "meta": {"k": "v"}},
    }
    assert got["closed_ok"]
    with contextlib.suppress(BrokenPipeError):  # buffered leftovers of the failed write
        stdout.close()
    stdin.close()


@pytest.fixture
async def http_hub() -> Any:
    """aiohttp app with the MCP endpoint mounted at /mcp on 127.0.0.1:<free port>."""
    app = web.Application()
    streams: list[tuple[ChannelSender, Caller]] = []
    ready = anyio.Event()

    async def on_stream(sender: ChannelSender, caller: Caller) -> None:
        streams.append((sender, caller))
        await sender.send_channel("over http", {"via": "sse"})
        ready.set()

    server = build_server("hub", "9", "HTTP instructions.", _tools, _call, {"claude/channel": {}})
    mount_http(app, "/mcp", server, lambda t: t in {"good", "other"}, on_stream)
    runner, port = await serve_app(app)
    try:
        yield f"http://127.0.0.1:{port}/mcp", streams, ready
    finally:
        await runner.cleanup()


async def test_http_end_to_end(http_hub: Any) -> None:
    url, streams, ready = http_hub
    inbox = Inbox()
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer good"}) as http:
        async with (
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write, notification_bindings=[inbox.binding()]) as session,
        ):
            init = await session.initialize()
            assert init.capabilities.experimental == {"claude/channel": {}}
            assert init.instructions == "HTTP instructions."
            assert [t.name for t in (await session.list_tools()).tools] == ["whoami"]
            res = await session.call_tool("whoami", {"x": "1"})
            assert res.structured_content == {
                "tool": "whoami",
                "token": "good",
                "has_session": True,
            }
            with anyio.fail_after(10):
                await ready.wait()
            assert (await inbox.wait_for(1))[0] == ChannelParams(
                content="over http", meta={"via": "sse"}
            )
            sender, caller = streams[0]
            assert caller.token == "good" and caller.session_id
            await sender.send_channel("second", {})  # any time later, from the test task
            assert (await inbox.wait_for(2))[1].content == "second"
    # Session deleted / stream gone: sending now fails loudly instead of vanishing.
    with anyio.fail_after(5):
        while True:
            try:
                await sender.send_channel("late", {})
            except ChannelClosed:
                break
            await anyio.sleep(0.05)


async def test_http_bearer_auth(http_hub: Any) -> None:
    url, _, _ = http_hub
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    hdrs = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx2.AsyncClient() as http:
        r = await http.post(url, json=body, headers=hdrs)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await http.post(url, json=body, headers={**hdrs, "Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = await http.get(url, headers={"Authorization": "Basic good"})
        assert r.status_code == 401
        r = await http.post(url, json=body, headers={**hdrs, "Authorization": "Bearer good"})
        assert r.status_code == 200
        sid = r.headers["mcp-session-id"]
        # The session is pinned to the token that created it.
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        r = await http.post(
            url, json=ping, headers={**hdrs, "Authorization": "Bearer other", "mcp-session-id": sid}
        )
        assert r.status_code == 404
        r = await http.post(
            url,
            json=ping,
            headers={
                **hdrs,
                "Authorization": "Bearer good",
                "mcp-session-id": sid,
                "mcp-protocol-version": "2025-11-25",
            },
        )
        assert r.status_code == 200
