#!/usr/bin/env python
"""Slack event in -> a connected peer's receipt: latency through a real hub, against bolt alone.

    python bench/slack_latency.py [--events 1000] [--json] [--quick] [--summary-json]
                                  [--pause-ms 5] [--synchronous FULL|NORMAL|OFF]

Everything on 127.0.0.1, every child stopped by handle at the end (even on error):

- the fake Slack (tests/fakes/slack_api.py) in this process, in Events API mode, with one
  Slack user let in by the allow-list and their direct message channel with the app;
- the hub: ``hub start`` as a child process with a temporary MESHHUB_HOME, its Slack connector
  pointed at the fake (``MESHHUB_SLACK_*``); Slack events reach it at ``/slack/events``;
- ``carl`` as a :class:`MeshClient` in this process;
- the **baseline**: a bare slack-bolt ``AsyncApp`` with the same signing secret and Web API,
  served by aiohttp through ``slack_bolt.adapter.aiohttp`` in a child process (this file with
  ``--serve-baseline``), whose ``message`` listener forwards each text over a WebSocket to this
  process: bolt handling the same signed events, with no hub. It runs in a child, as the hub
  does, so both paths cross the same two process boundaries (the signed POST in, a WebSocket
  frame out) and neither server shares its interpreter with the fake and the measuring clients.

Each event is a direct message built by the fake (``channel_type`` "im"): ``@carl 0`` first,
which makes carl the user's target, then plain text. The clock starts just before the fake's
signed POST of the event (``FakeSlack.send_event`` signs it) and stops when carl's client (or
the baseline's socket reader) has the message; the POST's answer must be 200. One event at a
time, hub and baseline in turns (which goes first alternates), after a pause that lets the hub
finish what it does after a delivery (marking the event handled), so machine noise and leftover
work hit both alike. Goals: hub p50 <= 5 ms and hub p50 <= 2x the baseline's p50; the p99s and
their ratio are printed beside them.

``--pause-ms`` sets that pause (both paths are slower after a longer idle time: waking an idle
process costs too); ``--synchronous`` the hub's ``sqlite_synchronous``, to see what the fsync of
the commit before a delivery (the message) costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import tomli_w
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from goals import Goal, report  # noqa: E402
from telegram_latency import HOST, free_port, start_hub, stop_process, summary  # noqa: E402

from meshhub import codec  # noqa: E402
from meshhub.client import MeshClient  # noqa: E402
from meshhub.config import init_home, load_signing_key  # noqa: E402
from tests.fakes.slack_api import TEAM, FakeSlack, SlackUser  # noqa: E402

GOAL_P50_MS = 5.0
GOAL_RATIO = 2.0
WARMUP = 50
PAUSE_MS = 5.0  # between turns: the hub marks an event handled after delivering it
USER = SlackUser("UBENCH001", "bench", real_name="Bench User", display_name="Bench User")
PEER = "Bench-User"  # the user's name on the mesh
Receive = Callable[[], Awaitable[str]]


# -- the baseline server (a child process) ------------------------------------------------------
def serve_baseline(port: int, api_url: str) -> None:
    """A bare bolt app over aiohttp: ``/slack/events`` as the hub serves it, and ``/ws``, where
    every message the listener gets is sent as a ``{"text": ...}`` frame."""
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
    from slack_bolt.app.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    sockets: set[web.WebSocketResponse] = set()

    async def make() -> web.Application:
        session = aiohttp.ClientSession(trust_env=False)
        client = AsyncWebClient(token=FakeSlack.bot_token, base_url=api_url, session=session)
        bolt = AsyncApp(client=client, signing_secret=FakeSlack.signing_secret,
                        process_before_response=False)

        @bolt.message()
        async def forward(message: dict[str, Any]) -> None:
            frame = codec.dumps({"text": message.get("text")})
            for socket in list(sockets):
                await socket.send_str(frame)

        async def events(request: web.Request) -> web.Response:
            return await to_aiohttp_response(
                await bolt.async_dispatch(await to_bolt_request(request)))

        async def listen(request: web.Request) -> web.WebSocketResponse:
            socket = web.WebSocketResponse()
            await socket.prepare(request)
            sockets.add(socket)
            try:
                async for _ in socket:
                    pass
            finally:
                sockets.discard(socket)
            return socket

        async def close(_: web.Application) -> None:
            await session.close()

        app = web.Application()
        app.on_cleanup.append(close)
        app.router.add_post("/slack/events", events)
        app.router.add_get("/ws", listen)
        return app

    web.run_app(make(), host=HOST, port=port, print=None, access_log=None)


def start_baseline(port: int, api_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(port),
                             "--api-url", api_url], stdin=subprocess.DEVNULL)


async def baseline_reader(http: aiohttp.ClientSession, port: int
                          ) -> tuple[Receive, asyncio.Task[None]]:
    """Connect to the baseline's ``/ws`` (waiting for it to start); a reader task puts each
    text on a queue, as :class:`MeshClient` does with the hub's frames."""
    deadline = time.monotonic() + 20
    while True:
        try:
            socket = await http.ws_connect(f"http://{HOST}:{port}/ws")
            break
        except aiohttp.ClientError:
            if time.monotonic() > deadline:
                raise RuntimeError("the baseline did not start within 20 s") from None
            await asyncio.sleep(0.05)
    texts: asyncio.Queue[str] = asyncio.Queue()

    async def read() -> None:
        async for frame in socket:
            if frame.type == aiohttp.WSMsgType.TEXT:
                texts.put_nowait(codec.loads(frame.data)["text"])

    async def receive() -> str:
        return await asyncio.wait_for(texts.get(), 10)

    return receive, asyncio.create_task(read())


