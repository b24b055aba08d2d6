"""The hub's aiohttp server: the WebSocket peer protocol, the HTTP API, ``/openapi.json``,
``/health``, and the routes plugins register. The frame schema is documented in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from typing import Any

from aiohttp import WSMsgType, web

from . import __version__
from .actions import ActionContext
from .errors import AuthFailed, InvalidRequest, MeshError, Unauthorized
from .hub import WS_CONNECTORS, Hub
from .models import PEER_KINDS
from .openapi import openapi_document
from .presence import Connection

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 15.0
MAX_HELLO_ATTEMPTS = 3
LOOPBACK = ("127.", "::1", "localhost")
HUB_KEY: web.AppKey[Hub] = web.AppKey("hub", Hub)


def is_loopback(host: str) -> bool:
    return host.startswith(LOOPBACK)


def error_frame(exc: MeshError, call_id: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", **exc.to_dict()}
    if call_id is not None:
        frame["id"] = call_id
    return frame


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- WebSocket peer protocol ---------------------------------------------------------------------
async def _authenticate(hub: Hub, ws: web.WebSocketResponse, nonce: str) -> Connection | None:
    for _attempt in range(MAX_HELLO_ATTEMPTS):
        try:
            msg = await ws.receive(timeout=HELLO_TIMEOUT)
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
            proof = await hub.plugins.first("meshhub_authenticate_hello", hub=hub, hello=hello,
                                            nonce=nonce)
            if proof is None:
                raise AuthFailed("no plugin accepts this kind of hello", code="unauthorized")
            # a plugin may bind the identity to an existing peer (a linked device, say)
            peer = await hub.plugins.first("meshhub_resolve_identity", hub=hub,
                                           identity=proof["identity"])
            created = False
            if peer is None:
                if (proof["identity"] not in hub.directory.by_identity
                        and not is_loopback(hub.config.host)):
                    raise AuthFailed(
                        "this hub is not bound to loopback: only known peers may join",
                        code="unauthorized",
                    )
                kind = str(hello.get("kind") or "agent")
                if kind not in PEER_KINDS:
                    raise InvalidRequest(f"kind must be one of {', '.join(PEER_KINDS)}",
                                         code="malformed")
                connector = str(hello.get("connector") or "cli")
                if connector in hub.connectors and connector not in WS_CONNECTORS:
                    raise AuthFailed(
                        f"{connector} peers are bridged by the hub's {connector} connector; "
                        "a WebSocket peer cannot claim that surface", code="unauthorized",
                    )
                groups = hello.get("groups")
                if groups is not None and not isinstance(groups, dict):
                    raise InvalidRequest("groups is an object of group name to role",
                                         code="malformed")
                peer, created = await hub.directory.register(
                    identity=proof["identity"],
                    name=str(hello.get("name") or "peer"),
                    kind=kind,
                    connector=connector,
                    public_key=proof.get("public_key"),
                    member_key=proof.get("member_key"),
                    role=hello.get("role"),
                    groups=groups,
                )
        except MeshError as exc:
            await ws.send_json(error_frame(exc))
            continue
        conn = Connection(ws, peer, receive=bool(hello.get("receive", True)))
        conn.send({
            "type": "welcome",
            "peer": dict(hub.peer_view(peer), online=True),
            "connection": conn.id,
            "created": created,
            "resumed": hub.presence.will_resume(conn),
            "hub": {"version": __version__},
        })
        await hub.presence.attach(conn)
        return conn
    await ws.close(code=1008, message=b"too many bad hellos")
    return None


def _parse(msg: Any) -> dict[str, Any]:
    if msg.type != WSMsgType.TEXT:
        raise InvalidRequest("frames are JSON text", code="malformed")
    try:
        frame = json.loads(msg.data)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"not JSON: {exc.msg} at {exc.pos}", code="malformed") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise InvalidRequest("a frame is a JSON object with a string 'type'", code="malformed")
    return frame


def _answer_send(conn: Connection, call_id: Any) -> Any:
    def answer(result: dict[str, Any] | None, error: BaseException | None) -> None:
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
        ctx = ActionContext(hub=hub, peer=conn.peer, surface="ws", connection=conn)
        if name == "send":
            # pipelined: route and queue now, in frame order; reply when the write commits
            action = hub.actions.get("send")
            args = action.validate(params)
            pending = await hub.prepare_send(conn.peer, args.pop("to"), args.pop("text"), **args)
            pending.when_done(_answer_send(conn, call_id))
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
    ws = web.WebSocketResponse(autoping=False, max_msg_size=max(1 << 20,
                                                                4 * hub.config.max_body_bytes))
    await ws.prepare(request)
    nonce = secrets.token_hex(16)
    await ws.send_json({"type": "challenge", "nonce": nonce, "hub": {"version": __version__}})
    conn = await _authenticate(hub, ws, nonce)
    if conn is None:
        return ws
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
                break
            call_id = None
            try:
                frame = _parse(msg)
                call_id = frame.get("id")
                await _handle_frame(hub, conn, frame)
            except MeshError as exc:
                conn.send(error_frame(exc, call_id))
            except Exception:
                log.exception("frame from %s failed", conn.peer.name)
                conn.send(error_frame(MeshError("the hub failed on this frame; it was not "
                                                "applied", code="internal"), call_id))
    finally:
        hub.presence.detach(conn)
        conn.finish()
    return ws


# -- HTTP API ------------------------------------------------------------------------------------
async def _peer_for_request(hub: Hub, request: web.Request) -> Any:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Unauthorized("send 'Authorization: Bearer <token>' (create one: hub token create)")
    peer_key = await hub.store.peer_for_token(hash_token(header[7:].strip()))
    if peer_key is None or peer_key not in hub.directory.peers:
        raise Unauthorized("unknown or revoked token")
    return hub.directory.peers[peer_key]


def json_error(exc: MeshError) -> web.Response:
    return web.json_response({"error": exc.to_dict()}, status=exc.http_status)


async def api_call(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        peer = await _peer_for_request(hub, request)
        action = hub.actions.get(request.match_info["action"])
        if request.can_read_body:
            try:
                params = await request.json()
            except json.JSONDecodeError:
                raise InvalidRequest("the body must be a JSON object", code="malformed") from None
        else:
            params = {}
        if not isinstance(params, dict):
            raise InvalidRequest("the body must be a JSON object", code="malformed")
        ctx = ActionContext(hub=hub, peer=peer, surface="http")
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


def build_app(hub: Hub) -> web.Application:
    app = web.Application(client_max_size=max(1 << 20, 4 * hub.config.max_body_bytes))
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
    """Start serving; returns the runner (stop it with ``await runner.cleanup()``) and the port."""
    app = build_app(hub)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    actual = port
    for address in runner.addresses:  # the real port when 0 was asked for
        actual = int(address[1])
        break
    return runner, actual


async def run_forever(hub: Hub, host: str, port: int, ready: Any = None) -> None:
    runner, actual = await serve(hub, host, port)
    if ready is not None:
        ready(actual)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
