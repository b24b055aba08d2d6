"""``/mcp``: streamable HTTP MCP on the hub itself, for clients that cannot run ``hub mcp``.

Every request needs ``Authorization: Bearer <token>`` (``hub token create``); the hub stores only
sha256 hashes and looks the token up on every request, so a revoked token stops working at once.
Without a valid token the answer is 401 and nothing runs. The tools are ``hub.actions`` (same
exclusion rule as stdio, see :mod:`.tools`), run in-process as the token's peer with
``ActionContext(surface="mcp")``.

Push: while a session holds its standalone GET stream open, it is attached to the hub's presence
like a WebSocket connection (a :class:`ChannelSocket` stands in for the socket), so it gets the
same drain, leases, redelivery and priority gates; each message frame becomes a channel
notification and is acked after the write. The mode is a query parameter: ``/mcp?mode=inbox``
(``push`` by default, ``off`` attaches nothing). Shared-state changes (``record`` events) become
notifications as on stdio; ``/mcp?state=`` is the session's state setting (``all`` by default,
``off``, or comma-separated key prefixes). A request with a wrong ``mode`` or ``state`` is
refused with 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from meshhub import __version__
from meshhub.actions import ActionContext
from meshhub.errors import Unauthorized
from meshhub.members import token_peer
from meshhub.presence import Connection
from meshhub.server import HUB_KEY

from .push import Pusher, StateNotices, state_setting
from .sdk import (
    CHANNEL_CAPABILITY,
    Caller,
    ChannelSender,
    HttpEndpoint,
    ToolSpec,
    build_server,
    current_caller,
)
from .tools import INSTRUCTIONS, MODES, action_name, run_tool, tool_allowed, tool_specs

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

PATH = "/mcp"
_endpoints: weakref.WeakKeyDictionary[Hub, McpEndpoint] = weakref.WeakKeyDictionary()


class ChannelSocket:
    """What a :class:`meshhub.presence.Connection` writes to, for one MCP GET stream.

    ``send_str`` gets the hub's frames in order: message frames are written as channel
    notifications (and acked), shared-state changes go to ``notices``, other events are
    ignored; the token is checked before either. A failed write raises ``ConnectionError``,
    which ends the connection's writer; the unacked rows stay leased.
    """

    def __init__(self, pusher: Pusher, notices: StateNotices,
                 token_valid: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.pusher = pusher
        self.notices = notices
        self.token_valid = token_valid
        self.closed = False
        self.conn: Connection | None = None
        self.done = asyncio.Event()

    async def send_str(self, text: str) -> None:
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "message" or (kind == "event" and self.notices.wanted(frame)):
            await self._check_token()
        if kind == "event":
            self.notices.offer(frame)
        if kind != "message":
            return
        try:
            await self.pusher.deliver(frame["message"])
        except ConnectionError:
            await self.close()
            raise

    async def _check_token(self) -> None:
        """Before the session is told anything: a revoked token ends the stream (a message
        stays leased for the peer's next session, a state change is in the state)."""
        if self.token_valid is not None and not await self.token_valid():
            await self.close()
            raise ConnectionError("the stream's token was revoked")

    async def ping(self) -> None:
        if not self.closed and self.conn is not None:
            self.conn.last_seen = time.monotonic()  # the SSE stream is the sign of life

    async def close(self, code: int = 1000, message: bytes = b"") -> bool:
        self.closed = True
        self.done.set()
        return True


class McpEndpoint:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        # token -> (peer key, cap, token hash), refreshed by every request
        self.tokens: dict[str, tuple[str, str, str]] = {}
        server = build_server("meshhub", __version__, INSTRUCTIONS, self.list_tools,
                              self.call_tool, {CHANNEL_CAPABILITY: {}})
        self.http = HttpEndpoint(server, self.check_token, self.on_stream)

    async def check_token(self, token: str) -> bool:
        try:
            peer, cap, token_hash = await token_peer(self.hub, token)
        except Unauthorized:
            self.tokens.pop(token, None)
            return False
        self.tokens[token] = (peer.key, cap, token_hash)
        return True

    def peer_for(self, caller: Caller) -> tuple[Peer, str, str]:
        """(peer, cap, token hash) of the caller's token, as the request's check found it."""
        found = self.tokens.get(caller.token or "")
        if found is None or found[0] not in self.hub.directory.peers:
            raise PermissionError("unknown or revoked token")
        return self.hub.directory.peers[found[0]], found[1], found[2]

    def list_tools(self) -> list[ToolSpec]:
        return [ToolSpec(*spec) for spec in tool_specs(self.hub.actions.describe())]

    async def call_tool(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        action = action_name(name)
        item = self.hub.actions.actions.get(action)  # not describe(): it builds a JSON schema
        if item is None or not tool_allowed(item.name, item.admin):
            raise ValueError(f"unknown tool {name!r}")
        peer, cap, token_hash = self.peer_for(current_caller())
        ctx = ActionContext(hub=self.hub, peer=peer, surface="mcp", cap=cap, token=token_hash)

        async def invoke(act: str, params: dict[str, Any]) -> Any:
            return await self.hub.actions.call(ctx, act, params)

        return await run_tool(invoke, action, args)

    async def on_stream(self, sender: ChannelSender, caller: Caller) -> None:
        """While a session's GET stream is open, it is one receiving connection of its peer."""
        peer, cap, token_hash = self.peer_for(caller)
        mode = caller.query.get("mode", "push")
        prefixes = state_setting(caller.query.get("state"))  # checked by handle()
        if mode == "off":
            return
        hub = self.hub
        ctx = ActionContext(hub=hub, peer=peer, surface="mcp", cap=cap, token=token_hash)

        async def ack(ids: list[str], state: str) -> None:
            hub.dispatcher.ack(peer, ids, state)

        async def counts() -> dict[str, Any]:
            return await hub.actions.call(ctx, "check", {}, counted=False)

        pusher = Pusher(mode, sender.send_channel, ack, counts)
        notices = StateNotices(prefixes, sender.send_channel)
        token = caller.token or ""
        sock = ChannelSocket(pusher, notices, lambda: self.check_token(token))
        conn = Connection(sock, peer, receive=True)  # type: ignore[arg-type]
        conn.token_hash, conn.cap = token_hash, cap  # revoking the token closes this stream
        sock.conn = conn
        await hub.presence.attach(conn)
        try:
            await hub.dispatcher.drain(conn)
            await sock.done.wait()
        finally:
            sock.closed = True
            await pusher.close()
            await notices.close()
            hub.presence.detach(conn)
            conn.finish()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A request whose ``mode`` or ``state`` setting is wrong is refused (400) saying why,
        rather than opening a stream that would never be told anything."""
        problem = query_problem(request.query)
        if problem is not None:
            return web.json_response({"error": problem}, status=400)
        return await self.http.handle(request)


def query_problem(query: Mapping[str, str]) -> str | None:
    """What is wrong with an ``/mcp`` request's ``mode`` and ``state`` parameters, if anything."""
    if query.get("mode", "push") not in MODES:
        return f"mode must be one of {', '.join(MODES)}"
    try:
        state_setting(query.get("state"))
    except ValueError as exc:
        return str(exc)
    return None


async def route(request: web.Request) -> web.StreamResponse:
    endpoint = _endpoints.get(request.app[HUB_KEY])
    if endpoint is None:
        return web.json_response({"error": "the MCP endpoint is not running"}, status=503)
    return await endpoint.handle(request)


async def start(hub: Hub) -> None:
    endpoint = McpEndpoint(hub)
    await endpoint.http.start()
    _endpoints[hub] = endpoint


async def stop(hub: Hub) -> None:
    endpoint = _endpoints.pop(hub, None)
    if endpoint is not None:
        with contextlib.suppress(Exception):
            await endpoint.http.stop()