def set_synchronous(home: Path, value: str) -> None:
    """The hub's ``[hub] sqlite_synchronous`` (OFF or NORMAL: what the per-commit fsync costs)."""
    raw = tomllib.loads((home / "config.toml").read_text())
    raw.setdefault("hub", {})["sqlite_synchronous"] = value
    (home / "config.toml").write_text(tomli_w.dumps(raw))


# -- measuring --------------------------------------------------------------------------------
class Route:
    """One way an event can take: where it is posted, how its arrival is awaited."""

    def __init__(self, name: str, url: str, receive: Receive) -> None:
        self.name, self.url, self.receive = name, url, receive
        self.latencies: list[float] = []

    async def turn(self, slack: FakeSlack, dm: str, text: str, expected: str) -> float:
        """Post one event and wait for its text; the seconds between."""
        event = slack.message(USER, text, dm, channel_type="im")
        slack.events_url = self.url
        started = time.perf_counter()
        post = asyncio.create_task(slack.send_event(event))
        try:
            got = await self.receive()
            elapsed = time.perf_counter() - started
        finally:
            status, body = await post
        if status != 200:
            raise RuntimeError(f"{self.name}: the event was answered {status} {body!r}")
        if got != expected:
            raise RuntimeError(f"{self.name}: got {got!r}, expected {expected!r}")
        return elapsed


def carl_receiver(carl: MeshClient) -> Receive:
    """carl's next message text; checks who sent it and acks it (after the clock stopped)."""
    acks: set[asyncio.Task[None]] = set()

    async def receive() -> str:
        message = await carl.next_message(10)
        if message.get("from") != PEER:
            raise RuntimeError(f"carl got a message from {message.get('from')!r}, not {PEER}")
        acking = asyncio.create_task(carl.ack(message["id"]))  # runs once the clock stopped
        acks.add(acking)
        acking.add_done_callback(acks.discard)
        return str(message["text"])

    return receive


async def first_event(slack: FakeSlack, dm: str, hub: Route) -> None:
    """``@carl 0``: admits the user and makes carl their target. Retried while the connector
    answers 503 (it is still asking the fake's ``auth.test``)."""
    slack.events_url = hub.url
    deadline = time.monotonic() + 20
    while True:
        status, body = await slack.send_event(slack.message(USER, "@carl 0", dm,
                                                            channel_type="im"))
        if status == 200:
            break
        if status != 503 or time.monotonic() > deadline:
            raise RuntimeError(f"the hub answered the first event {status} {body!r}")
        await asyncio.sleep(0.1)
    if await hub.receive() != "0":
        raise RuntimeError("carl did not get the first event's text")


async def interleave(slack: FakeSlack, dm: str, paths: list[Route], n: int,
                     pause: float) -> None:
    """``WARMUP + n`` turns of each path; the order of the paths alternates every round."""
    for i in range(1, WARMUP + n + 1):
        for path in paths if i % 2 else paths[::-1]:
            await asyncio.sleep(pause)
            elapsed = await path.turn(slack, dm, f"event {i}", f"event {i}")
            if i > WARMUP:
                path.latencies.append(elapsed)


