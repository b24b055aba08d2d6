"""Backpressure: a peer that stops reading costs the hub a bounded amount of memory, is not pushed
more (not even by the lease sweeper), and gets everything once it reads again; one that stays
stuck is cut. The reader is a real process, stopped with SIGSTOP so it takes nothing from its
socket; the hub is a real ``hub start`` process whose RSS is read from the system."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from .helpers import HubProcess, Identity, base_env, read_line

MESSAGES = 3000
BODY = 60_000
MB = 1024 * 1024
GROWTH_BOUND = 64 * MB  # docs/operations.md, "Limits under abuse"
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def reader_process(hub: HubProcess, who: Identity) -> Iterator[subprocess.Popen[str]]:
    """The reader peer's process, welcomed; killed at the end (continued first if stopped)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reader_peer", hub.url, str(who.home), who.name],
        cwd=ROOT, env=base_env(who.home), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert read_line(proc).strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(10)


class RssSampler:
    """The hub process's RSS, sampled every 100 ms while it runs; ``peak`` is the highest."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            await asyncio.sleep(0.1)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def settled_rss(sampler: RssSampler, seconds: float = 3.0) -> int:
    """The RSS once it stops falling (the lowest seen over ``seconds``)."""
    low = sampler.now()
    for _ in range(int(seconds / 0.25)):
        await asyncio.sleep(0.25)
        low = min(low, sampler.now())
    return low


async def flood(client: Any, to: str, count: int) -> None:
    """``count`` sends of about 60 KB, pipelined (a window of 64 unanswered)."""
    pending: set[asyncio.Future[Any]] = set()
    for i in range(count):
        pending.add(await client.call_nowait("send", to=to, text=f"{i:05d} " + "x" * BODY))
        if len(pending) >= 64:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                future.result()
    for future in pending:
        await future


def read_ids(proc: subprocess.Popen[str], want: int, timeout: float) -> Counter[str]:
    """Lines the reader prints until it has ``want`` distinct message ids (its ``ready`` and
    ``lost`` lines are counted under those names)."""
    seen: Counter[str] = Counter()
    while len(seen.keys() - {"ready", "lost"}) < want:
        line = read_line(proc, timeout).strip()
        assert line, f"the reader ended after {len(seen)} of {want} messages"
        seen[line] += 1
    return seen


async def test_a_reader_that_stops_costs_bounded_memory_and_gets_everything_later(
        hub_factory: Any, people: Any) -> None:
    # a 2 s lease: the sweeper runs every ~0.7 s, many times while the reader is stopped
    # the send rate is off: this is about what a stopped reader costs, not about the flood
    hub = hub_factory(MESHHUB_LEASE_SECONDS="2", MESHHUB_STALL_SECONDS="600",
                      MESHHUB_SEND_RATE="0")
    slow, fast = people("slow", "fast")
    with reader_process(hub, slow) as reader:
        async with fast.client(hub.url) as sender:
            sampler = RssSampler(hub.proc.pid)
            idle = await settled_rss(sampler, 1.0)
            os.kill(reader.pid, signal.SIGSTOP)
            with sampler:
                await flood(sender, "slow", MESSAGES)
                await asyncio.sleep(6)  # several lease sweeps while it still reads nothing
                grown = sampler.peak - idle
                assert grown < GROWTH_BOUND, f"RSS grew {grown / MB:.0f} MB over idle"
                os.kill(reader.pid, signal.SIGCONT)
                # the catch-up that follows is bounded too: it reads the store a page at a time
                seen = await asyncio.to_thread(read_ids, reader, MESSAGES, 60)
            grown = sampler.peak - idle
            assert grown < GROWTH_BOUND, f"RSS grew {grown / MB:.0f} MB over idle, catching up"
            # a sweeper that re-pushed into the full socket would have sent each several times;
            # what may come twice is only what was in flight, unacked, when it stopped
            repeats = sum(seen.values()) - seen["ready"] - seen["lost"] - MESSAGES
            assert repeats < 500, f"{repeats} messages pushed again"
        reader.terminate()
        reader.wait(10)
        with sampler:
            after = await settled_rss(sampler)
        assert after <= idle * 1.10, f"RSS {after / MB:.0f} MB after, {idle / MB:.0f} MB idle"


async def test_a_reader_stuck_past_the_deadline_is_cut_and_gets_the_rest_on_return(
        hub_factory: Any, people: Any) -> None:
    hub = hub_factory(MESHHUB_STALL_SECONDS="2", MESHHUB_SEND_RATE="0")
    slow, fast = people("slow", "fast")
    with reader_process(hub, slow) as reader:
        async with fast.client(hub.url) as sender:
            os.kill(reader.pid, signal.SIGSTOP)
            await flood(sender, "slow", 600)
            stalled = "cut the connection of slow: it has taken nothing"
            for _ in range(600):  # the heartbeat notices within about a second of the 2 s
                if stalled in hub.log.read_text():
                    break
                await asyncio.sleep(0.1)
            assert stalled in hub.log.read_text()
            os.kill(reader.pid, signal.SIGCONT)
            seen = read_ids(reader, 600, timeout=60)  # after its reconnect: nothing lost
            assert seen["lost"] == 1 and seen["ready"] == 1  # cut once, back once


async def test_a_large_answer_is_not_taken_for_a_reader_that_stopped(
        hub_factory: Any, people: Any) -> None:
    """An answer bigger than the queue's bound (an ``inbox`` of 300 messages of 60 KB, 18 MB)
    is one frame the client asked for: it is sent whole, and the connection lives on."""
    hub = hub_factory(MESHHUB_SEND_RATE="0")
    ann, bob = people("ann", "bob")
    async with bob.client(hub.url):
        pass  # bob exists, and is offline while ann writes
    async with ann.client(hub.url, receive=False) as sender:
        await flood(sender, "bob", 300)
    async with bob.client(hub.url, receive=False) as reader:
        answer = await reader.inbox(limit=300)
        assert len(answer["messages"]) == 300
        assert (await reader.call("whoami"))["name"] == "bob"  # still connected
