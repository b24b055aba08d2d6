"""Serve an ASGI app (the MCP SDK's streamable-HTTP endpoint) from one aiohttp route.

Why this exists: the hub's web server is aiohttp, but the SDK only ships an
ASGI (starlette) endpoint. Rather than run a second server, this adapter turns
one aiohttp request into one ASGI ``http`` call. It also owns three things the
SDK must not decide for us:

* bearer-token auth (401 before any ASGI code runs);
* pinning an ``Mcp-Session-Id`` to the token that created it (another token
  gets 404, exactly like an unknown session);
* an "SSE tap" on each session's standalone GET stream, so the hub can write
  its own ``notifications/claude/channel`` events onto that stream and know
  when the bytes were handed to the socket (the SDK's notify path gives no
  such signal and silently drops messages while no GET stream is open).

No ``mcp`` import here: this module is plain aiohttp + the ASGI spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

SESSION_HEADER = "mcp-session-id"
_DISCONNECT_POLL_S = 0.2


@dataclass(eq=False)
class SseTap:
    """One open standalone GET SSE stream of one MCP session."""

    session_id: str
    token: str
    _resp: web.StreamResponse
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False
    query: dict[str, str] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None  # the on_stream_open hook, cancelled on close
    request: web.Request | None = None

    async def write_event(self, data: str) -> None:
        """Write one SSE ``message`` event; returns once aiohttp accepted the bytes.

        Serialised with the SDK's own writes on the same response (same lock),
        so frames never interleave. Raises ``ConnectionError`` if the stream is
        gone.
        """
        async with self._lock:
            if self.closed:
                raise ConnectionResetError("SSE stream closed")
            await self._resp.write(f"event: message\ndata: {data}\n\n".encode())


StreamHook = Callable[[SseTap], Coroutine[Any, Any, None]]


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class AsgiBridge:
    """aiohttp handler that forwards to ``asgi_app`` after bearer auth."""

    def __init__(
        self,
        asgi_app: ASGIApp,
        check_token: Callable[[str], bool | Awaitable[bool]],
        on_stream_open: StreamHook | None = None,
    ) -> None:
        self._app = asgi_app
        self._check = check_token
        self._on_open = on_stream_open
        self.tasks: set[asyncio.Task[None]] = set()  # running on_stream_open hooks
        self.owners: dict[str, str] = {}  # session id -> token that created it
        self.taps: dict[str, SseTap] = {}  # session id -> its open GET stream

    async def write_event(self, session_id: str, data: str) -> None:
        """Write an SSE event on the session's open GET stream; ``ConnectionError`` if none."""
        tap = self.taps.get(session_id)
        if tap is None:
            raise ConnectionResetError("no standalone GET stream open for this session")
        await tap.write_event(data)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = _bearer(request)
        ok: Any = False
        if token is not None:
            ok = self._check(token)
            if inspect.isawaitable(ok):
                ok = await ok
        if token is None or not ok:
            return web.json_response(
                {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        sid = request.headers.get(SESSION_HEADER)
        if sid is not None and self.owners.get(sid, token) != token:
            return web.json_response({"error": "session not found"}, status=404)
        return await self._forward(request, token)

    async def _forward(self, request: web.Request, token: str) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        sock = transport.get_extra_info("sockname") if transport else None
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": f"{request.version.major}.{request.version.minor}",
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.raw_path.split("?", 1)[0].encode(),
            "query_string": request.query_string.encode(),
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.raw_headers],
            "client": tuple(peer[:2]) if peer else None,
            "server": tuple(sock[:2]) if sock else None,
            "state": {},
        }
        body_done = False
        resp: web.StreamResponse | None = None
        tap: SseTap | None = None
        lock = asyncio.Lock()

        async def receive() -> Message:
            nonlocal body_done
            if not body_done:
                chunk = await request.content.readany()
                body_done = chunk == b""
                return {"type": "http.request", "body": chunk, "more_body": not body_done}
            # Body consumed: ASGI apps (sse-starlette) now wait for disconnect.
            while not (request.transport is None or request.transport.is_closing()):
                await asyncio.sleep(_DISCONNECT_POLL_S)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal resp, tap
            if message["type"] == "http.response.start":
                resp = web.StreamResponse(status=message["status"])
                for k, v in message.get("headers", []):
                    resp.headers.add(k.decode("latin-1"), v.decode("latin-1"))
                self._note_session(resp, token, request.headers.get(SESSION_HEADER))
                await resp.prepare(request)  # pinned before the client can learn the id
                ctype = resp.headers.get("Content-Type", "")
                new_sid = resp.headers.get(SESSION_HEADER)
                if (request.method == "GET" and resp.status == 200 and new_sid
                        and ctype.startswith("text/event-stream")):
                    tap = SseTap(new_sid, token, resp, lock, query=dict(request.query),
                                 request=request)
                    self.taps[new_sid] = tap
                    if self._on_open is not None:
                        task = asyncio.create_task(self._on_open(tap))
                        tap.task = task
                        self.tasks.add(task)
                        task.add_done_callback(self.tasks.discard)
            elif message["type"] == "http.response.body" and resp is not None:
                async with lock:
                    # the client may hang up first (it closes a POST's SSE stream once it has
                    # the answer): that is a disconnect, not an error of the app
                    with contextlib.suppress(ConnectionError):
                        await resp.write(message.get("body", b""))
                        if not message.get("more_body", False):
                            await resp.write_eof()

        try:
            await self._app(scope, receive, send)
        finally:
            if tap is not None:
                tap.closed = True
                if tap.task is not None:
                    tap.task.cancel()  # on_stream_open runs only while its stream is open
                if self.taps.get(tap.session_id) is tap:
                    del self.taps[tap.session_id]
        if resp is None:
            return web.Response(status=500, text="ASGI app sent no response")
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    async def close_streams(self) -> None:
        """Cancel the stream hooks and drop the open GET streams (before shutdown)."""
        for task in list(self.tasks):
            task.cancel()
        for tap in list(self.taps.values()):
            tap.closed = True
            transport = tap.request.transport if tap.request is not None else None
            if transport is not None:
                transport.close()

    def _note_session(self, resp: web.StreamResponse, token: str, asked: str | None) -> None:
        """Pin a newly minted session id to its token; forget ids the SDK disowns."""
        sid = resp.headers.get(SESSION_HEADER)
        if sid is not None and resp.status < 400:
            self.owners.setdefault(sid, token)
        if asked is not None and resp.status == 404:
            self.owners.pop(asked, None)


