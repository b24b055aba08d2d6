"""Delivery: pushing stored messages to recipients, leases, redelivery, acks and the TTL.

The delivery row is the only truth of whether a peer got a message. A push leases the row for
``lease_seconds``; the recipient's ack makes it ``delivered``; an expired lease or a reconnect
pushes it again (recipients dedupe by message id). Rows still undelivered after the TTL become
``dead`` with a reason. Priorities gate pushes by the recipient's status: ``now`` always pushes,
``next`` waits while the recipient is ``dnd``, ``low`` waits unless it is ``online`` or ``idle``;
a held message stays queued and is pushed when the status allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from . import codec
from .bridge.retry import every
from .store import StateChange

if TYPE_CHECKING:
    from .hub import Hub
    from .models import Message, Peer
    from .presence import Connection

log = logging.getLogger(__name__)

DRAIN_PAGE = 500
_GATES: dict[str, frozenset[str]] = {
    "now": frozenset({"online", "idle", "working", "dnd", "away", "offline"}),
    "next": frozenset({"online", "idle", "working", "away", "offline"}),
    "low": frozenset({"online", "idle"}),
}


def may_push(peer: Peer, priority: str) -> bool:
    return peer.status in _GATES.get(priority, _GATES["next"])


def _page_size(conn: Connection, frames: list[str]) -> int:
    """How many messages the next drain page reads: about what the connection's queue holds,
    so a backlog of large messages is not read into memory a whole page at a time."""
    if not frames:
        return DRAIN_PAGE
    average = max(1, sum(map(len, frames)) // len(frames))
    return max(10, min(DRAIN_PAGE, conn.max_queued // average))


class Dispatcher:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._tasks: list[asyncio.Task[None]] = []
        self._acks: list[StateChange] = []
        self._ack_flush: asyncio.Task[None] | None = None
        self._bridge_locks: dict[str, asyncio.Lock] = {}

    # -- frames ------------------------------------------------------------------------------
    def frame(self, message: Message) -> str:
        return codec.dumps({"type": "message", "message": self.hub.message_view(message)})

    # -- pushing -----------------------------------------------------------------------------
    def live_recipients(self, message: Message) -> set[str]:
        """Recipients to lease at insert time: connected, drained, and not held by priority."""
        presence, peers = self.hub.presence, self.hub.directory.peers
        return {
            r for r in message.recipients
            if presence.is_live(r) and may_push(peers[r], message.priority)
        }

    def push_accepted(self, message: Message, leased: set[str]) -> None:
        """Push a just-committed message to the recipients leased at insert time."""
        frame: str | None = None
        for recipient in message.recipients:
            if recipient in leased:
                conns = self.hub.presence.receivers(recipient)
                if conns:
                    frame = frame or self.frame(message)
                    for conn in conns:
                        conn.offer(frame)
                # no connection any more, or one that fell behind: the lease lapses and the
                # sweeper re-queues it, or the catch-up drain pushes it first
            else:
                peer = self.hub.directory.peers.get(recipient)
                if peer is not None and self.hub.is_bridged(peer):
                    self.hub.spawn(self.deliver_bridged(peer, message))

    async def deliver_bridged(self, peer: Peer, message: Message) -> None:
        """Hand a message to the connector that owns ``peer`` (Telegram, Slack, email...).

        The row is leased first, so a failure (an exception or a ``False`` answer) is retried
        when the lease expires; one peer's bridged deliveries run one at a time, in order.
        """
        lock = self._bridge_locks.setdefault(peer.key, asyncio.Lock())
        async with lock:
            store = self.hub.store
            lease = time.time() + self.hub.config.lease_seconds
            claimed = await store.change_states(
                [StateChange(message.id, peer.key, "pushed", lease)]
            )
            if not claimed[0]:
                return  # delivered, read or dead already
            try:
                ok = await self.hub.plugins.first("meshhub_deliver", hub=self.hub, peer=peer,
                                                  message=message)
            except Exception as exc:
                log.warning("delivery of %s to %s failed (retried after the lease): %s",
                            message.id, peer.name, exc)
                return
            if ok:
                await store.change_states([StateChange(message.id, peer.key, "delivered")])

    async def resume_bridged(self) -> None:
        """At start-up: hand connectors what their peers were sent while the hub was down."""
        for peer in list(self.hub.directory.peers.values()):
            if not self.hub.is_bridged(peer):
                continue
            cursor = ""
            while batch := await self.hub.store.pending_for(peer.key, DRAIN_PAGE, after=cursor):
                cursor = batch[-1].id
                for message in batch:
                    await self.deliver_bridged(peer, message)

    async def drain(self, conn: Connection) -> None:
        """Push everything pending for ``conn``'s peer, oldest first, then go live."""
        async with conn.drain_lock:
            await self._drain(conn)

    async def _drain(self, conn: Connection, queued_only: bool = False) -> None:
        peer = conn.peer
        store, cfg = self.hub.store, self.hub.config
        cursor = ""
        final = False
        # the first page as if every message were the largest (a backlog of big ones is not
        # read into memory 500 at a time); later pages are sized by what came before
        page = max(10, min(DRAIN_PAGE, conn.max_queued // cfg.max_body_bytes))
        while True:
            batch = await store.pending_for(peer.key, page, after=cursor,
                                            include_pushed=not queued_only)
            if not batch:
                if final:
                    break
                conn.live = True  # new messages go straight to it from here on
                final = True
                # a send that saw us not live yet has queued its insert before this point; with
                # a store whose insert is a coroutine it is only scheduled: let it run one step
                # (to its queue) before the final read, or it would be missed
                await asyncio.sleep(0)
                continue
            cursor = batch[-1].id
            pushable = [m for m in batch if may_push(peer, m.priority)]
            frames = [conn.render(self.frame(m)) for m in pushable]
            start = 0
            while start < len(frames):
                # lease only what fits now, so no lease runs out while it waits for room
                if not await conn.wait_room(len(frames[start])):
                    return
                end = start + 1
                room = conn.max_queued - conn.queued - len(frames[start])
                while end < len(frames) and len(frames[end]) <= room:
                    room -= len(frames[end])
                    end += 1
                lease = time.time() + cfg.lease_seconds
                await store.change_states(
                    [StateChange(m.id, peer.key, "pushed", lease) for m in pushable[start:end]]
                )
                for frame in frames[start:end]:
                    conn.send_raw(frame)
                start = end
            if conn.ws.closed:
                return
            page = _page_size(conn, frames)

    async def redrain(self, peer_key: str) -> None:
        """After a status change, push what the old status held back (still queued)."""
        for conn in self.hub.presence.receivers(peer_key):
            async with conn.drain_lock:
                await self._drain(conn, queued_only=True)

    # -- acks --------------------------------------------------------------------------------
    def ack(self, peer: Peer, message_ids: list[str], state: str = "delivered") -> None:
        """Record acks; they are written together on the next loop turn."""
        self._acks += [StateChange(mid, peer.key, state) for mid in message_ids]
        if self._ack_flush is None:
            self._ack_flush = asyncio.create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        await asyncio.sleep(0)
        changes, self._acks = self._acks, []
        self._ack_flush = None
        try:
            await self.hub.store.advance(changes)
        except Exception:
            log.exception("could not record %d acks", len(changes))

    # -- sweeping ----------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._sweep_leases(), name="lease-sweeper"))
        self._tasks.append(asyncio.create_task(self._sweep_ttl(), name="ttl-sweeper"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ack_flush is not None:
            with contextlib.suppress(Exception):
                await self._ack_flush

    async def _sweep_leases(self) -> None:
        tick = max(0.05, min(self.hub.config.lease_seconds / 3, 5.0))
        await every(tick, self.sweep_leases_once, log, "lease sweep failed")

    async def sweep_leases_once(self) -> int:
        store, cfg = self.hub.store, self.hub.config
        expired = await store.expired_leases(time.time(), 1000)
        by_peer: dict[str, list[str]] = defaultdict(list)
        for message_id, recipient in expired:
            by_peer[recipient].append(message_id)
        for recipient, ids in by_peer.items():
            peer = self.hub.directory.peers.get(recipient)
            if peer is not None and self.hub.is_bridged(peer):
                for message_id in ids:
                    message = await store.get_message(message_id)
                    if message is not None:
                        self.hub.spawn(self.deliver_bridged(peer, message))
                continue
            conns = self.hub.presence.receivers(recipient)
            if not conns:
                await store.change_states([StateChange(m, recipient, "queued") for m in ids])
                continue
            lease = time.time() + cfg.lease_seconds
            changed = await store.change_states(
                [StateChange(m, recipient, "pushed", lease) for m in ids]
            )
            for message_id, ok in zip(ids, changed, strict=True):
                message = await store.get_message(message_id) if ok else None
                if message is not None:
                    frame = self.frame(message)
                    for conn in conns:
                        conn.offer(frame)  # one behind takes nothing: its catch-up will
        return len(expired)

    async def _sweep_ttl(self) -> None:
        while True:
            try:
                cutoff = time.time() - self.hub.config.ttl_seconds
                dead = await self.hub.store.expire_older_than(
                    cutoff, f"undelivered after the {self.hub.config.ttl_seconds:.0f} s TTL"
                )
                if dead:
                    log.info("%d deliveries passed their TTL", dead)
            except Exception:
                log.exception("TTL sweep failed")
            await asyncio.sleep(min(60.0, max(1.0, self.hub.config.ttl_seconds / 10)))
