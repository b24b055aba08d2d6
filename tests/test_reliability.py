"""Durability and delivery guarantees against a real hub process, including SIGKILL."""

from __future__ import annotations

import asyncio

from meshhub.errors import MeshError

from .helpers import collect, no_message

OFFLINE_BACKLOG = 10_000
BURST = 5_000
WINDOW = 256


async def _pipelined(client, target: str, texts: list[tuple[str, str]],
                     acked: dict[str, str], stop_after: int | None = None,
                     on_progress=None) -> list[str]:
    """Send with up to WINDOW calls in flight; record what the hub acknowledged.

    Returns the client ids whose result never came (the hub died first).
    """
    unanswered: list[str] = []
    in_flight: list[tuple[str, asyncio.Future]] = []

    async def settle(entry: tuple[str, asyncio.Future]) -> None:
        cid, fut = entry
        try:
            result = await fut
        except (ConnectionError, MeshError):
            unanswered.append(cid)
        else:
            acked[cid] = result["id"]
            if on_progress is not None:
                on_progress(len(acked))

    for cid, text in texts:
        try:
            fut = await client.call_nowait("send", to=target, text=text, client_id=cid)
        except (ConnectionError, OSError):
            unanswered.append(cid)
            continue
        in_flight.append((cid, fut))
        if len(in_flight) >= WINDOW:
            await settle(in_flight.pop(0))
    for entry in in_flight:
        await settle(entry)
    return unanswered


async def test_sigkill_loses_nothing_acknowledged_and_duplicates_nothing(hub_factory, people):
    ann, bob = people("ann", "bob")
    hub = hub_factory(MESHHUB_SEND_RATE="0")  # 15,000 sends from one member: no send rate
    async with bob.client(hub.url):
        pass  # bob exists, then goes offline
    texts = [(f"c{i}", f"message {i}") for i in range(OFFLINE_BACKLOG + BURST)]
    acked: dict[str, str] = {}
    async with ann.client(hub.url) as a:
        unanswered = await _pipelined(a, "bob", texts[:OFFLINE_BACKLOG], acked)
        assert not unanswered and len(acked) == OFFLINE_BACKLOG

    # a later burst, killed with SIGKILL part-way through
    killed = asyncio.Event()

    def progress(n: int) -> None:
        if n >= OFFLINE_BACKLOG + BURST // 3 and not killed.is_set():
            killed.set()
            hub.kill()

    async with ann.client(hub.url) as a:
        unanswered = await _pipelined(a, "bob", texts[OFFLINE_BACKLOG:], acked,
                                      on_progress=progress)
    assert killed.is_set() and unanswered, "the kill did not land mid-burst"
    burst_acked = len(acked) - OFFLINE_BACKLOG
    assert 0 < burst_acked < BURST

    hub.start()  # same home, same port
    received: list[dict] = []
    async with bob.client(hub.url) as b:
        while True:
            try:
                message = await b.next_message(timeout=5)
            except TimeoutError:
                break
            await b.ack(message["id"])
            received.append(message)
        ids = [m["id"] for m in received]
        assert len(ids) == len(set(ids)), "a message reached the application twice"
        # every message the hub acknowledged arrived
        assert set(acked.values()) <= set(ids)
        # in order: message i before message j for i < j
        numbers = [int(m["text"].split()[1]) for m in received]
        assert numbers == sorted(numbers)
        # a message that was never acknowledged may have been stored (killed between commit
        # and ack); the sender resends those with their client ids: still exactly once
        async with ann.client(hub.url) as a:
            resend = {cid: text for cid, text in texts if cid in unanswered}
            results = {cid: await a.send("bob", resend[cid], client_id=cid) for cid in resend}
        fresh = [r for r in results.values() if not r["duplicate"]]
        received += await collect(b, len(fresh), timeout=10)
        assert await no_message(b, 0.5)
    ids = [m["id"] for m in received]
    assert len(ids) == len(set(ids)) == OFFLINE_BACKLOG + BURST