class Lifespan:
    """Run an async context manager from ``start()`` to ``stop()`` in a task of its own.

    anyio task groups (the SDK session manager has one) must be entered and exited by the
    same task, and hosts usually start and stop from different ones.
    """

    def __init__(self, lifespan: Callable[[], AbstractAsyncContextManager[None]]) -> None:
        self._lifespan = lifespan
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self, started: asyncio.Event) -> None:
        async with self._lifespan():
            started.set()
            await self._stop.wait()

    async def start(self) -> None:
        started = asyncio.Event()
        self._task = task = asyncio.create_task(self._run(started))
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():  # failed to start: surface its error
            waiter.cancel()
            task.result()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None


def mount_asgi(
    app: web.Application,
    path: str,
    asgi_app: ASGIApp,
    lifespan: Callable[[], AbstractAsyncContextManager[None]],
    check_token: Callable[[str], bool | Awaitable[bool]],
    on_stream_open: StreamHook | None = None,
) -> AsgiBridge:
    """Route every method on ``path`` to ``asgi_app``; run ``lifespan()`` from startup to shutdown.

    The lifespan runs in its own task because anyio task groups (the SDK
    session manager has one) must be entered and exited by the same task, and
    aiohttp runs startup and shutdown hooks in different ones. It is stopped in
    ``on_shutdown``, i.e. before aiohttp waits for open handlers (GET SSE streams
    would otherwise hold shutdown for ``shutdown_timeout``).
    """
    bridge = AsgiBridge(asgi_app, check_token, on_stream_open)
    app.router.add_route("*", path, bridge.handle)
    runner = Lifespan(lifespan)

    async def on_startup(_: web.Application) -> None:
        await runner.start()

    async def on_shutdown(_: web.Application) -> None:
        for task in list(bridge.tasks):
            task.cancel()
        await runner.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return bridge
