"""MCP latency: send+read through the tools and message-to-notification push, over stdio and over
HTTP, against a real hub on 127.0.0.1, with a bare MCP echo server on the same transports as the
baseline (the SDK and transport cost alone).

    python bench/mcp_latency.py [--n 300] [--quick] [--summary-json]

Rows (p50 / p99 in ms):
* ``send+read``: one ``mesh_send`` by session A then one ``mesh_inbox`` by session B (mode
  ``off``, so the message waits for the read); baseline: two echo tool calls.
* ``push``: a peer sends (WebSocket client in this process) until session C (mode ``push``) gets
  the ``notifications/claude/channel``. Baseline on stdio: a tool call that makes the echo server
  write a channel notification, until it arrives. Baseline on HTTP: a WebSocket frame to the bare
  server (the hub's peer gets a WebSocket too) that it writes as a channel notification on the
  session's GET stream through the same ``HttpEndpoint`` sender the hub's ``/mcp`` uses.
Goals (issue 9): send+read p50 <= 1.3x its baseline on both transports, push p50 <= 1.2x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx2
from goals import Goal, report
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client import NotificationBinding
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel

import meshhub_mcp
from meshhub.client import MeshClient
from meshhub.config import init_home, load_signing_key
from meshhub_mcp.sdk import CHANNEL_METHOD

HUB = str(Path(sys.executable).with_name("hub"))
PROBE = str(Path(meshhub_mcp.__file__).with_name("_probe_stdio_server.py"))
LIMITS = {"send+read": 1.3, "push": 1.2}  # p50 over the baseline's p50
Row = tuple[str, str, list[float], list[float]]  # transport, what, samples, baseline samples


class Channel(BaseModel):
    content: str
    meta: dict[str, str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(home: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHHUB_")}
    return {**env, "MESHHUB_HOME": str(home), "MESHHUB_URL": url, **extra}


class Arrivals:
    """The channel notifications of one session, matched to the sample waiting for them.

    A sample ends only at the notification carrying its own payload that arrived after the
    sample started: a duplicate, a re-pushed delivery, a warm-up straggler or the probe's
    greeting is ignored, so it cannot end a later sample early (or before it began). Every
    payload is unique in the run (:func:`payload`)."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.payload, self.t0, self.at = "", 0.0, 0.0

    async def handler(self, params: Channel) -> None:
        at = time.perf_counter()
        # the hub's content is "<sender> in a direct message: <text>"; the baselines' is <text>
        if self.payload and params.content.endswith(self.payload) and at >= self.t0:
            self.payload, self.at = "", at
            self.event.set()

    def binding(self) -> NotificationBinding[Channel]:
        return NotificationBinding(method=CHANNEL_METHOD, params_type=Channel,
                                   handler=self.handler)

    def expect(self, payload: str) -> float:
        """Start a sample that ends when ``payload`` arrives; returns its start time. Called
        before the payload is sent, since its notification may arrive before the send
        returns."""
        self.event = anyio.Event()
        self.payload, self.t0 = payload, time.perf_counter()
        return self.t0

    async def arrival(self) -> float:
        with anyio.fail_after(10):
            await self.event.wait()
        return self.at


_payloads = itertools.count()


def payload() -> str:
    """A payload unique in the run: "p<n>" (no "p<n>" is the end of another, so matching the
    end of the hub's content is exact)."""
    return f"p{next(_payloads)}"


@contextlib.asynccontextmanager
async def stdio(params: StdioServerParameters) -> AsyncIterator[tuple[ClientSession, Arrivals]]:
    arrivals = Arrivals()
    async with stdio_client(params) as (r, w), ClientSession(
        r, w, notification_bindings=[arrivals.binding()]
    ) as session:
        await session.initialize()
        yield session, arrivals


@contextlib.asynccontextmanager
async def http(url: str, token: str) -> AsyncIterator[tuple[ClientSession, Arrivals]]:
    arrivals = Arrivals()
    # the GET stream is idle for whole phases: httpx's default 5 s read timeout would end it
    timeout = httpx2.Timeout(30, read=300)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                  timeout=timeout) as client, \
            streamable_http_client(url, http_client=client) as (r, w), \
            ClientSession(r, w, notification_bindings=[arrivals.binding()]) as session:
        await session.initialize()
        yield session, arrivals
        await anyio.sleep(0.05)


