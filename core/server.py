"""The hub's aiohttp server: the WebSocket peer protocol, the HTTP API, ``/openapi.json``,
``/health``, and the routes plugins register. The frame schema is documented in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from . import __version__, codec, members
from .actions import ActionContext, check_allowed
from .admission import (
    OPEN_PATHS,
    arrived_directly,
    check_audience,
    check_request,
    is_local_same_user,
    prepare_socket,
)
from .directory import check_group, check_name, is_valid_name
from .errors import (
    AuthFailed,
    InvalidRequest,
    MeshError,
    RateLimited,
    TooLarge,
    TooManyConnections,
    Unauthorized,
    error_frame,
)
from .fields import MAX_CONNECTOR, MAX_GROUPS, MAX_ROLE, check_length
from .hub import WS_CONNECTORS, Hub
from .kinds import prepare
from .limits import GuardedRunner, account
from .models import PEER_KINDS, Peer
from .openapi import openapi_document
from .presence import Connection

log = logging.getLogger(__name__)

MAX_HELLO_ATTEMPTS = 3
KEEPALIVE_SECONDS = 75.0  # an idle HTTP connection between requests is closed after this
CLOSE_TRY_LATER = 1013
MAX_FLOOD_PAUSE = 1.0  # seconds a rate-limited connection's next frame waits, at most
HUB_KEY: web.AppKey[Hub] = web.AppKey("hub", Hub)


class _RequestErrorsWithoutTracebacks(logging.Filter):
    """aiohttp answers a request it cannot parse (a request line over 8 KB, a bad header) with
    a 4xx, and logs a traceback at ERROR for it: anyone could fill the hub's log that way. Such
    a record becomes one WARNING line naming the error."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and error.code < 500:
            record.msg = f"{record.msg}: {type(error).__name__} ({error.code})"
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("aiohttp.server").addFilter(_RequestErrorsWithoutTracebacks())