async def measure(root: Path, n: int, pause: float, synchronous: str | None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    procs: list[subprocess.Popen[bytes]] = []
    reader: asyncio.Task[None] | None = None
    async with FakeSlack() as slack:
        slack.echo_bot_messages = False  # the hub posts nothing here; keep it that way
        slack.add_user(USER)
        dm = str(slack.open_dm([USER.id])["id"])
        try:
            home, hub_port, base_port = root / "hub", free_port(), free_port()
            init_home(home, "owner")
            if synchronous:
                set_synchronous(home, synchronous)
            procs.append(start_baseline(base_port, slack.api_url))
            env = {"MESHHUB_SLACK_BOT_TOKEN": slack.bot_token,
                   "MESHHUB_SLACK_SIGNING_SECRET": slack.signing_secret,
                   "MESHHUB_SLACK_API_URL": slack.api_url,
                   "MESHHUB_SLACK_ALLOW": f"{TEAM}/{USER.id}"}
            procs.append(await asyncio.to_thread(start_hub, home, hub_port, env))
            carl_home = root / "carl"
            init_home(carl_home, "carl")
            url = f"http://{HOST}:{hub_port}"
            async with MeshClient(url, load_signing_key(carl_home), name="carl") as carl, \
                    aiohttp.ClientSession() as http:
                receive, reader = await baseline_reader(http, base_port)
                hub = Route("hub", f"{url}/slack/events", carl_receiver(carl))
                base = Route("baseline", f"http://{HOST}:{base_port}/slack/events", receive)
                await first_event(slack, dm, hub)
                await interleave(slack, dm, [hub, base], n, pause)
            return summary(hub.latencies), summary(base.latencies)
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            for proc in procs:
                await asyncio.to_thread(stop_process, proc)


async def bench(n: int, pause_ms: float, synchronous: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meshhub-slack-bench-") as tmp:
        hub, base = await measure(Path(tmp), n, pause_ms / 1000, synchronous)
    return {"events": n, "warmup": WARMUP, "pause_ms": pause_ms,
            "sqlite_synchronous": synchronous or "hub default (FULL)", "hub": hub,
            "baseline": base,
            "p50_ratio": round(hub["p50_ms"] / base["p50_ms"], 2),
            "p99_ratio": round(hub["p99_ms"] / base["p99_ms"], 2),
            "goal_p50_ms": GOAL_P50_MS, "goal_p50_ratio": GOAL_RATIO}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--pause-ms", type=float, default=PAUSE_MS,
                        help=f"idle time before each turn (default {PAUSE_MS:g})")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL", "OFF"], default=None,
                        help="the hub's [hub] sqlite_synchronous (default: the hub's own)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a brief run (--events 200)")
    parser.add_argument("--summary-json", action="store_true",
                        help="also print the GOALS line bench/run-all reads")
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.api_url)
        return
    if args.quick:
        args.events = 200
    out = asyncio.run(bench(args.events, args.pause_ms, args.synchronous))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        hub, base = out["hub"], out["baseline"]
        print(f"slack event -> peer receipt, {args.events} events each (after {WARMUP} "
              f"warm-up), hub and baseline in turns, {args.pause_ms:g} ms apart, sqlite "
              f"synchronous: {out['sqlite_synchronous']}")
        print(f"  hub:      p50 {hub['p50_ms']:.2f} ms   p99 {hub['p99_ms']:.2f} ms   "
              f"mean {hub['mean_ms']:.2f} ms   max {hub['max_ms']:.2f} ms")
        print(f"  baseline: p50 {base['p50_ms']:.2f} ms   p99 {base['p99_ms']:.2f} ms   "
              f"mean {base['mean_ms']:.2f} ms   max {base['max_ms']:.2f} ms   (bolt alone)")
        print(f"  hub/baseline: p50 {out['p50_ratio']:.2f}x   p99 {out['p99_ratio']:.2f}x")
    hub_p50, base_p50 = out["hub"]["p50_ms"], out["baseline"]["p50_ms"]
    report([Goal("slack", "event -> peer p50", hub_p50, "ms", GOAL_P50_MS, baseline=base_p50,
                 ratio_goal=False),
            Goal("slack", "event -> peer p50 vs bolt", hub_p50, "ms", GOAL_RATIO,
                 baseline=base_p50)], args.summary_json)


if __name__ == "__main__":
    main()