def stage(what: str) -> None:
    print(f"... {what} done", file=sys.stderr, flush=True)


def stats(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


async def time_send_read(a: ClientSession, b: ClientSession, to: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await a.call_tool("mesh_send", {"to": to, "text": f"m{i}"})
        res = await b.call_tool("mesh_inbox", {"limit": 5})
        out.append(time.perf_counter() - t0)
        assert not res.is_error
    return out


async def time_push(sender: MeshClient, to: str, arrivals: Arrivals, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = arrivals.expect(text := payload())
        await sender.call_nowait("send", to=to, text=text)
        out.append(await arrivals.arrival() - t0)
    return out


async def time_echo_pair(s: ClientSession, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await s.call_tool("echo", {"x": "a"})
        await s.call_tool("echo", {"x": "b"})
        out.append(time.perf_counter() - t0)
    return out


async def time_ws_push(ws: aiohttp.ClientWebSocketResponse, arrivals: Arrivals,
                       n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = arrivals.expect(text := payload())
        await ws.send_str(json.dumps({"text": text}))
        out.append(await arrivals.arrival() - t0)
    return out


async def time_echo_push(s: ClientSession, arrivals: Arrivals, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = arrivals.expect(text := payload())
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.call_tool, "push", {"x": text})
            out.append(await arrivals.arrival() - t0)
    return out


def start_hub(root: Path, synchronous: str | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    home = root / "hub"
    init_home(home, "hub")
    if synchronous:  # what the per-commit fsync costs a call (the hub's default is FULL)
        config = home / "config.toml"
        text = config.read_text()
        table = "" if text.rstrip().endswith("[hub]") else "\n[hub]\n"
        config.write_text(f'{text}{table}sqlite_synchronous = "{synchronous}"\n')
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([HUB, "start", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"],
                            # back-to-back samples pass the per-member rates (meshhub.limits);
                            # off, to measure latency alone
                            env=env_for(home, url, MESHHUB_SEND_RATE="0",
                                        MESHHUB_ACTION_RATE="0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return proc, url
        time.sleep(0.05)
    raise RuntimeError("the hub did not start")


def start_baseline_http() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(port)])
    url = f"http://127.0.0.1:{port}/mcp"
    for _ in range(400):
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, url
        time.sleep(0.05)
    raise RuntimeError("the baseline server did not start")


def serve_baseline(port: int) -> None:
    """The probe's tools over streamable HTTP through the same ``HttpEndpoint`` the hub's ``/mcp``
    uses, and a WebSocket at ``/push``: each text frame becomes one channel notification on every
    open GET stream, through the endpoint's own sender (the HTTP push baseline)."""
    from aiohttp import web

    sys.path.insert(0, str(Path(PROBE).parent))
    import _probe_stdio_server as probe  # type: ignore[import-not-found]

    from meshhub_mcp.sdk import ChannelSender, HttpEndpoint, build_server

    senders: list[ChannelSender] = []

    async def on_stream(sender: ChannelSender, caller: Any) -> None:
        senders.append(sender)
        try:
            await asyncio.Event().wait()
        finally:
            senders.remove(sender)

    async def push(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            text = json.loads(frame.data)["text"]
            for sender in list(senders):
                await sender.send_channel(text, {"kind": "push"})
        return ws

    async def main() -> None:
        server = build_server("probe", "0", "", probe.list_tools, probe.call_tool,
                              {"claude/channel": {}})
        endpoint = HttpEndpoint(server, lambda t: True, on_stream)
        app = web.Application()
        app.router.add_route("*", "/mcp", endpoint.handle)
        app.router.add_get("/push", push)
        runner = web.AppRunner(app)
        await runner.setup()
        await endpoint.start()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


async def run(n: int, synchronous: str | None) -> list[Row]:
    warm = max(10, n // 10)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hub, url = start_hub(root, synchronous)
        base_http, base_url = start_baseline_http()
        try:
            homes = {}
            for who in ("ann", "bob", "cat"):
                homes[who] = root / who
                init_home(homes[who], who)
            cat = MeshClient(url, load_signing_key(homes["cat"]), name="cat", receive=False)
            await cat.connect()
            a_params = StdioServerParameters(command=HUB, args=["mcp", "--name", "a"],
                                             env=env_for(homes["ann"], url))
            b_params = StdioServerParameters(command=HUB, args=["mcp", "--name", "b",
                                                                "--mode", "off"],
                                             env=env_for(homes["bob"], url))
            c_params = StdioServerParameters(command=HUB, args=["mcp", "--name", "c"],
                                             env=env_for(homes["bob"], url))
            probe = StdioServerParameters(command=sys.executable, args=[PROBE])
            async with stdio(a_params) as (a, _), stdio(b_params) as (b, _), \
                    stdio(c_params) as (c, c_in), stdio(probe) as (p, p_in):
                await a.list_tools()
                await c.call_tool("mesh_whoami", {})
                await time_send_read(a, b, "b", warm)
                sr = await time_send_read(a, b, "b", n)
                await time_echo_pair(p, warm)
                base_sr = await time_echo_pair(p, n)
                rows.append(("stdio", "send+read", sr, base_sr))
                stage("stdio send+read")
                await time_push(cat, "c", c_in, warm)
                push = await time_push(cat, "c", c_in, n)
                await time_echo_push(p, p_in, warm)
                base_push = await time_echo_push(p, p_in, n)
                rows.append(("stdio", "push", push, base_push))
                stage("stdio push")
            tokens = {}
            for who in ("ann", "bob"):
                async with MeshClient(url, load_signing_key(homes[who]), name=who,
                                      receive=False) as c_:
                    tokens[who] = (await c_.call("token_create", label="bench"))["token"]
            async with http(url + "/mcp", tokens["ann"]) as (ha, _), \
                    http(url + "/mcp?mode=off", tokens["bob"]) as (hb, _), \
                    http(url + "/mcp", tokens["bob"]) as (hc, hc_in), \
                    http(base_url, "x") as (hp, hp_in):
                await ha.list_tools()
                await time_send_read(ha, hb, "bob", warm)
                sr = await time_send_read(ha, hb, "bob", n)
                await time_echo_pair(hp, warm)
                base_sr = await time_echo_pair(hp, n)
                rows.append(("http", "send+read", sr, base_sr))
                stage("http send+read")
                await anyio.sleep(0.2)  # the GET stream of hc is open
                await time_push(cat, "bob", hc_in, warm)
                push = await time_push(cat, "bob", hc_in, n)
                async with aiohttp.ClientSession() as web_client, \
                        web_client.ws_connect(base_url.replace("/mcp", "/push")) as trigger:
                    await time_ws_push(trigger, hp_in, warm)
                    base_push = await time_ws_push(trigger, hp_in, n)
                rows.append(("http", "push", push, base_push))
            await cat.close()
        finally:
            for proc in (hub, base_http):
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
    return rows


def report_rows(rows: list[Row], n: int, summary_json: bool) -> None:
    print(f"MCP latency, n={n} (ms)")
    print(f"{'transport':<10}{'what':<11}{'p50':>8}{'p99':>8}{'base p50':>10}{'base p99':>10}"
          f"{'ratio p50':>11}")
    goals = []
    for transport, what, samples, base in rows:
        p50, p99 = stats(samples)
        b50, b99 = stats(base)
        print(f"{transport:<10}{what:<11}{p50:>8.2f}{p99:>8.2f}{b50:>10.2f}{b99:>10.2f}"
              f"{p50 / b50:>10.2f}x")
        label = "HTTP" if transport == "http" else transport
        goals.append(Goal("mcp", f"{label} {what} p50", p50, "ms", LIMITS[what], baseline=b50))
    report(goals, summary_json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="samples of each row")
    parser.add_argument("--quick", action="store_true", help="a brief run (--n 100)")
    parser.add_argument("--summary-json", action="store_true",
                        help="also print the GOALS line bench/run-all reads")
    parser.add_argument("--sqlite-synchronous", choices=["FULL", "NORMAL", "OFF"],
                        help="override the hub's sqlite_synchronous (default: the hub's, FULL)")
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return
    n = 100 if args.quick else args.n
    report_rows(anyio.run(run, n, args.sqlite_synchronous), n, args.summary_json)


if __name__ == "__main__":
    main()
