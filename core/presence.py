"""Connections and presence.

A peer is online while it has at least one receiving WebSocket connection (a send-only
connection, such as one ``hub send``, changes no presence). When its last one goes,
the peer stays "online" for a grace window (90 s by default): a reconnect inside it is silent (no
``offline``/``online`` pair for others) and drains the queue. A peer seen for the first time is
announced as ``joined`` (it joined the mesh), whether or not it stays connected. Liveness is
judged by pings alone (no process-id checks): the hub pings every 30 s and closes a connection
whose last sign of life is 75 s old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import codec
from .ids import new_id

if TYPE_CHECKING:
    from .hub import Hub
    from .models import Peer

log = logging.getLogger(__name__)

CLOSE_PONG_TIMEOUT = 4000
CLOSE_SHUTDOWN = 1001


class Connection:
    """One WebSocket of one peer, with its own ordered outgoing queue."""

    def __init__(self, ws: web.WebSocketResponse, peer: Peer, *, receive: bool) -> None:
        self.id = new_id()
        self.ws = ws
        self.peer = peer
        self.receive = receive
        self.surface = peer.connector  # what it is to people: cli, mcp, web (the page)...
        self.token_hash: str | None = None  # set when it came in with a bearer token
        self.cap = "admin"  # the most its calls may do (a token's cap; else the member's own)
        self.live = False  # set once the backlog is drained, so live pushes keep order
        self.drain_lock = asyncio.Lock()
        self.last_seen = time.monotonic()
        self.last_ping = time.monotonic()
        self._out: deque[str | None] = deque()
        self._wake: asyncio.Future[None] | None = None  # set while the writer waits for work
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; frames leave in the order they were queued."""
        self.send_raw(codec.dumps(frame))

    def send_raw(self, text: str | None) -> None:
        """Queue encoded frame text (``None``: end the writer once the rest has left)."""
        self._out.append(text)
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    @property
    def backlog(self) -> int:
        return len(self._out)

    async def wait_drained(self, below: int) -> None:
        while len(self._out) > below and not self.ws.closed:
            await asyncio.sleep(0.005)

    async def _write_loop(self) -> None:
        """Write queued frames in order; one wake-up per burst, not one queue hop per frame."""
        out = self._out
        try:
            while True:
                if not out:
                    self._wake = asyncio.get_running_loop().create_future()
                    await self._wake
                    continue
                text = out.popleft()
                if text is None:
                    return
                if not self.ws.closed:
                    await self.ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:  # peer vanished mid-write
            log.debug("connection %s write failed: %s", self.id, exc)
        except asyncio.CancelledError:
            pass

    def finish(self) -> None:
        """Let the writer send what is queued, then end."""
        self.send_raw(None)

    async def close(self, code: int = 1000, message: str = "") -> None:
        self.send_raw(None)
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message.encode())

    def stop_writer(self) -> None:
        self._writer.cancel()


