"""Limits under abuse: what one member, or anyone who opens a socket, may take of the hub.

- **Rates**: a token bucket per account for sends and one for actions (``send_rate`` /
  ``send_burst``, ``action_rate`` / ``action_burst``). An account is a member (every peer of a
  person or team account shares it), or the peer itself when it has no member (a person bridged
  from a chat). Over the rate: :class:`~meshhub.errors.RateLimited` with ``retry_after``.
- **Storage**: running totals of the bytes stored per account and in all (message bodies,
  uploaded files, shared-state values, memories) against ``member_quota_bytes`` and
  ``total_quota_bytes``. The totals are read back once, in the background, when the hub starts
  (so a start is not held up by a scan of every message), then kept up to date by every store.
- **Connections**: WebSockets per member and in total (``max_member_connections``,
  ``max_ws_connections``), and, under aiohttp, every open TCP or local-socket connection
  (``max_connections``) and the time a new one has to finish its first request head
  (``header_timeout``): :class:`SocketGuard`.

A limit of 0 means none. The buckets are a small class of our own: a refusal must say how long
to wait without waiting, which the async limiter libraries (built to make callers wait) do not
offer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import QuotaExceeded, RateLimited, TooManyConnections

if TYPE_CHECKING:
    from .config import Config
    from .hub import Hub
    from .models import Peer
    from .records import Record

log = logging.getLogger(__name__)

MAX_IDLE_BUCKETS = 10_000  # past this many buckets, full ones (idle accounts) are dropped


def account(peer: Peer) -> str:
    """Whose limits a peer's use counts against: its member's, else its own."""
    return peer.member_key or peer.key


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each use takes one."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is."""
        self.refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimit:
    """One bucket per account for one kind of use (``sends``, ``actions``)."""

    def __init__(self, what: str, rate: float, burst: int, settings: str) -> None:
        self.what, self.rate, self.burst, self.settings = what, rate, burst, settings
        self.buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    def check(self, key: str) -> None:
        """Count one use by ``key``; raise :class:`RateLimited` when its bucket is empty."""
        if not self.enabled:
            return
        now = time.monotonic()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_IDLE_BUCKETS:
                self._forget_idle(now)
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        wait = bucket.take(now)
        if wait:
            raise self._refusal(wait)

    def _refusal(self, wait: float) -> RateLimited:
        return RateLimited(
            f"too many {self.what}: at most {self.burst} at once and {self.rate:g} a second "
            f"after that ({self.settings}); try again in {max(wait, 0.1):.1f} s",
            retry_after=wait)

    def ready(self, key: str) -> None:
        """Raise :class:`RateLimited` if a use by ``key`` would be refused now, without
        counting one: for a feature that must know before it stores the first of two writes
        (an approval row, then its message)."""
        bucket = self.buckets.get(key)
        if not self.enabled or bucket is None:
            return
        bucket.refill(time.monotonic())
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / self.rate
            raise self._refusal(wait)

    def _forget_idle(self, now: float) -> None:
        for key, bucket in list(self.buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.burst:
                del self.buckets[key]


class StorageQuota:
    """Bytes stored per account and in all, against the two quotas."""

    def __init__(self, member_limit: int, total_limit: int) -> None:
        self.member_limit, self.total_limit = member_limit, total_limit
        self.used: dict[str, int] = {}
        self.total = 0
        self.loaded = False  # the bytes stored before this start have been counted

    def check(self, key: str, size: int) -> None:
        """Raise :class:`QuotaExceeded` if ``size`` more bytes for ``key`` would pass a quota."""
        used = self.used.get(key, 0)
        if self.member_limit and used + size > self.member_limit:
            raise self._refusal("member_quota_bytes", "this member's", used, self.member_limit,
                                size)
        if self.total_limit and self.total + size > self.total_limit:
            raise self._refusal("total_quota_bytes", "the hub's", self.total, self.total_limit,
                                size)

    @staticmethod
    def _refusal(quota: str, whose: str, used: int, limit: int, size: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"{whose} storage quota is full: {used} of {limit} bytes used, and this needs "
            f"{size} more ({quota}); nothing was stored", quota=quota, used=used, limit=limit,
            size=size)

    def add(self, key: str, size: int) -> None:
        self.used[key] = self.used.get(key, 0) + size
        self.total += size

    async def load(self, hub: Hub, before: float) -> None:
        """Count the message bodies stored before ``before`` (this start)."""
        for sender, size in (await hub.store.stored_bytes(before)).items():
            self.add(owner_account(hub, sender), size)
        self.loaded = True

    async def load_records(self, hub: Hub, collection: str,
                           measure: Callable[[Record], tuple[str, int]], before: float) -> None:
        """Count a feature's documents written before ``before`` (this start), a page at a
        time through the record API (any engine): ``measure`` says whose (a peer key) and
        how many bytes each is. Later writes count themselves as they are made."""
        cursor: str | None = None
        while True:
            page = await hub.records.find(collection, limit=1000, after=cursor)
            for record in page.records:
                if record.updated_at < before:
                    peer_key, size = measure(record)
                    self.add(owner_account(hub, peer_key), size)
            if page.cursor is None:
                return
            cursor = page.cursor


def owner_account(hub: Hub, peer_key: str) -> str:
    """The account a peer's stored bytes count against; the key itself once the peer is gone."""
    peer = hub.directory.peers.get(peer_key)
    return account(peer) if peer is not None else peer_key


class SocketGuard:
    """The protocol factory the hub's sites listen with: refuses a connection past
    ``max_connections`` open ones (closed at once, before aiohttp sees it), and closes one that
    has not finished its first request head within ``header_timeout`` seconds (a silent socket,
    or one sending its headers a byte at a time). Idle keep-alive connections after a request
    are aiohttp's to close (``keepalive_timeout``)."""

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections, self.header_timeout = max_connections, header_timeout
        self.server: web.Server | None = None
        self.open = 0
        self.refused = 0
        self._waiting: dict[Any, asyncio.TimerHandle] = {}

    def __call__(self) -> asyncio.Protocol:
        assert self.server is not None
        if self.max_connections and self.open >= self.max_connections:
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                log.warning("refused a connection: %d open, the most this hub keeps "
                            "(max_connections); %d refused so far", self.open, self.refused)
            return _Refused()
        self.open += 1
        return _Guarded(self, self.server())

    def head_received(self, handler: Any) -> None:
        """A request head arrived on ``handler``'s connection: no deadline any more."""
        timer = self._waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _arm(self, handler: Any) -> None:
        if self.header_timeout > 0:
            self._waiting[handler] = asyncio.get_running_loop().call_later(
                self.header_timeout, self._expire, handler)

    def _expire(self, handler: Any) -> None:
        if self._waiting.pop(handler, None) is not None:
            handler.force_close()

    def _lost(self, handler: Any) -> None:
        self.open -= 1
        self.head_received(handler)


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted while it is open."""

    __slots__ = ("guard", "handler")

    def __init__(self, guard: SocketGuard, handler: Any) -> None:
        self.guard, self.handler = guard, handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler.connection_made(transport)
        self.guard._arm(self.handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._lost(self.handler)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class GuardedRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose sites accept connections through a
    :class:`SocketGuard` (the sites ask the runner for their protocol factory)."""

    def __init__(self, app: web.Application, guard: SocketGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def setup(self) -> None:
        await super().setup()
        self.guard.server = super().server
        raise_file_limit(self.guard.max_connections)

    @property
    def server(self) -> Any:
        return self.guard if super().server is not None else None


FILE_MARGIN = 256  # descriptors beyond the connections: the database, files, the logs, pipes


def raise_file_limit(connections: int) -> None:
    """Raise this process's soft limit on open files (often 1024) toward its hard limit, so
    that ``max_connections`` is reached before the process runs out of descriptors (at which
    point it could not even open its database). Logged when the hard limit is too low."""
    import resource  # POSIX only, like the rest of the hub's process handling

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FILE_MARGIN if connections else hard
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
            return
        soft = target
    if connections and soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("max_connections is %d but this process may open only %d files (ulimit "
                    "-n); lower max_connections or raise the limit", connections, soft)


class Limits:
    """Every limit of one hub, from its config; kept on the hub as ``hub.limits``."""

    def __init__(self, config: Config) -> None:
        self.sends = RateLimit("sends", config.send_rate, config.send_burst,
                               "send_rate, send_burst")
        self.actions = RateLimit("actions", config.action_rate, config.action_burst,
                                 "action_rate, action_burst")
        self.storage = StorageQuota(config.member_quota_bytes, config.total_quota_bytes)
        self.sockets = SocketGuard(config.max_connections, config.header_timeout)
        self.max_member_connections = config.max_member_connections
        self.max_ws_connections = config.max_ws_connections
        self.websockets = 0
        self.member_websockets: dict[str, int] = {}

    def can_send(self, peer: Peer, size: int) -> None:
        """Raise what a send of ``size`` bytes by ``peer`` would be refused with now (its rate
        or a quota), counting nothing: checked before a feature stores a row that a refused
        send would leave behind."""
        self.sends.ready(account(peer))
        self.storage.check(account(peer), size)

    def check_action(self, peer: Peer) -> None:
        self.actions.check(account(peer))

    def open_websocket(self) -> None:
        """Count a new WebSocket; raise if the hub holds its most already."""
        if self.max_ws_connections and self.websockets >= self.max_ws_connections:
            raise TooManyConnections(
                f"the hub has {self.websockets} WebSocket connections open, its most "
                "(max_ws_connections); try again later")
        self.websockets += 1

    def close_websocket(self) -> None:
        self.websockets -= 1

    def check_room(self, key: str) -> None:
        """Raise if account ``key`` has its most WebSockets open (before a hello stores
        anything; :meth:`join` counts)."""
        count = self.member_websockets.get(key, 0)
        if self.max_member_connections and count >= self.max_member_connections:
            raise TooManyConnections(
                f"this member has {count} connections open, the most a member may "
                "(max_member_connections); close one and try again")

    def join(self, peer: Peer) -> None:
        """Count an admitted WebSocket against its member's cap; raise if it is full."""
        key = account(peer)
        self.check_room(key)
        self.member_websockets[key] = self.member_websockets.get(key, 0) + 1

    def leave(self, peer: Peer) -> None:
        key = account(peer)
        count = self.member_websockets.get(key, 0) - 1
        if count > 0:
            self.member_websockets[key] = count
        else:
            self.member_websockets.pop(key, None)