class ListenError(Exception):
    """The hub cannot listen where it was asked to; the message says where and why."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            reason = "address already in use; is another hub running? pick another with --port"
        else:
            reason = exc.strerror or str(exc)
        super().__init__(f"cannot listen on {where}: {reason}")


def frame_limit(hub: Hub) -> int:
    """The largest WebSocket frame and HTTP request body the hub reads, in bytes: room for a
    message of ``max_body_bytes`` with its envelope (JSON escaping can double a body)."""
    return max(1 << 20, 4 * hub.config.max_body_bytes)


def limits(hub: Hub) -> dict[str, int]:
    """What the welcome tells a client, so it can refuse an oversized message itself."""
    return {"max_body_bytes": hub.config.max_body_bytes, "max_frame_bytes": frame_limit(hub)}


def body_too_large(hub: Hub) -> TooLarge:
    return TooLarge(f"the request body is over {frame_limit(hub)} bytes, the most this hub "
                    f"reads; a message may be at most {hub.config.max_body_bytes} bytes")


# -- WebSocket peer protocol ---------------------------------------------------------------------
def _check_hello_fields(hub: Hub, hello: dict[str, Any]) -> dict[str, Any]:
    """The peer fields of a hello, checked before anything is registered: a wrong type is
    ``malformed``, a field over its maximum (:mod:`meshhub.fields`) is ``too_long``."""
    kind = hello.get("kind") or "agent"
    if kind not in PEER_KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(PEER_KINDS)}", code="malformed")
    connector = hello.get("connector") or "cli"
    if not isinstance(connector, str):
        raise InvalidRequest("connector is a short name (cli, mcp...)", code="malformed")
    check_length("connector", connector, MAX_CONNECTOR)
    if connector in hub.connector_names and connector not in WS_CONNECTORS:
        raise AuthFailed(
            f"{connector} peers are bridged by the hub's {connector} connector; "
            "a WebSocket peer cannot claim that surface", code="unauthorized",
        )
    role = hello.get("role")
    if role is not None:
        if not isinstance(role, str):
            raise InvalidRequest("role is text", code="malformed")
        check_length("role", role, MAX_ROLE)
    groups = hello.get("groups")
    if groups is not None:
        if not isinstance(groups, dict) or not all(isinstance(r, str) for r in groups.values()):
            raise InvalidRequest("groups is an object of group names to roles (text)",
                                 code="malformed")
        check_length("groups", groups, MAX_GROUPS)
        groups = {check_group(g): check_length("groups (a role in it)", r, MAX_ROLE)
                  for g, r in groups.items()}
    return {"name": check_name(hello.get("name")), "kind": kind, "connector": connector,
            "role": role, "groups": groups}


async def _admit_hello(hub: Hub, hello: dict[str, Any], nonce: str, *, local: bool,
                       direct: bool) -> tuple[Peer, bool, str | None, str]:
    """(peer, created, token hash, cap) for an admitted hello; raises before storing anything
    when it is not admitted. ``local``: it came through the local socket from the hub's own OS
    user; ``direct``: from this machine, not through a proxy (for the audience check)."""
    token = hello.get("token")
    if token is not None:  # a bearer token of an enrolled member (a browser, a script)
        if not isinstance(token, str):
            raise InvalidRequest("token is a string", code="malformed")
        peer, cap, token_hash = await members.token_peer(hub, token)
        hub.limits.check_room(account(peer))
        return peer, False, token_hash, cap
    proof = await hub.plugins.first("meshhub_authenticate_hello", hub=hub, hello=hello,
                                    nonce=nonce)
    if proof is None:
        raise AuthFailed("no plugin accepts this kind of hello", code="unauthorized")
    if proof.get("member_key") is not None:  # a key's signature: meant for this hub?
        check_audience(hub, hello.get("audience"), direct=direct)
        hub.limits.check_room(proof["member_key"])
    # a plugin may bind the identity to an existing peer (a linked device, say)
    peer = await hub.plugins.first("meshhub_resolve_identity", hub=hub,
                                   identity=proof["identity"])
    if peer is not None:
        return peer, False, None, members.member_cap(hub, peer)
    known = hub.directory.by_identity.get(proof["identity"])
    if known is not None and not is_valid_name(hello.get("name")):
        # a name from before names were checked ("Ann Smith"): keep the peer's cleaned one
        hello = dict(hello, name=hub.directory.peers[known].name)
    fields = _check_hello_fields(hub, hello)
    member = await members.admit(hub, proof, hello, local=local)
    if member is not None and proof["identity"] not in hub.directory.by_identity:
        fields["role"] = fields["role"] if fields["role"] is not None else member.role
        fields["groups"] = fields["groups"] if fields["groups"] is not None else member.groups
    peer, created = await hub.directory.register(
        identity=proof["identity"], public_key=proof.get("public_key"),
        member_key=proof.get("member_key"), **fields,
    )
    return peer, created, None, members.member_cap(hub, peer)


async def _authenticate(hub: Hub, ws: web.WebSocketResponse, nonce: str, *, local: bool,
                        direct: bool, transport: Any = None) -> Connection | None:
    """The admitted connection, or None once it is closed. Every attempt shares one deadline
    (``hello_timeout``), so bad hellos cannot keep a connection waiting longer."""
    loop = asyncio.get_running_loop()
    limit = hub.config.hello_timeout
    deadline = loop.time() + limit if limit > 0 else math.inf
    for _attempt in range(MAX_HELLO_ATTEMPTS):
        try:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            msg = await ws.receive(timeout=None if left == math.inf else left)
        except TimeoutError:
            await ws.close(code=1008, message=b"no hello")
            return None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        if msg.type == WSMsgType.PING:
            await ws.pong(msg.data)
            continue
        try:
            hello = _parse(msg)
            if hello.get("type") != "hello":
                raise InvalidRequest("say hello first: the first frame must be a signed hello",
                                     code="no_hello")
            peer, created, token_hash, cap = await _admit_hello(hub, hello, nonce, local=local,
                                                                direct=direct)
            if peer.key not in hub.directory.peers or (
                    peer.member_key is not None
                    and hub.directory.member(peer.member_key) is None):
                # removed while this hello was being stored: no await from here to attach
                raise AuthFailed("this key was removed from the hub", code="removed")
            hub.limits.join(peer)
        except TooManyConnections as exc:
            await ws.send_json(error_frame(exc))
            await ws.close(code=CLOSE_TRY_LATER, message=b"too many connections")
            return None
        except MeshError as exc:
            await ws.send_json(error_frame(exc))
            continue
        except Exception:
            log.exception("a hello failed")
            await ws.send_json(error_frame(MeshError("the hub failed on this hello; nothing was "
                                                     "stored", code="internal")))
            continue
        conn = Connection(ws, peer, receive=hello.get("receive", True) is not False,
                          transport=transport)
        conn.token_hash, conn.cap = token_hash, cap
        try:
            await welcome(hub, conn, created=created)
        except BaseException:  # its member's slot, and presence, are given back
            hub.limits.leave(peer)
            if conn in hub.presence.connections.get(peer.key, ()):
                hub.presence.detach(conn)
            conn.finish()
            raise
        return conn
    await ws.close(code=1008, message=b"too many bad hellos")
    return None


async def welcome(hub: Hub, conn: Connection, *, created: bool = False) -> None:
    """Greet an admitted connection (the ``welcome`` frame) and attach it to presence; the
    frames of its backlog and live pushes follow. For plugins that admit a WebSocket their
    own way (the web page's cookie), then hand it to :func:`serve_frames`."""
    conn.send({
        "type": "welcome",
        "peer": _welcome_view(hub, conn),
        "connection": conn.id,
        "created": created,
        "resumed": hub.presence.will_resume(conn),
        "hub": {"version": __version__},
        "limits": limits(hub),
    })
    await hub.presence.attach(conn)


def _welcome_view(hub: Hub, conn: Connection) -> dict[str, Any]:
    """The peer as it will be once ``conn`` is attached (the welcome is queued just before)."""
    view = hub.peer_view(conn.peer, conn.peer)
    if conn.receive:
        view.update(online=True, reach="live",
                    status=conn.peer.status if conn.peer.status != "offline" else "online",
                    surfaces=sorted({*view["surfaces"], conn.surface}))
    return view


def _parse(msg: Any) -> dict[str, Any]:
    if msg.type != WSMsgType.TEXT:
        raise InvalidRequest("frames are JSON text", code="malformed")
    frame = read_json(msg.data, "a frame")
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise InvalidRequest("a frame is a JSON object with a string 'type'", code="malformed")
    return frame


def _answer_send(conn: Connection, call_id: Any, settled: Callable[[], None]) -> Any:
    def answer(result: dict[str, Any] | None, error: BaseException | None) -> None:
        settled()
        if error is None:
            conn.send({"type": "result", "id": call_id, "result": result})
        elif isinstance(error, MeshError):
            conn.send(error_frame(error, call_id))
        else:
            log.error("send failed", exc_info=error)
            conn.send(error_frame(MeshError("the hub could not store the message; not sent",
                                            code="internal"), call_id))

    return answer


async def _handle_frame(hub: Hub, conn: Connection, frame: dict[str, Any]) -> None:
    kind = frame["type"]
    call_id = frame.get("id")
    if kind == "call":
        name = frame.get("action")
        if not isinstance(name, str):
            raise InvalidRequest("a call needs an 'action' name", code="malformed")
        params = frame.get("params") or {}
        if not isinstance(params, dict):
            raise InvalidRequest("'params' must be an object", code="malformed")
        ctx = ActionContext(hub=hub, peer=conn.peer, surface="ws", connection=conn,
                            cap=conn.cap, token=conn.token_hash)
        if name == "send":
            # pipelined: route and queue now, in frame order; reply when the write commits
            action = hub.actions.get("send")
            check_allowed(ctx, action)
            args = action.validate(params)
            # the send action's own check and text for a structured kind, on this path too
            text, args["data"] = prepare(args["kind"], args["data"], args.pop("text"),
                                         hub.config.max_body_bytes)
            pending = await hub.prepare_send(conn.peer, args.pop("to"), text, **args)
            # counted at 1 KiB at least, so a flood of tiny sends is held back as well
            settled = conn.send_started(max(len(text), 1024))
            pending.when_done(_answer_send(conn, call_id, settled))
            await conn.wait_settled()
            return
        if hub.actions.get(name).concurrent:  # it may wait for a person: beside the others
            conn.aside(hub.actions.answer_frame(ctx, name, params, call_id))
            return
        result = await hub.actions.call(ctx, name, params)
        conn.send({"type": "result", "id": call_id, "result": result})
    elif kind == "ack":
        ids = frame.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest("an ack carries 'ids', a list of message ids", code="malformed")
        hub.dispatcher.ack(conn.peer, ids)
    elif kind == "ping":
        conn.send({"type": "pong", "id": call_id})
    else:
        raise InvalidRequest(
            f"unknown frame type {kind!r}; expected call, ack or ping", code="unknown_frame"
        )


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[HUB_KEY]
    ws = web.WebSocketResponse(autoping=False, max_msg_size=frame_limit(hub))
    await ws.prepare(request)
    try:
        hub.limits.open_websocket()
    except TooManyConnections as exc:
        await ws.send_json(error_frame(exc))
        await ws.close(code=CLOSE_TRY_LATER, message=b"too many connections")
        return ws
    try:
        nonce = secrets.token_hex(16)
        await ws.send_json({"type": "challenge", "nonce": nonce, "hub": {"version": __version__}})
        conn = await _authenticate(hub, ws, nonce, local=is_local_same_user(request),
                                   direct=arrived_directly(request),
                                   transport=request.transport)
        if conn is None:
            return ws
        try:
            await serve_frames(hub, conn)
        finally:
            hub.limits.leave(conn.peer)
    finally:
        hub.limits.close_websocket()
    return ws


async def serve_frames(hub: Hub, conn: Connection) -> None:
    """Serve an attached connection until it closes: its backlog, then calls, acks and pings
    (docs/protocol.md); detached from presence when it ends."""
    ws = conn.ws
    if conn.receive:
        hub.spawn(hub.dispatcher.drain(conn))
    try:
        async for msg in ws:
            conn.last_seen = time.monotonic()
            if msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
                continue
            if msg.type == WSMsgType.PONG:
                continue
            if msg.type == WSMsgType.ERROR:
                if getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                    # aiohttp has closed it with 1009, all a peer can be told mid-frame
                    log.warning("closed the connection of %s: a frame over %d bytes",
                                conn.peer.name, frame_limit(hub))
                break
            call_id = None
            await conn.wait_for_answers()
            try:
                frame = _parse(msg)
                call_id = frame.get("id")
                await _handle_frame(hub, conn, frame)
            except RateLimited as exc:
                conn.send(error_frame(exc, call_id))
                # its bucket is empty: the frames behind this one wait in its own socket rather
                # than each costing the hub a refusal (a flood cannot crowd out other peers)
                await asyncio.sleep(min(exc.details["retry_after"], MAX_FLOOD_PAUSE))
            except MeshError as exc:
                conn.send(error_frame(exc, call_id))
            except Exception:
                log.exception("frame from %s failed", conn.peer.name)
                conn.send(error_frame(MeshError("the hub failed on this frame; it was not "
                                                "applied", code="internal"), call_id))
    finally:
        hub.presence.detach(conn)
        conn.finish()


def read_json(text: str | bytes, what: str) -> Any:
    """JSON from a peer (a frame, a request body), refused with ``malformed`` when it is not
    UTF-8 JSON the hub can keep: a lone surrogate, ``NaN``, nesting deeper than
    :data:`meshhub.codec.MAX_DEPTH` (the one edge check for the WebSocket and the HTTP API)."""
    try:
        return codec.read(text)
    except codec.JSONDecodeError as exc:
        where = f" at {exc.pos}" if exc.pos else ""
        raise InvalidRequest(f"{what} must be JSON: {exc.msg}{where}", code="malformed") from None


# -- HTTP API ------------------------------------------------------------------------------------
async def _peer_for_request(hub: Hub, request: web.Request) -> tuple[Peer, str, str]:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Unauthorized("send 'Authorization: Bearer <token>' (create one: hub token create)")
    return await members.token_peer(hub, header[7:])


def json_error(exc: MeshError) -> web.Response:
    response = web.json_response({"error": exc.to_dict()}, status=exc.http_status)
    retry_after = exc.details.get("retry_after")
    if isinstance(retry_after, int | float):
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


async def api_call(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        peer, cap, token_hash = await _peer_for_request(hub, request)
        action = hub.actions.get(request.match_info["action"])
        if request.can_read_body:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise body_too_large(hub) from None
            params = read_json(body, "the body")
        else:
            params = {}
        if not isinstance(params, dict):
            raise InvalidRequest("the body must be a JSON object", code="malformed")
        ctx = ActionContext(hub=hub, peer=peer, surface="http", cap=cap, token=token_hash)
        result = await hub.actions.call(ctx, action.name, params)
    except MeshError as exc:
        return json_error(exc)
    except Exception:
        log.exception("HTTP action %s failed", request.match_info["action"])
        error = MeshError("the hub failed on this request; it was not applied", code="internal")
        error.http_status = 500
        return json_error(error)
    return web.json_response({"result": result})


async def health(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    return web.json_response({
        "ok": True,
        "version": __version__,
        "uptime": round(time.time() - hub.started_at, 1),
        "peers": len(hub.directory.peers) if hub.directory else 0,
        "online": hub.presence.online_count(),
    })


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[HUB_KEY]))


@web.middleware
async def head_received(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
    """A request head arrived: its connection is no longer held to ``header_timeout``."""
    request.app[HUB_KEY].limits.sockets.head_received(request.protocol)
    return await handler(request)


@web.middleware
async def request_guard(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
    """Host and Origin, before any handler (:func:`meshhub.admission.check_request`); a body
    over the hub's limit is a JSON ``too_large`` on every route."""
    hub = request.app[HUB_KEY]
    if request.path not in OPEN_PATHS:
        refused = check_request(hub, request)
        if refused is not None:
            return json_error(refused)
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return json_error(body_too_large(hub))


def build_app(hub: Hub) -> web.Application:
    """The hub's application: every route behind the Host and Origin checks (see
    :mod:`meshhub.admission`)."""
    app = web.Application(client_max_size=frame_limit(hub),
                          middlewares=[head_received, request_guard])
    app[HUB_KEY] = hub
    app.router.add_get("/health", health)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_post("/api/{action}", api_call)
    hub.collect_contributions()  # plugin routes must be added before the router freezes
    for method, path, handler in hub.routes:
        app.router.add_route(method, path, handler)

    async def on_startup(app: web.Application) -> None:
        await hub.start()

    async def on_shutdown(app: web.Application) -> None:
        # open WebSocket handlers would hold the server's shutdown: close them first
        await hub.presence.stop()

    async def on_cleanup(app: web.Application) -> None:
        await hub.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve(hub: Hub, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving on ``host:port`` and on the local socket for that port; returns the runner
    (stop it with ``await runner.cleanup()``, which removes the socket too) and the port.

    Raises :class:`ListenError` if it cannot listen there. The port is tried before the hub
    starts, so a busy port fails with nothing opened and nothing logged; a start that fails
    later closes what it opened (the store), so no half-open database is left behind.
    """
    await _check_port(host, port)
    app = build_app(hub)
    sockets: list[tuple[str, int]] = []  # (path, inode) of the local socket

    async def remove_socket(app: web.Application) -> None:
        for path, inode in sockets:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:  # not another hub's socket that replaced it
                    os.unlink(path)

    app.on_cleanup.append(remove_socket)
    runner = GuardedRunner(app, hub.limits.sockets, handle_signals=False, access_log=None,
                           shutdown_timeout=5.0, keepalive_timeout=KEEPALIVE_SECONDS)
    try:
        await runner.setup()
    except BaseException:
        with contextlib.suppress(Exception):
            await hub.stop()
        raise
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException as exc:
        await runner.cleanup()
        if isinstance(exc, OSError):
            raise ListenError(host, port, exc) from exc
        raise
    actual = port
    for address in runner.addresses:  # the real port when 0 was asked for
        actual = int(address[1])
        break
    path = prepare_socket(actual)
    if path is not None:
        try:
            await web.UnixSite(runner, str(path)).start()
            sockets.append((str(path), path.stat().st_ino))
            os.chmod(path, 0o600)  # the directory is 0700 already; the socket is closed too
        except OSError as exc:  # a path too long for a socket, say: serve TCP only
            log.warning("no local socket at %s: %s; processes of this user need invites",
                        path, exc.strerror or exc)
    return runner, actual


async def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` the way the site will, and let it go again."""
    if port == 0:
        return  # any free port: nothing to check
    try:
        probe = await asyncio.get_running_loop().create_server(
            asyncio.Protocol, host, port, reuse_address=True, start_serving=False)
    except OSError as exc:
        raise ListenError(host, port, exc) from exc
    probe.close()
    await probe.wait_closed()


async def run_forever(hub: Hub, host: str, port: int, ready: Any = None) -> None:
    runner, actual = await serve(hub, host, port)
    if ready is not None:
        ready(actual)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