class Presence:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.connections: dict[str, list[Connection]] = {}
        self._leaving: dict[str, asyncio.TimerHandle] = {}
        self._task: asyncio.Task[None] | None = None

    # -- connections -------------------------------------------------------------------------
    def receivers(self, peer_key: str) -> list[Connection]:
        return [c for c in self.connections.get(peer_key, ()) if c.receive and c.live]

    def is_live(self, peer_key: str) -> bool:
        return any(c.receive and c.live for c in self.connections.get(peer_key, ()))

    def is_online(self, peer_key: str) -> bool:
        return self.is_receiving(peer_key) or peer_key in self._leaving

    def online_count(self) -> int:
        return len({k for k in self.connections if self.is_receiving(k)} | set(self._leaving))

    def is_receiving(self, peer_key: str) -> bool:
        """It has a receiving connection now (pushes reach it, once its backlog is drained)."""
        return any(c.receive for c in self.connections.get(peer_key, ()))

    def surfaces(self, peer_key: str) -> list[str]:
        """The surfaces the peer is live on now (``["cli", "web"]``: a terminal and the web
        page), from its receiving connections."""
        return sorted({c.surface for c in self.connections.get(peer_key, ()) if c.receive})

    def all_connections(self) -> list[Connection]:
        return [c for conns in self.connections.values() for c in conns]

    def will_resume(self, conn: Connection) -> bool:
        """Whether attaching ``conn`` is a silent reconnect inside the grace window."""
        return conn.receive and conn.peer.key in self._leaving

    async def attach(self, conn: Connection) -> bool:
        """Add a connection; returns True when this was a silent reconnect.

        The caller queues its welcome frame before calling this, so no presence event can
        reach the new connection ahead of it.
        """
        peer = conn.peer
        first = not self.is_receiving(peer.key)
        before = self.surfaces(peer.key)
        self.connections.setdefault(peer.key, []).append(conn)
        if not conn.receive:
            peer.last_seen = time.time()  # a send-only command (`hub send`) is a sign of life
            return False
        timer = self._leaving.pop(peer.key, None)
        if timer is not None:
            timer.cancel()
            return True
        if first:
            if peer.status == "offline":
                peer.status = "online"
            await self.announce(peer, "online")
        elif self.surfaces(peer.key) != before:  # online already, now on one more surface
            await self.announce(peer, "surfaces")
        return False

    def detach(self, conn: Connection) -> None:
        conns = self.connections.get(conn.peer.key, [])
        before = self.surfaces(conn.peer.key)
        if conn in conns:
            conns.remove(conn)
        if not conns:
            self.connections.pop(conn.peer.key, None)
        if conn.receive and self.is_receiving(conn.peer.key) and \
                self.surfaces(conn.peer.key) != before:  # still online, on fewer surfaces
            self.hub.spawn(self.announce(conn.peer, "surfaces"))
        if conn.receive and not self.is_receiving(conn.peer.key):
            loop = asyncio.get_running_loop()
            self._leaving[conn.peer.key] = loop.call_later(
                self.hub.config.grace_seconds, self._leave, conn.peer
            )

    def _leave(self, peer: Peer) -> None:
        self._leaving.pop(peer.key, None)
        if self.is_receiving(peer.key):
            return
        peer.status = "offline"
        self.hub.spawn(self.announce(peer, "offline"))

    async def announce(self, peer: Peer, change: str) -> None:
        """Tell every other connected peer, and the plugins, that ``peer`` changed."""
        peer.last_seen = time.time()
        await self.hub.directory.save_peer(peer)  # skipped for a peer taken out of the mesh
        frame = codec.dumps({"type": "event", "event": "presence", "change": change,
                             "peer": self.hub.peer_view(peer)})
        for conn in self.all_connections():
            if conn.peer.key != peer.key and conn.receive:
                conn.send_raw(frame)
        await self.hub.plugins.each("meshhub_presence_changed", hub=self.hub, peer=peer,
                                    event=change)

    # -- liveness ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name="presence-heartbeat")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for timer in self._leaving.values():
            timer.cancel()
        self._leaving.clear()
        for conn in self.all_connections():
            await conn.close(CLOSE_SHUTDOWN, "hub shutting down")

    async def _heartbeat(self) -> None:
        cfg = self.hub.config
        tick = max(0.05, min(cfg.ping_interval, cfg.pong_timeout / 3, 1.0))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for conn in self.all_connections():
                if now - conn.last_seen > cfg.pong_timeout:
                    log.info("closing %s: no pong for %.0f s", conn.peer.name,
                             now - conn.last_seen)
                    self.hub.spawn(conn.close(CLOSE_PONG_TIMEOUT, "pong timeout"))
                elif now - conn.last_ping >= cfg.ping_interval:
                    conn.last_ping = now
                    with contextlib.suppress(Exception):
                        await conn.ws.ping()