async def test_unacked_message_comes_back_after_its_lease(hub_factory, people):
    ann, bob = people("ann", "bob")
    hub = hub_factory(MESHHUB_LEASE_SECONDS="1")
    async with ann.client(hub.url) as a, bob.client(hub.url, dedupe=False) as b:
        sent = await a.send("bob", "ack me")
        first = await b.next_message(timeout=5)
        assert first["id"] == sent["id"]
        again = await b.next_message(timeout=5)  # no ack: the lease runs out, it is pushed again
        assert again["id"] == sent["id"]
        await b.ack(sent["id"])
        await asyncio.sleep(0.3)
        status = await a.message_status(sent["id"])
        assert status["recipients"][0]["state"] == "delivered"
        assert status["recipients"][0]["attempts"] >= 2
        assert await no_message(b, 2.5)  # acked: never again


async def test_reconnect_within_grace_is_silent(hub_factory, people):
    ann, bob = people("ann", "bob")
    hub = hub_factory()  # grace window: the default 90 s
    async with ann.client(hub.url) as a:
        b = bob.client(hub.url)
        await b.connect()
        joined = await asyncio.wait_for(a.events.get(), 5)  # new on the mesh...
        assert (joined["change"], joined["peer"]["name"]) == ("joined", "bob")
        online = await asyncio.wait_for(a.events.get(), 5)  # ...and connected
        assert (online["change"], online["peer"]["name"], online["peer"]["reach"]) == (
            "online", "bob", "live")
        await b.close()
        await a.send("bob", "while you were away")
        await asyncio.sleep(0.5)
        async with bob.client(hub.url) as b2:
            assert b2.welcome["resumed"] is True
            assert (await collect(b2, 1))[0]["text"] == "while you were away"
        await asyncio.sleep(0.5)
        assert a.events.empty(), f"others saw presence events: {a.events.get_nowait()}"
        peers = {p["name"]: p for p in await a.peers()}
        assert peers["bob"]["online"] is True  # still inside the grace window


async def test_leaving_for_longer_than_grace_is_announced(hub_factory, people):
    ann, bob = people("ann", "bob")
    hub = hub_factory(MESHHUB_GRACE_SECONDS="0.5")
    async with ann.client(hub.url) as a:
        async with bob.client(hub.url):
            for change in ("joined", "online"):
                assert (await asyncio.wait_for(a.events.get(), 5))["change"] == change
        left = await asyncio.wait_for(a.events.get(), 5)
        assert (left["change"], left["peer"]["name"], left["peer"]["status"]) == (
            "offline", "bob", "offline")
        assert (left["peer"]["online"], left["peer"]["reach"]) == (False, "inbox")


async def test_stale_connection_is_closed_after_pong_timeout(hub_factory, people):
    (ann,) = people("ann")
    hub = hub_factory(MESHHUB_PING_INTERVAL="0.2", MESHHUB_PONG_TIMEOUT="1")
    client = ann.client(hub.url)
    await client.connect()
    ws = client._ws
    assert ws is not None
    # stop answering pings: a half-dead peer behind a NAT looks like this
    ws._autoping = False
    client._reader.cancel()
    closed_at = None
    for _ in range(60):
        await asyncio.sleep(0.1)
        msg = await ws.receive(timeout=1) if not ws.closed else None
        if ws.closed or (msg is not None and msg.type.name in ("CLOSE", "CLOSED")):
            closed_at = True
            break
    assert closed_at, "the hub kept a connection that never answered its pings"
    await client.close()


async def test_ttl_marks_undelivered_messages_dead_with_a_reason(hub_factory, people):
    ann, bob = people("ann", "bob")
    hub = hub_factory(MESHHUB_TTL_SECONDS="1")
    async with bob.client(hub.url):
        pass
    async with ann.client(hub.url) as a:
        sent = await a.send("bob", "you will never read this")
        for _ in range(50):
            status = await a.message_status(sent["id"])
            if status["recipients"][0]["state"] == "dead":
                break
            await asyncio.sleep(0.2)
        row = status["recipients"][0]
        assert row["state"] == "dead" and "TTL" in row["reason"]
    async with bob.client(hub.url) as b:
        assert await no_message(b, 0.5)
