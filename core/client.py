"""The async client of the WebSocket peer protocol, used by the CLI, the tests, the benchmarks
and the MCP plugin.

    async with MeshClient(url, key, name="ann") as client:
        await client.send("bob", "hello")
        async for message in client.messages():
            print(message["from"], message["text"])
            await client.ack(message["id"])

Messages are deduplicated by id (a redelivery after a lost ack is not shown twice) and come out
in the order the hub pushed them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yarl
from nacl.signing import SigningKey

from . import codec
from .admission import local_socket_for
from .builtins.hello_auth import attest_session, sign_hello
from .errors import (
    AuthFailed,
    Forbidden,
    InvalidRequest,
    MeshError,
    NotFound,
    TooLarge,
    Unauthorized,
    UnknownTarget,
)

_ERRORS: dict[str, type[MeshError]] = {
    "unknown_target": UnknownTarget,
    "no_recipient": UnknownTarget,
    "not_found": NotFound,
    "unknown_action": NotFound,
    "too_large": TooLarge,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "bad_signature": AuthFailed,
    "stale": AuthFailed,
    "replayed": AuthFailed,
    "not_enrolled": AuthFailed,
    "removed": AuthFailed,
    "bad_invite": AuthFailed,
    "invite_refused": AuthFailed,
    "wrong_hub": AuthFailed,
}
SHUT_OUT_CODES = frozenset({"not_enrolled", "removed", "wrong_hub"})
SHUT_OUT_CLOSES = {4003: "this member was removed from the hub"}
MESSAGE_TOO_BIG = 1009  # the WebSocket close code of a frame over the hub's limit
SESSION_SECONDS = 86400  # a session key's attestation; renewed on each reconnect when needed
SEEN_LIMIT = 100_000
CONNECT_SECONDS = 10.0  # the WebSocket handshake; the challenge and welcome get 10 s each too


def error_from(frame: dict[str, Any]) -> MeshError:
    cls = _ERRORS.get(frame.get("code", ""), InvalidRequest)
    return cls(frame.get("message", "error"), code=frame.get("code"), **frame.get("details", {}))


def audience(url: str) -> str:
    """``host:port`` of the hub as dialled: what a signed hello is meant for."""
    parsed = yarl.URL(url)
    host = parsed.host or ""
    return f"[{host}]:{parsed.port}" if ":" in host else f"{host}:{parsed.port}"


def ws_url(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("http"):
        url = "ws" + url[4:]
    return url if url.endswith("/ws") else url + "/ws"


class MeshClient:
    def __init__(
        self,
        url: str,
        key: SigningKey,
        *,
        name: str,
        kind: str = "human",
        connector: str = "cli",
        session: str | None = None,
        role: str | None = None,
        groups: dict[str, str] | None = None,
        receive: bool = True,
        reconnect: bool = False,
        dedupe: bool = True,
        local: bool = True,
        invite: str | None = None,
        member_name: str | None = None,
    ) -> None:
        """``session``: a session of the member whose key is ``key``; it signs with a key of
        its own, attested by ``key``. ``local``: use the hub's local socket when the hub runs
        on this machine (how the hub's own OS user gets in without an invite). ``invite``: a
        code that enrolls ``key`` as a member (``hub join``). ``member_name``: the member's own
        name, used if this hello is the one that enrolls ``key``."""
        self.url = ws_url(url)
        self.key = key
        self.local = local
        self.session_key = SigningKey.generate() if session else None
        self._attestation: dict[str, Any] = {}
        self.hello_fields: dict[str, Any] = {
            "name": name, "kind": kind, "connector": connector, "receive": receive,
        }
        if session:
            self.hello_fields["session"] = session
        if invite:
            self.hello_fields["invite"] = invite
        if member_name and member_name != name:
            self.hello_fields["member_name"] = member_name
        if role is not None:
            self.hello_fields["role"] = role
        if groups is not None:
            self.hello_fields["groups"] = groups
        self.reconnect = reconnect
        self.dedupe = dedupe
        self.peer: dict[str, Any] = {}
        self.welcome: dict[str, Any] = {}
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[Any, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()
        self.shut_out: str | None = None  # why the hub will not take this client back
        # told True each time a connection is made (the first and every reconnect) and False
        # each time one is lost (``shut_out`` is set first when it is for good)
        self.on_link: Callable[[bool], None] | None = None

    # -- connection --------------------------------------------------------------------------
    async def connect(self) -> dict[str, Any]:
        await self._dial()
        self._reader = asyncio.create_task(self._read_loop(), name="mesh-client-reader")
        return self.welcome

    async def _dial(self) -> None:
        """Open the connection: through the hub's local socket when there is one (looked up
        anew each time: a restarted hub may have none), else, or if it does not answer, TCP."""
        socket = local_socket_for(self.url) if self.local else None
        try:
            await self._connect_via(socket)
        except (OSError, aiohttp.ClientConnectionError):
            if socket is None:
                raise
            await self._connect_via(None)  # a socket left by a hub that was killed: use TCP

    async def _connect_via(self, socket: Any) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(socket)) if socket else None)
        try:
            await self._open()
        except BaseException:
            await self._session.close()
            raise

    async def _open(self) -> None:
        assert self._session is not None
        # something that accepts the connection and never answers is not a hub: give up
        ws = await asyncio.wait_for(self._session.ws_connect(
            self.url, heartbeat=None, autoping=True, max_msg_size=0), CONNECT_SECONDS)
        try:
            challenge = await ws.receive_json(timeout=10)
            if challenge.get("type") == "error":  # refused before a hello (a full hub)
                raise error_from(challenge)
            if challenge.get("type") != "challenge":
                raise MeshError(f"expected a challenge, got {challenge.get('type')}")
            fields = {"type": "hello", "v": 1, "nonce": challenge["nonce"],
                      "ts": int(time.time()), "audience": audience(self.url),
                      **self.hello_fields}
            signer = self.key
            if self.session_key is not None:
                signer = self.session_key
                fields.update(self._session_attestation())
            hello = sign_hello(signer, fields)
            await ws.send_json(hello)
            answer = await ws.receive_json(timeout=10)
            early: list[dict[str, Any]] = []
            while answer.get("type") in ("event", "message"):  # an older hub may send these first
                early.append(answer)
                answer = await ws.receive_json(timeout=10)
            if answer.get("type") == "error":
                raise error_from(answer)
            if answer.get("type") != "welcome":
                raise MeshError(f"expected welcome, got {answer.get('type')}")
        except BaseException:
            await ws.close()
            raise
        self._ws = ws
        for frame in early:
            self._dispatch(frame)
        self.welcome = answer
        self.peer = answer["peer"]
        self.connected.set()
        if self.on_link is not None:
            self.on_link(True)

    def _session_attestation(self) -> dict[str, Any]:
        """The member key's attestation of this session's key, renewed when half used."""
        assert self.session_key is not None
        expires = self._attestation.get("attestation", {}).get("expires", 0)
        if expires - time.time() < SESSION_SECONDS / 2:
            self._attestation = attest_session(self.key, self.session_key,
                                               int(time.time()) + SESSION_SECONDS)
        return self._attestation

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._session is not None:
            await self._session.close()
        self._fail_pending(ConnectionError("client closed"))
        self._inbox.put_nowait(None)

    async def __aenter__(self) -> MeshClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    @property
    def limits(self) -> dict[str, int]:
        """The hub's limits from its welcome: ``max_body_bytes``, ``max_frame_bytes`` (empty
        for a hub too old to say)."""
        value = self.welcome.get("limits")
        return value if isinstance(value, dict) else {}

    async def _read_loop(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                self._dispatch(codec.loads(msg.data))
            self.connected.clear()
            lost = "connection to the hub lost"
            if ws.close_code == MESSAGE_TOO_BIG:
                lost = ("the hub closed the connection: a frame was over its limit of "
                        f"{self.limits.get('max_frame_bytes', '?')} bytes")
            self._fail_pending(ConnectionError(lost))
            if ws.close_code in SHUT_OUT_CLOSES:
                self.shut_out = f"the hub closed the connection: {SHUT_OUT_CLOSES[ws.close_code]}"
            if self.on_link is not None:
                self.on_link(False)
            if self._closing or not self.reconnect or self.shut_out:
                self._inbox.put_nowait(None)
                return
            delay = 0.1
            while not self._closing:
                await asyncio.sleep(delay)
                try:
                    await self._dial()
                    break
                except AuthFailed as exc:
                    if exc.code in SHUT_OUT_CODES:  # retrying cannot help: say why and stop
                        self.shut_out = exc.message
                        if self.on_link is not None:
                            self.on_link(False)
                        self._inbox.put_nowait(None)
                        return
                    delay = min(delay * 2, 5.0)
                except (TimeoutError, OSError, aiohttp.ClientError, MeshError):
                    delay = min(delay * 2, 5.0)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            message = frame["message"]
            if self.dedupe and message["id"] in self._seen:
                return  # a redelivery of something already handed out
            self._seen[message["id"]] = None
            if len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
            self._inbox.put_nowait(message)
        elif kind in ("result", "error", "pong") and frame.get("id") in self._pending:
            future = self._pending.pop(frame["id"])
            if not future.done():
                if kind == "error":
                    future.set_exception(error_from(frame))
                else:
                    future.set_result(frame.get("result"))
        elif kind == "error":
            self.errors.put_nowait(frame)
        elif kind == "event":
            self.events.put_nowait(frame)

    # -- raw frames (protocol tests) ---------------------------------------------------------
    async def send_frame(self, frame: dict[str, Any] | str) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        if isinstance(frame, str):
            await self._ws.send_str(frame)
        else:
            await self._ws.send_json(frame)

    # -- calls -------------------------------------------------------------------------------
    async def call(self, action: str, **params: Any) -> Any:
        """Run an action on the hub as this peer; raises the hub's error as a MeshError."""
        future = await self.call_nowait(action, **params)
        return await future

    async def call_nowait(self, action: str, **params: Any) -> asyncio.Future[Any]:
        """Send a call and return the future of its result without waiting (pipelining)."""
        if self._ws is None or not self.connected.is_set():
            raise ConnectionError(self.shut_out or "not connected to the hub")
        call_id = next(self._ids)
        try:
            frame = codec.dumps({"type": "call", "id": call_id, "action": action,
                                 "params": params})
        except TypeError as exc:  # not JSON: an integer past 64 bits, a lone surrogate, bytes
            raise InvalidRequest(f"the {action} call cannot be sent as JSON: {exc}") from None
        limit = self.limits.get("max_frame_bytes")
        size = len(frame) if frame.isascii() else len(frame.encode())
        if limit is not None and size > limit:
            raise TooLarge(f"the {action} call is {size} bytes as a frame; this hub "
                           f"accepts frames of at most {limit} bytes")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send_str(frame)
        return future

    # -- files -------------------------------------------------------------------------------
    def _http_url(self, path: str) -> str:
        base = self.url.removesuffix("/ws")
        return ("http" + base[2:] if base.startswith("ws") else base) + path

    async def upload_file(self, path: str | os.PathLike[str], *, name: str | None = None,
                          share: bool = False, tags: list[str] | None = None,
                          description: str = "") -> dict[str, Any]:
        """Upload a file of any size up to the hub's limit, streamed from disk through the
        hub's upload route (a ``token_file_transfer`` for credential); ``share``: share it with
        the mesh too (the result's ``share``)."""
        source = Path(path)
        ticket = await self.call("token_file_transfer")
        query = {"name": name or source.name, "share": "1" if share else "0",
                 "tags": ",".join(tags or []), "description": description}

        async def chunks() -> AsyncIterator[bytes]:
            with source.open("rb") as fh:
                while block := await asyncio.to_thread(fh.read, 256 * 1024):
                    yield block

        assert self._session is not None
        async with self._session.post(
                self._http_url(ticket["upload"]), params=query, data=chunks(),
                headers={"Authorization": f"Bearer {ticket['ticket']}",
                         "Content-Length": str(source.stat().st_size)}) as response:
            return self._http_result(await response.json())

    async def download_file(self, id: str, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Download a file you may fetch (a share id or a digest) to ``path``, streamed;
        returns its ``file`` digest, ``name``, ``mime`` and ``size``."""
        ticket = await self.call("token_file_transfer")
        assert self._session is not None
        target = Path(path)
        async with self._session.get(
                self._http_url(ticket["download"].replace("{id}", id)),
                headers={"Authorization": f"Bearer {ticket['ticket']}"}) as response:
            if response.status != 200:
                self._http_result(await response.json())
            digest, size = hashlib.sha256(), 0
            with target.open("wb") as fh:
                async for block in response.content.iter_chunked(256 * 1024):
                    digest.update(block)
                    size += len(block)
                    await asyncio.to_thread(fh.write, block)
            return {"file": digest.hexdigest(), "name": response.content_disposition.filename
                    if response.content_disposition else None,
                    "mime": response.content_type, "size": size}

    @staticmethod
    def _http_result(body: dict[str, Any]) -> Any:
        if "error" in body:
            raise error_from(body["error"])
        return body["result"]

    async def send(self, to: str | list[str] | None, text: str, **options: Any) -> dict[str, Any]:
        """Send a message; one over the hub's ``max_body_bytes`` is refused here, unsent."""
        limit = self.limits.get("max_body_bytes")
        if limit is not None and isinstance(text, str) and len(text.encode()) > limit:
            raise TooLarge(f"the message is {len(text.encode())} bytes; this hub accepts at "
                           f"most {limit}")
        params = {k: v for k, v in options.items() if v is not None}
        if to is not None:
            params["to"] = to
        return await self.call("send", text=text, **params)

    async def ack(self, *message_ids: str) -> None:
        """Tell the hub these messages arrived. On a connection that has just dropped the ack
        goes nowhere, and that is safe: the hub pushes them again (and they are deduped)."""
        ws = self._ws
        if ws is None or ws.closed or not message_ids:
            return
        with contextlib.suppress(ConnectionError):
            await ws.send_str(codec.dumps({"type": "ack", "ids": list(message_ids)}))

    async def messages(self, *, auto_ack: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Messages pushed to this peer, until the connection ends."""
        while True:
            message = await self._inbox.get()
            if message is None:
                return
            if auto_ack:
                await self.ack(message["id"])
            yield message

    async def next_message(self, timeout: float = 10.0) -> dict[str, Any]:
        message = await asyncio.wait_for(self._inbox.get(), timeout)
        if message is None:
            raise ConnectionError("connection to the hub ended")
        return message

    async def peers(self, **filters: Any) -> list[dict[str, Any]]:
        return await self.call("peers", **filters)

    async def set_status(self, status: str) -> dict[str, Any]:
        return await self.call("set_status", status=status)

    async def message_status(self, message_id: str) -> dict[str, Any]:
        return await self.call("message_status", id=message_id)

    async def inbox(self, **options: Any) -> dict[str, Any]:
        return await self.call("inbox", **options)
