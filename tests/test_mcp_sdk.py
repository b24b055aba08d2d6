"""Probe: prove meshhub_mcp.sdk works end-to-end against the REAL mcp 2.3 client.

If the SDK changes under us, these fail loudly. Everything binds 127.0.0.1 on
free ports and is stopped by handle.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
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
    PERMISSION_CAPABILITY,
    PERMISSION_METHOD,
    PERMISSION_REQUEST_METHOD,
    Caller,
    ChannelClosed,
    ChannelSender,
    PermissionRequest,
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
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


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

    os.write(in_w, (json.dumps(INIT) + "\n").encode())
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


class Wire:
    """The JSON-RPC lines a server writes to a pipe, read in a thread (the server runs in this
    test's event loop)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.seen = fd, b"", []

    async def next(self, match: Callable[[dict[str, Any]], bool],
                   timeout: float = 10) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    self.seen.append(json.loads(line))
                    if match(self.seen[-1]):
                        return self.seen[-1]
                chunk = await anyio.to_thread.run_sync(os.read, self.fd, 65536,
                                                       abandon_on_cancel=True)
                assert chunk, f"the server closed its stdout; it wrote {self.seen}"
                self.buffer += chunk


def _line(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def _permission_request(request_id: Any, tool: str, **more: Any) -> dict[str, Any]:
    params = {"request_id": request_id, "tool_name": tool, **more}
    return {"jsonrpc": "2.0", "method": PERMISSION_REQUEST_METHOD, "params": params}


async def test_stdio_permission_requests_reach_the_callback_and_verdicts_go_out() -> None:
    """The relay's SDK facts: the capability is advertised next to claude/channel, a custom
    client notification reaches its handler with snake-case params (the SDK validates by alias
    only), a malformed one is dropped and a failing callback is logged, both leaving the session
    alive, and ``send_permission`` writes the verdict."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    stdin, stdout = os.fdopen(in_r, "rb"), os.fdopen(out_w, "wb")
    server = build_server("p", "1", "i", _tools, _call, {"claude/channel": {}})
    seen: list[PermissionRequest] = []

    async def on_permission(request: PermissionRequest, sender: ChannelSender) -> None:
        seen.append(request)
        if request.tool_name == "Broken":
            raise RuntimeError("a relay bug")
        with pytest.raises(ValueError):
            await sender.send_permission(request.request_id, "maybe")  # type: ignore[arg-type]
        await sender.send_permission(request.request_id, "deny")

    wire = Wire(out_r)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(run_stdio, server, on_permission=on_permission,
                                            stdin=stdin, stdout=stdout))
            try:
                _line(in_w, INIT)
                init = await wire.next(lambda m: m.get("id") == 1)
                assert init["result"]["capabilities"]["experimental"] == {
                    "claude/channel": {}, PERMISSION_CAPABILITY: {}}
                _line(in_w, {"jsonrpc": "2.0", "method": "notifications/initialized"})
                _line(in_w, _permission_request(7, "Bash"))  # malformed: dropped by the SDK
                _line(in_w, _permission_request("broke", "Broken"))
                _line(in_w, _permission_request("abcde", "Bash", description="run ls",
                                                input_preview='{"command":"ls"}', extra="later"))
                verdict = await wire.next(lambda m: m.get("method") == PERMISSION_METHOD)
                assert verdict == {"jsonrpc": "2.0", "method": PERMISSION_METHOD,
                                   "params": {"request_id": "abcde", "behavior": "deny"}}
                _line(in_w, {"jsonrpc": "2.0", "id": 2, "method": "ping"})
                assert (await wire.next(lambda m: m.get("id") == 2))["result"] == {}
            finally:
                os.close(in_w)  # EOF: run_stdio returns, pass or fail
        assert sorted(r.request_id for r in seen) == ["abcde", "broke"]
        asked = next(r for r in seen if r.request_id == "abcde")
        assert (asked.tool_name, asked.description, asked.input_preview) == (
            "Bash", "run ls", '{"command":"ls"}')
    finally:
        for fh in (stdin, stdout):
            with contextlib.suppress(OSError):
                fh.close()
        os.close(out_r)


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
