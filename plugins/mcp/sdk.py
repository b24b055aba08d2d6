"""The one small module that touches the ``mcp`` SDK (2.3.x); see docs/mcp-sdk-notes.md.

* ``build_server``: low-level ``Server`` with tools from runtime specs, one async
  ``call_tool`` callback, ``instructions`` and experimental capabilities; optionally it
  advertises ``tools.listChanged`` (``send_tools_changed`` then tells the client).
* ``run_stdio``: serve it over ``stdio_transport`` (our own, so that
  ``send_channel`` returns only after the bytes were flushed to stdout); with
  ``on_permission`` it also relays Claude Code's tool-permission prompts
  (``claude/channel/permission``): requests in, verdicts out with ``send_permission``.
* ``mount_http``: streamable HTTP inside aiohttp via ``asgi_bridge`` (bearer
  auth there); channel notifications go straight onto the GET SSE stream, again
  with a real write ack (the SDK's notify path has none and drops silently).

Only public SDK names are used; the one override is ``Server.get_capabilities``.
tests/test_mcp_sdk.py checks all of it against the real client library.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, Protocol

import anyio
from aiohttp import web
from pydantic import ConfigDict

from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.message import SessionMessage
from mcp.types import NotificationParams
from meshhub.errors import MeshError
from meshhub.sanitize import for_json, for_terminal

from .asgi_bridge import AsgiBridge, Lifespan, SseTap, mount_asgi
from .stdio_transport import stdio_streams

log = logging.getLogger(__name__)

# failures whose text is meant for the caller (a refusal, a bad argument, the hub out of reach)
SAYABLE = (MeshError, ValueError, PermissionError, ConnectionError, TimeoutError)

CHANNEL_METHOD = "notifications/claude/channel"
CHANNEL_CAPABILITY = "claude/channel"
PERMISSION_CAPABILITY = "claude/channel/permission"
PERMISSION_REQUEST_METHOD = "notifications/claude/channel/permission_request"
PERMISSION_METHOD = "notifications/claude/channel/permission"
TOOLS_CHANGED_METHOD = "notifications/tools/list_changed"
Ctx = ServerRequestContext[Any, Any]


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the hub knows it at runtime; ``input_schema`` is a JSON Schema object."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class Caller:
    """Who is calling: bearer token, MCP session id and the URL's query parameters.

    All empty on stdio. ``query`` lets an HTTP client pick per-session options
    (``/mcp?mode=inbox``).
    """

    token: str | None = None
    session_id: str | None = None
    query: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)


_NOBODY = Caller()
_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("meshhub_caller", default=_NOBODY)


def current_caller() -> Caller:
    """Caller of the tools/list or tools/call being served (lets 2-arg callbacks see identity)."""
    return _CALLER.get()


class ChannelClosed(ConnectionError):
    """The channel notification was not written (peer gone / no GET stream open)."""


class PermissionRequest(NotificationParams):
    """``notifications/claude/channel/permission_request`` params, as Claude Code sends them.

    Snake-case on the wire: the SDK validates notification params by alias only, and
    ``NotificationParams`` makes every alias camelCase, so the generator is switched off here.
    Unknown fields are ignored (a newer Claude Code may add some).
    """

    model_config = ConfigDict(alias_generator=None, extra="ignore")
    request_id: str
    tool_name: str
    description: str = ""
    input_preview: str = ""


Behavior = Literal["allow", "deny"]


class ChannelSender(Protocol):
    async def send_channel(self, content: str, meta: dict[str, str]) -> None:
        """Write one ``notifications/claude/channel``; return only once written."""
        ...

    async def send_permission(self, request_id: str, behavior: Behavior) -> None:
        """Write one ``notifications/claude/channel/permission`` (the verdict on a relayed
        prompt); return only once written."""
        ...

    async def send_tools_changed(self) -> None:
        """Write one ``notifications/tools/list_changed``; return only once written."""
        ...


ListTools = Callable[[], list[ToolSpec] | Awaitable[list[ToolSpec]]]
CallTool = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | str]]
OnPermission = Callable[[PermissionRequest, ChannelSender], Awaitable[None]]


def _channel_json(content: str, meta: dict[str, str]) -> types.JSONRPCNotification:
    if not isinstance(content, str) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise TypeError("channel content must be str and meta must be dict[str, str]")
    params = {"content": content, "meta": dict(meta)}
    return types.JSONRPCNotification(jsonrpc="2.0", method=CHANNEL_METHOD, params=params)


def _caller_from(ctx: Ctx) -> Caller:
    if (req := ctx.request) is None:  # starlette Request on HTTP, None on stdio
        return _NOBODY
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    bearer = token.strip() or None if scheme.lower() == "bearer" else None
    return Caller(bearer, req.headers.get("mcp-session-id"), dict(req.query_params))


class _HubServer(Server[Any]):
    """``Server`` that always advertises ``hub_experimental`` (and ``tools.listChanged`` when
    ``hub_tools_changed``).

    Why: the HTTP session manager builds init options with no ``experimental``
    argument; ``get_capabilities`` is the one place stdio, HTTP and
    ``server/discover`` all read.
    """

    hub_experimental: dict[str, dict[str, Any]]
    hub_tools_changed: bool = False

    def get_capabilities(
        self, notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None, *a: Any, **kw: Any,
    ) -> types.ServerCapabilities:
        merged = {**self.hub_experimental, **(experimental_capabilities or {})}
        if self.hub_tools_changed:
            given = notification_options or NotificationOptions()
            notification_options = NotificationOptions(
                prompts_changed=given.prompts_changed, resources_changed=given.resources_changed,
                tools_changed=True,
            )
        return super().get_capabilities(notification_options, merged or None, *a, **kw)


def build_server(
    name: str,
    version: str,
    instructions: str,
    list_tools: ListTools,
    call_tool: CallTool,
    experimental: dict[str, dict[str, Any]] | None = None,
    *,
    tools_change: bool = False,
) -> Server[Any]:
    """Low-level server whose tool list and dispatch are decided at runtime.

    ``dict`` result -> compact-JSON text + ``structuredContent``; ``str`` -> text
    only; an exception -> ``isError`` result with its message (session lives on).
    One server per transport: ``run_stdio`` registers a handler on it.
    ``list_tools`` may be sync or async (the stdio process asks the hub).
    ``tools_change``: advertise ``tools.listChanged`` (the list may change during the session;
    say when with ``ChannelSender.send_tools_changed``).
    """

    async def on_list_tools(
        ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        reset = _CALLER.set(_caller_from(ctx))
        try:
            specs = list_tools()
            if inspect.isawaitable(specs):
                specs = await specs
            tools = [types.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
                     for t in specs]
        finally:
            _CALLER.reset(reset)
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        reset = _CALLER.set(_caller_from(ctx))
        try:
            result = await call_tool(params.name, dict(params.arguments or {}))
        except Exception as exc:  # a tool failure is a result, not a protocol error
            if isinstance(exc, SAYABLE):
                text = for_terminal(str(exc) or type(exc).__name__)
            else:  # a bug or a failing store: logged here, not shown to the agent
                log.exception("the %s tool failed", params.name)
                text = "the hub failed on this call; it was not applied"
            return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)
        finally:
            _CALLER.reset(reset)
        if isinstance(result, str):
            return types.CallToolResult(content=[types.TextContent(text=result)])
        text = for_json(result)  # what is shown; the structured content keeps the data
        content: list[types.ContentBlock] = [types.TextContent(text=text)]
        return types.CallToolResult(content=content, structured_content=result)

    server = _HubServer(name, version=version, instructions=instructions,
                        on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    server.hub_experimental = dict(experimental or {})
    server.hub_tools_changed = tools_change
    return server


class _Sender:
    """``ChannelSender`` over a transport write that returns once the bytes are written."""

    def __init__(self, write: Callable[[types.JSONRPCNotification], Awaitable[None]]) -> None:
        self._write = write

    async def send_channel(self, content: str, meta: dict[str, str]) -> None:
        await self._send(_channel_json(content, meta))

    async def send_permission(self, request_id: str, behavior: Behavior) -> None:
        if behavior not in ("allow", "deny"):
            raise ValueError(f"a permission verdict is allow or deny, not {behavior!r}")
        params = {"request_id": request_id, "behavior": behavior}
        await self._send(types.JSONRPCNotification(
            jsonrpc="2.0", method=PERMISSION_METHOD, params=params))

    async def send_tools_changed(self) -> None:
        await self._send(types.JSONRPCNotification(jsonrpc="2.0", method=TOOLS_CHANGED_METHOD))

    async def _send(self, note: types.JSONRPCNotification) -> None:
        try:
            await self._write(note)
        except ConnectionError as exc:
            raise ChannelClosed(str(exc)) from exc


async def run_stdio(
    server: Server[Any],
    on_ready: Callable[[ChannelSender], Awaitable[None]] | None = None,
    *,
    on_permission: OnPermission | None = None,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> None:
    """Serve ``server`` over stdio (``stdio_transport``) until stdin closes.

    ``on_ready(sender)`` runs as a background task once the client's
    ``notifications/initialized`` arrived; it is cancelled when the session ends.
    ``on_permission(request, sender)``: the server (one from :func:`build_server`) advertises
    ``claude/channel/permission`` and each ``permission_request`` is handed to it, in a task of
    its own (the SDK spawns one per notification); a malformed one is dropped by the SDK, and
    what the callback raises is logged, never the session's end. The verdict, if any, goes back
    with ``sender.send_permission``.
    """
    ready = anyio.Event()

    async def on_initialized(ctx: Ctx, params: NotificationParams) -> None:
        ready.set()

    server.add_notification_handler("notifications/initialized", NotificationParams, on_initialized)
    async with stdio_streams(stdin, stdout) as (read, write, acked):
        sender = _Sender(lambda note: acked.send(SessionMessage(note)))
        if on_permission is not None:
            _relay_permissions(server, on_permission, sender)

        async def ready_then() -> None:
            await ready.wait()
            if on_ready is not None:
                await on_ready(sender)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ready_then)
            await server.run(read, write, server.create_initialization_options())
            tg.cancel_scope.cancel()


def _relay_permissions(server: Server[Any], on_permission: OnPermission,
                       sender: ChannelSender) -> None:
    if not isinstance(server, _HubServer):
        raise TypeError("permission relay needs a server made by build_server")
    server.hub_experimental[PERMISSION_CAPABILITY] = {}

    async def on_request(ctx: Ctx, params: PermissionRequest) -> None:
        try:
            await on_permission(params, sender)
        except Exception:  # the prompt stays open in the terminal; the session goes on
            log.exception("relaying the permission request %s failed", params.request_id)

    server.add_notification_handler(PERMISSION_REQUEST_METHOD, PermissionRequest, on_request)


def mount_http(
    app: web.Application,
    path: str,
    server: Server[Any],
    check_token: Callable[[str], bool],
    on_stream: Callable[[ChannelSender, Caller], Awaitable[None]] | None = None,
    *,
    json_response: bool = False,
) -> StreamableHTTPSessionManager:
    """Serve ``server`` as streamable HTTP at ``path`` of an aiohttp ``app``.

    No valid ``Authorization: Bearer <t>`` -> 401 before the SDK sees the request.
    ``on_stream(sender, caller)`` runs as a task each time a session opens its
    standalone GET stream (the only place unsolicited messages can go); the
    sender survives GET reconnects and raises ``ChannelClosed`` while none is open.
    """
    manager = StreamableHTTPSessionManager(app=server, json_response=json_response)

    async def opened(tap: SseTap) -> None:
        if on_stream is not None:
            sid = tap.session_id
            dump = types.JSONRPCNotification.model_dump_json
            sender = _Sender(lambda n: bridge.write_event(sid, dump(n, exclude_none=True)))
            await on_stream(sender, Caller(tap.token, sid))

    bridge = mount_asgi(app, path, manager.handle_request, manager.run, check_token, opened)
    return manager


class HttpEndpoint:
    """Streamable HTTP for ``server`` as one aiohttp handler plus start/stop.

    For hosts that register a route handler but own the aiohttp app themselves (the hub's
    ``meshhub_register_routes`` hook): route ``handle`` for every method on the path, call
    ``start()`` once the event loop runs and ``stop()`` before shutdown. ``check_token`` may be
    sync or async. ``on_stream(sender, caller)`` runs while a session's standalone GET stream is
    open and is cancelled when it closes.
    """

    def __init__(
        self,
        server: Server[Any],
        check_token: Callable[[str], bool | Awaitable[bool]],
        on_stream: Callable[[ChannelSender, Caller], Awaitable[None]] | None = None,
        *,
        json_response: bool = False,
    ) -> None:
        self.manager = StreamableHTTPSessionManager(app=server, json_response=json_response)

        async def opened(tap: SseTap) -> None:
            if on_stream is not None:
                sid = tap.session_id
                dump = types.JSONRPCNotification.model_dump_json
                sender = _Sender(lambda n: self.bridge.write_event(sid, dump(n, exclude_none=True)))
                await on_stream(sender, Caller(tap.token, sid, tap.query))

        self.bridge = AsgiBridge(self.manager.handle_request, check_token, opened)
        self._lifespan = Lifespan(self.manager.run)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self.bridge.handle(request)

    async def start(self) -> None:
        await self._lifespan.start()

    async def stop(self) -> None:
        await self.bridge.close_streams()
        await self._lifespan.stop()
