"""Connections and presence.

A peer is online while it has at least one receiving WebSocket connection (a send-only
connection, such as one ``hub send``, changes no presence). When its last one goes,
the peer stays "online" for a grace window (90 s by default): a reconnect inside it is silent (no
``offline``/``online`` pair for others) and drains the queue. A peer seen for the first time is
announced as ``joined`` (it joined the mesh), whether or not it stays connected. Liveness is
judged by pings alone (no process-id checks): the hub pings every 30 s and closes a connection
whose last sign of life is 75 s old.

Each connection holds what it has not yet written in a bounded queue (``outbound_bytes``, 4 MiB by
default): a push that would pass the bound is not queued; the connection falls *behind* (no
longer live, so new messages for its peer stay queued in the store and the lease sweeper leaves
it alone) until its queue is empty again, when the dispatcher drains the store to it as on a
reconnect. A connection whose writes have not moved for ``stall_seconds`` (60 s) is cut: its
reader stopped reading. What it was sent stays queued in the store for its next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import codec, memory
from .config import Config
from .errors import InvalidRequest
from .ids import new_id

if TYPE_CHECKING:
    from .hub import Hub
    from .models import Peer

log = logging.getLogger(__name__)

CLOSE_PONG_TIMEOUT = 4000
CLOSE_SHUTDOWN = 1001
CLOSE_STALLED = 4008
MAX_QUEUED_FRAMES = 20_000  # and at most this many frames, however small
TRIM_DELAY = 1.0  # seconds after a detach; detaches that come together share one
MAX_ASIDE = 16  # calls that may wait (ask, approval_wait) open at once per connection
OVERFLOW = 4  # times the bound: events it does not read; the connection is cut


def _wake(waiter: asyncio.Future[None] | None) -> None:
    """Resolve a waiter, if there is one still waiting."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Connection:
    """One WebSocket of one peer, with its own ordered, bounded outgoing queue.

    ``transport`` (the request's) lets the hub cut a connection whose reader has stopped: a
    WebSocket close would wait behind the very data the reader is not taking.
    """

    def __init__(self, ws: web.WebSocketResponse, peer: Peer, *, receive: bool,
                 transport: asyncio.Transport | None = None) -> None:
        self.id = new_id()
        self.ws = ws
        self.transport = transport
        self.peer = peer
        self.receive = receive
        self.surface = peer.connector  # what it is to people: cli, mcp, web (the page)...
        self.token_hash: str | None = None  # set when it came in with a bearer token
        self.cap = "admin"  # the most its calls may do (a token's cap; else the member's own)
        self.live = False  # set once the backlog is drained, so live pushes keep order
        self.drain_lock = asyncio.Lock()
        self.last_seen = time.monotonic()
        self.last_ping = time.monotonic()
        self.max_queued = Config.outbound_bytes  # characters of frame text; set on attach
        self.queued = 0  # characters of frame text waiting to be written
        self.behind = False  # a push found the queue full: pushes wait for it to drain
        self.on_room: Callable[[], None] | None = None  # called when it is no longer behind
        self.writing_since: float | None = None  # when the write in progress began
        self._out: deque[str | None] = deque()
        self._wake: asyncio.Future[None] | None = None  # set while the writer waits for work
        self._room: asyncio.Future[None] | None = None  # set while a drain waits for room
        self.unsettled = 0  # characters of pipelined sends not yet written to the store
        self._cut = False
        self._settled: asyncio.Future[None] | None = None
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")
        self._aside: set[asyncio.Task[None]] = set()  # calls that may wait (for a person)

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; frames leave in the order they were queued."""
        self.send_raw(codec.dumps(frame))

    def send_raw(self, text: str | None) -> None:
        """Queue encoded frame text (``None``: end the writer once the rest has left).

        Answers always queue (a client waits for them; :meth:`wait_for_answers` stops reading
        the calls of a client that lets them pile up); events go through :meth:`send_event`,
        message pushes through :meth:`offer`, both of which keep to a bound.
        """
        if text is not None:
            self.queued += len(text)
        self._out.append(text)
        wake, self._wake = self._wake, None
        _wake(wake)

    def render(self, text: str) -> str:
        """A message frame as this connection sends it (the web page's adds its HTML), so
        that the bound counts what is really queued."""
        return text

    def send_event(self, text: str) -> None:
        """Queue an event (a presence change). Events are not kept for later: a connection that
        lets them pile past :data:`OVERFLOW` times its bound is not reading them, and is cut."""
        if self.queued + len(text) > OVERFLOW * self.max_queued:
            if not self._cut:
                log.warning("cut the connection of %s: %d characters of events it does not "
                            "read", self.peer.name, self.queued)
                self.cut()
            return
        self.send_raw(text)

    async def wait_for_answers(self) -> None:
        """Hold the reading of this connection's calls while what it has not read passes its
        bound: a client that calls and never reads its answers stops being read."""
        while self.queued > self.max_queued and not self.ws.closed and not self._cut:
            self._room = self._room or asyncio.get_running_loop().create_future()
            await self._room

    def has_room(self, size: int) -> bool:
        """Whether a push of ``size`` characters fits (an empty queue takes any one frame)."""
        return not self.queued or (self.queued + size <= self.max_queued
                                   and len(self._out) < MAX_QUEUED_FRAMES)

    def offer(self, text: str) -> bool:
        """Queue a message push if it fits; if not, fall behind and queue nothing (the
        delivery row stays in the store, and the drain that follows the catch-up pushes it)."""
        text = self.render(text)
        if self.behind or not self.has_room(len(text)):
            if not self.behind:
                self.behind, self.live = True, False
                log.info("%s is not reading fast enough (%d characters queued): pushes wait",
                         self.peer.name, self.queued)
            return False
        self.send_raw(text)
        return True

    async def wait_room(self, size: int) -> bool:
        """Wait until a push of ``size`` fits; False once the connection has closed."""
        while not self.has_room(size):
            if self.ws.closed or self._writer.done():
                return False
            self._room = self._room or asyncio.get_running_loop().create_future()
            await self._room
        return not self.ws.closed

    def send_started(self, size: int) -> Callable[[], None]:
        """Count a pipelined send whose write has not settled; returns what settles it."""
        self.unsettled += size

        def settled() -> None:
            self.unsettled -= size
            if self.unsettled <= self.max_queued // 2:
                wake, self._settled = self._settled, None
                _wake(wake)

        return settled

    async def wait_settled(self) -> None:
        """Hold the reading of this connection's frames while its unsettled sends pass the
        bound: a flood waits in the sender's socket, not in the hub's memory."""
        while self.unsettled > self.max_queued and not self.ws.closed and not self._cut:
            self._settled = asyncio.get_running_loop().create_future()
            await self._settled

    def _written(self, size: int) -> None:
        self.queued -= size
        if self.queued <= self.max_queued // 2:
            room, self._room = self._room, None
            _wake(room)
        if self.behind and not self.queued:
            # caught up with everything queued: the catch-up drain re-pushes only what was
            # leased but not queued, plus what the reader has not acked yet
            self.behind = False
            if self.on_room is not None:
                self.on_room()

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
                    self.writing_since = time.monotonic()
                    await self.ws.send_str(text)
                    self.writing_since = None
                self._written(len(text))
        except (ConnectionError, RuntimeError) as exc:  # peer vanished mid-write
            log.debug("connection %s write failed: %s", self.id, exc)
        except asyncio.CancelledError:
            pass
        finally:
            self._release()

    def _release(self) -> None:
        """The writer has ended: let go of what it will never write, and wake whatever waits on
        it (a drain waiting for room, a reader loop waiting for answers or settles)."""
        self._out.clear()
        self.queued = 0
        self.writing_since = None
        _wake(self._room)
        _wake(self._settled)
        self._room = self._settled = None

    def stalled(self, now: float, limit: float) -> bool:
        """One write has waited ``limit`` seconds: the reader is not taking anything."""
        return self.writing_since is not None and now - self.writing_since > limit

    def cut(self) -> None:
        """Drop the connection at once, unsent data and all (a reader that stopped)."""
        self._cut = True
        if self.transport is not None:
            self.transport.abort()
        self._writer.cancel()

    def aside(self, answer: Coroutine[Any, Any, dict[str, Any]]) -> None:
        """Serve a call that may wait a long time beside the connection's other frames: its
        answer frame is sent when ``answer`` gives it. At most :data:`MAX_ASIDE` at once."""
        if len(self._aside) >= MAX_ASIDE:
            answer.close()
            raise InvalidRequest(f"at most {MAX_ASIDE} waiting calls per connection; let one "
                                 "finish first", code="too_many_calls")

        async def run() -> None:
            self.send(await answer)

        task = asyncio.create_task(run())
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)

    def finish(self) -> None:
        """Let the writer send what is queued, then end; waiting calls are given up."""
        for task in list(self._aside):
            task.cancel()
        self.send_raw(None)

    async def close(self, code: int = 1000, message: str = "") -> None:
        self.send_raw(None)
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message.encode())



class Presence:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.connections: dict[str, list[Connection]] = {}
        self._leaving: dict[str, asyncio.TimerHandle] = {}
        self._trim: asyncio.TimerHandle | None = None  # a memory release after a detach
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
        conn.max_queued = self.hub.config.outbound_bytes
        if conn.receive:
            conn.on_room = lambda: self._catch_up(conn)
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

    def _catch_up(self, conn: Connection) -> None:
        """A connection that fell behind has room again: push it what waited in the store."""
        if conn in self.connections.get(conn.peer.key, ()):
            self.hub.spawn(self.hub.dispatcher.drain(conn))

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
        if self._trim is None:  # what the connection held is free now: give it back
            self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY, self._release)
        if conn.receive and not self.is_receiving(conn.peer.key):
            loop = asyncio.get_running_loop()
            self._leaving[conn.peer.key] = loop.call_later(
                self.hub.config.grace_seconds, self._leave, conn.peer
            )

    def _release(self) -> None:
        self._trim = None
        memory.release()

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
                conn.send_event(frame)
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
        if self._trim is not None:
            self._trim.cancel()
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
                if conn.stalled(now, cfg.stall_seconds):
                    log.warning("cut the connection of %s: it has taken nothing for %.0f s "
                                "(%d characters waiting)", conn.peer.name,
                                now - (conn.writing_since or now), conn.queued)
                    self._cut(conn)
                elif now - conn.last_seen > cfg.pong_timeout:
                    log.info("closing %s: no pong for %.0f s", conn.peer.name,
                             now - conn.last_seen)
                    self.hub.spawn(conn.close(CLOSE_PONG_TIMEOUT, "pong timeout"))
                elif now - conn.last_ping >= cfg.ping_interval and conn.writing_since is None:
                    # a write in progress means the socket is full: a ping would wait behind
                    # it, and hold up this loop for every other connection
                    conn.last_ping = now
                    with contextlib.suppress(Exception):
                        await conn.ws.ping()

    def _cut(self, conn: Connection) -> None:
        if conn.transport is not None:
            conn.cut()
        else:  # no transport to abort: a close is the best there is
            self.hub.spawn(conn.close(CLOSE_STALLED, "not reading"))
