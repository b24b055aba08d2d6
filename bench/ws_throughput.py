#!/usr/bin/env python
"""WebSocket throughput and latency of a real hub, against a plain aiohttp relay baseline.

    python bench/ws_throughput.py --peers 100 --messages 1000 [--quick] [--half-rate] [--json]
        [--summary-json]

Three kinds of process, all on 127.0.0.1, all stopped by handle at the end (even on error):

- the hub: ``hub start --host 127.0.0.1 --port <free>`` with a temporary MESHHUB_HOME;
- the baseline relay: this file with ``--role relay``, a plain aiohttp WebSocket server that
  speaks just enough of the peer protocol for :class:`MeshClient` (challenge, welcome, ``send``
  call, ack) and forwards each message straight to the target's socket, with no storage;
- the load generator(s): this file with ``--role client``; each runs a slice of the peers as
  :class:`MeshClient` instances in one event loop, separate from the server's.

Each peer ``i`` sends M messages to peer ``(i + 1) % N`` and awaits the server's result for each
(``--window`` outstanding sends at most); each receiver acks every message. The parent releases
all load generators at once (a READY/GO barrier on their stdin/stdout), samples the server's RSS
every 50 ms, and merges the generators' figures.

Goals (issue 9, goal 3), each against the relay measured in the same run: hub throughput >= 0.7
of the relay's, hub p99 at peak <= 2x the relay's, and 100% of the messages delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import queue
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

import psutil
from goals import Goal
from goals import report as report_goals

HOST = "127.0.0.1"
HUB_BIN = str(Path(sys.executable).with_name("hub"))
THIS = str(Path(__file__).resolve())
GOALS = {
    "delivered_pct": 100.0,
    "throughput_ratio": 0.7,
    "p99_ratio": 2.0,
}
QUICK = (50, 500)  # --quick: peers, messages per peer
IDLE_GRACE = 10.0  # once local sends are done, give up on missing messages after this long idle


# ================================================================================================
# load generator (child process)
# ================================================================================================
def make_body(sender: int, seq: int, size: int) -> str:
    head = f"{sender}:{seq}:{time.time():.6f}:"
    return head + "x" * max(0, size - len(head))


def parse_body(body: str) -> tuple[int, int, float]:
    sender, seq, ts, _ = body.split(":", 3)
    return int(sender), int(seq), float(ts)


class PeerStats:
    def __init__(self) -> None:
        self.sent = 0
        self.send_errors: list[str] = []
        self.first_send = math.inf
        self.last_send = 0.0
        self.ack_rtts: list[float] = []  # send call -> server result
        self.seen: set[tuple[int, int]] = set()
        self.duplicates = 0
        self.latencies: list[float] = []  # body timestamp -> receipt
        self.last_recv = 0.0


async def sender_loop(client: Any, me: int, target: str, count: int, size: int, window: int,
                      interval: float | None, start: float, st: PeerStats,
                      deadline: float) -> None:
    outstanding: deque[tuple[float, asyncio.Future[Any]]] = deque()

    async def settle(item: tuple[float, asyncio.Future[Any]]) -> None:
        t_sent, future = item
        try:
            await asyncio.wait_for(future, max(0.1, deadline - time.time()))
            st.ack_rtts.append(time.time() - t_sent)
        except Exception as exc:  # the server refused it, or the connection is gone
            if len(st.send_errors) < 20:
                st.send_errors.append(f"{type(exc).__name__}: {exc}")
            else:
                st.send_errors.append("")

    for seq in range(count):
        if time.time() > deadline:
            break
        if interval is not None:
            due = start + seq * interval
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
        body = make_body(me, seq, size)
        now = time.time()
        st.first_send = min(st.first_send, now)
        try:
            future = await client.call_nowait("send", to=target, text=body)
        except Exception as exc:
            st.send_errors.append(f"{type(exc).__name__}: {exc}")
            break
        st.sent += 1
        outstanding.append((now, future))
        if len(outstanding) >= window:
            await settle(outstanding.popleft())
    while outstanding:
        await settle(outstanding.popleft())
    st.last_send = time.time()


async def receiver_loop(client: Any, expected: int, st: PeerStats, done: asyncio.Event,
                        activity: list[float]) -> None:
    async for message in client.messages():
        now = time.time()
        await client.ack(message["id"])
        try:
            sender, seq, ts = parse_body(message["text"])
        except (ValueError, KeyError):
            continue
        if (sender, seq) in st.seen:
            st.duplicates += 1
            continue
        st.seen.add((sender, seq))
        st.latencies.append(now - ts)
        st.last_recv = now
        activity[0] = now
        if len(st.seen) >= expected:
            done.set()


async def client_main(args: argparse.Namespace) -> dict[str, Any]:
    from nacl.signing import SigningKey

    from meshhub.client import MeshClient
    from meshhub.errors import MeshError

    deadline = args.deadline
    mine = range(args.first, args.first + args.count)
    names = [f"{args.prefix}{i:05d}" for i in range(args.peers)]
    clients: dict[int, Any] = {}
    # One connect at a time: the hub queues a peer's welcome after announcing it, so a presence
    # event of a peer joining concurrently can reach the socket before the welcome, and
    # MeshClient then fails with "expected welcome, got event" (reported as a core bug).
    connect_sem = asyncio.Semaphore(1)

    async def connect(i: int) -> None:
        key = SigningKey.generate()
        # enrol the key through the hub's local socket (the hub's own OS user), then measure
        # over TCP like the relay, so both servers are driven through the same transport
        async with connect_sem, MeshClient(args.url, key, name=names[i], kind="agent",
                                           connector="bench", receive=False):
            pass
        for attempt in range(3):
            client = MeshClient(args.url, key, name=names[i], kind="agent",
                                connector="bench", dedupe=False, local=False)
            try:
                async with connect_sem:
                    await asyncio.wait_for(client.connect(), 30)
                break
            except MeshError as exc:
                if "expected welcome" not in str(exc) or attempt == 2:
                    raise
        clients[i] = client
        if client.peer.get("name") not in (None, names[i]):
            raise RuntimeError(f"the server renamed {names[i]} to {client.peer.get('name')}")

    stats = {i: PeerStats() for i in mine}
    try:
        await asyncio.gather(*(connect(i) for i in mine))
        # barrier: every generator is connected before anyone sends (targets must exist)
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "GO":
            raise RuntimeError(f"expected GO from the parent, got {line!r}")
        t0 = time.time()
        interval = (args.peers / args.rate) if args.rate else None
        activity = [t0]
        dones = {i: asyncio.Event() for i in mine}
        receivers = [
            asyncio.create_task(receiver_loop(clients[i], args.messages, stats[i], dones[i],
                                              activity))
            for i in mine
        ]
        senders = [
            asyncio.create_task(sender_loop(
                clients[i], i, names[(i + 1) % args.peers], args.messages, args.size,
                args.window, interval,
                t0 + (random.random() * interval if interval else 0.0), stats[i], deadline,
            ))
            for i in mine
        ]
        await asyncio.wait(senders, timeout=max(0.1, deadline - time.time()))
        sends_done = time.time()
        activity[0] = max(activity[0], sends_done)
        while not all(e.is_set() for e in dones.values()):
            now = time.time()
            if now > deadline or now - activity[0] > IDLE_GRACE:
                break
            await asyncio.sleep(0.05)
        for task in [*senders, *receivers]:
            task.cancel()
        await asyncio.gather(*senders, *receivers, return_exceptions=True)
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)

    def merged(attr: str) -> list[float]:
        return [x for s in stats.values() for x in getattr(s, attr)]

    errors = [e for s in stats.values() for e in s.send_errors]
    return {
        "peers": len(stats),
        "attempted": args.count * args.messages,
        "sent": sum(s.sent for s in stats.values()),
        "send_errors": len(errors),
        "error_samples": [e for e in errors if e][:5],
        "received": sum(len(s.seen) for s in stats.values()),
        "duplicates": sum(s.duplicates for s in stats.values()),
        "first_send": min((s.first_send for s in stats.values()), default=math.inf),
        "last_send": max((s.last_send for s in stats.values()), default=0.0),
        "last_recv": max((s.last_recv for s in stats.values()), default=0.0),
        "latencies": merged("latencies"),
        "ack_rtts": merged("ack_rtts"),
    }


def run_client_role(args: argparse.Namespace) -> None:
    try:
        result = asyncio.run(client_main(args))
    except BaseException as exc:  # report, then fail
        print("RESULT " + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise SystemExit(1) from None
    print("RESULT " + json.dumps(result), flush=True)


# ================================================================================================
# baseline relay (child process)
# ================================================================================================
async def relay_main(port: int) -> None:
    from aiohttp import WSMsgType, web

    sockets: dict[str, web.WebSocketResponse] = {}
    ids = itertools.count(1)

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "challenge", "nonce": secrets.token_hex(16)}))
        msg = await ws.receive(timeout=15)
        if msg.type != WSMsgType.TEXT:
            return ws
        hello = json.loads(msg.data)
        name = str(hello.get("name"))
        sockets[name] = ws
        await ws.send_str(json.dumps({"type": "welcome", "peer": {"key": name, "name": name}}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame.get("type") == "call":
                    params = frame.get("params") or {}
                    target = sockets.get(params.get("to"))
                    mid = f"m{next(ids)}"
                    if target is not None and not target.closed:
                        await target.send_str(json.dumps(
                            {"type": "message", "message": {
                                "id": mid, "from": name, "text": params.get("text"),
                            }}, separators=(",", ":")))
                    await ws.send_str(json.dumps(
                        {"type": "result", "id": frame.get("id"), "result": {"id": mid}},
                        separators=(",", ":")))
                # acks ("type": "ack") are read and dropped: nothing to record
        finally:
            if sockets.get(name) is ws:
                del sockets[name]
        return ws

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "online": len(sockets)})

    app = web.Application()
    app.router.add_get("/ws", handle)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


# ================================================================================================
# parent: processes, sampling, phases, report
# ================================================================================================
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except OSError:
        return None


class Procs:
    """Every child we start, stopped by handle (SIGTERM, then SIGKILL) in ``stop_all``."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(argv, **kw)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], wait: float = 15.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)


class Sampler(threading.Thread):
    """Peak RSS of one process, every 50 ms."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True, name=f"rss-{pid}")
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.samples = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                self.samples += 1
            except psutil.Error:
                return
            self._stop_evt.wait(self.every)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(2)

    def cpu(self) -> float:
        try:
            t = self.proc.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0


def wait_healthy(proc: subprocess.Popen[Any], url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        if health(url) is not None:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer /health:\n{log.read_text()[-3000:]}")


class Lines(threading.Thread):
    """A child's stdout, line by line, through a queue (so waits can time out)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True, name=f"lines-{proc.pid}")
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.start()

    def run(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(Exception):
            for line in self.proc.stdout:
                self.lines.put(line)
        self.lines.put(None)

    def next(self, deadline: float) -> str:
        try:
            line = self.lines.get(timeout=max(0.01, deadline - time.time()))
        except queue.Empty:
            raise TimeoutError("a load generator did not answer before --timeout") from None
        if line is None:
            raise RuntimeError(f"a load generator exited (code {self.proc.wait(5)})")
        return line


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return values[k]


def ms(values: list[float], q: float) -> float:
    """Percentile ``q`` of ``values`` (seconds) in ms; NaN without samples, never 0, so that
    a run that measured nothing fails its goal rather than passing as "fastest"."""
    value = pct(values, q)
    return math.nan if value is None else value * 1000


def run_phase(procs: Procs, args: argparse.Namespace, url: str, server_pid: int, prefix: str,
              messages: int, rate: float | None, deadline: float, logdir: Path) -> dict[str, Any]:
    """One load run against ``url``; returns merged figures."""
    n, k = args.peers, max(1, min(args.client_procs, args.peers))
    bounds = [round(j * n / k) for j in range(k + 1)]
    gens: list[subprocess.Popen[str]] = []
    for j in range(k):
        argv = [
            sys.executable, THIS, "--role", "client", "--url", url, "--prefix", prefix,
            "--first", str(bounds[j]), "--count", str(bounds[j + 1] - bounds[j]),
            "--peers", str(n), "--messages", str(messages), "--size", str(args.size),
            "--window", str(args.window), "--deadline", f"{deadline:.3f}",
        ]
        if rate:
            argv += ["--rate", str(rate)]
        errlog = (logdir / f"{prefix}gen{j}.err").open("w")
        gens.append(procs.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errlog, text=True, bufsize=1))
        errlog.close()
    readers = [Lines(g) for g in gens]
    try:
        for r in readers:
            line = r.next(deadline)
            if line.strip() != "READY":
                raise RuntimeError(f"load generator failed to connect: {line.strip()}")
        server = psutil.Process(server_pid)
        gen_ps = [psutil.Process(g.pid) for g in gens]

        def cpu(p: psutil.Process) -> float:
            try:
                t = p.cpu_times()
                return t.user + t.system
            except psutil.Error:
                return 0.0

        cpu0 = cpu(server), [cpu(p) for p in gen_ps]
        sys0 = psutil.cpu_times()
        t_go = time.time()
        for g in gens:
            assert g.stdin is not None
            g.stdin.write("GO\n")
            g.stdin.flush()
        results = []
        cpu_gen_end: list[float] = []
        for r, p in zip(readers, gen_ps, strict=True):
            while True:
                line = r.next(deadline + 30)
                if line.startswith("RESULT "):
                    cpu_gen_end.append(cpu(p))
                    results.append(json.loads(line[7:]))
                    break
        t_end = time.time()
        sys1 = psutil.cpu_times()
        cpu_server = cpu(server) - cpu0[0]
        for g in gens:
            g.wait(15)
    finally:
        for g in gens:
            Procs.stop(g)
    bad = [r["error"] for r in results if "error" in r]
    if bad:
        raise RuntimeError(f"load generator failed: {bad[0]}")
    latencies = [x for r in results for x in r["latencies"]]
    ack_rtts = [x for r in results for x in r["ack_rtts"]]
    first = min(r["first_send"] for r in results)
    last = max(r["last_recv"] for r in results)
    received = sum(r["received"] for r in results)
    attempted = sum(r["attempted"] for r in results)
    wall = max(1e-9, last - first) if received else 0.0
    busy = max(1e-9, t_end - t_go)
    machine = (sum(sys1) - sys1.idle - getattr(sys1, "iowait", 0.0)) - (
        sum(sys0) - sys0.idle - getattr(sys0, "iowait", 0.0))
    gen_cpu = [e - s for s, e in zip(cpu0[1], cpu_gen_end, strict=True)]
    return {
        "peers": n,
        "messages_per_peer": messages,
        "offered_rate": rate,
        "attempted": attempted,
        "sent": sum(r["sent"] for r in results),
        "send_errors": sum(r["send_errors"] for r in results),
        "error_samples": [e for r in results for e in r["error_samples"]][:5],
        "received": received,
        "duplicates": sum(r["duplicates"] for r in results),
        "delivered_pct": 100.0 * received / attempted if attempted else 0.0,
        "wall_s": wall,
        "msgs_per_s": received / wall if received else math.nan,  # none: no rate (see ms())
        "p50_ms": ms(latencies, 50),
        "p99_ms": ms(latencies, 99),
        "max_ms": ms(latencies, 100),
        "send_rtt_p50_ms": ms(ack_rtts, 50),
        "send_rtt_p99_ms": ms(ack_rtts, 99),
        "server_cpu_pct": 100.0 * cpu_server / busy,
        "server_cpu_us_per_msg": 1e6 * cpu_server / received if received else 0.0,
        "gen_cpu_pct": [100.0 * c / busy for c in gen_cpu],
        # everything else on the machine (other jobs, this parent): a noisy neighbour shows here
        "other_cpu_pct": 100.0 * max(0.0, machine - cpu_server - sum(gen_cpu)) / busy,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.time() + args.timeout
    procs = Procs()
    out: dict[str, Any] = {
        "config": {k: getattr(args, k) for k in (
            "peers", "messages", "size", "window", "client_procs", "rate", "half_rate",
            "rate_seconds", "sqlite_synchronous", "no_conversation_logs", "timeout")},
        "cpus": os.cpu_count(),
        "goals": GOALS,
    }
    samplers: list[Sampler] = []
    tmp = tempfile.TemporaryDirectory(prefix="meshhub-bench-")
    root = Path(tmp.name)
    try:
        # -- the hub ------------------------------------------------------------------------
        home = root / "hub"
        home.mkdir(mode=0o700)
        config = ""
        if args.sqlite_synchronous:
            config += f'[hub]\nsqlite_synchronous = "{args.sqlite_synchronous}"\n'
        if args.no_conversation_logs:
            config += "[logs]\nconversations = false\n"
        if config:
            (home / "config.toml").write_text(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHHUB_")}
        env["MESHHUB_HOME"] = str(home)
        # each peer pipelines its sends as fast as the hub takes them: past the per-member
        # send rate (meshhub.limits), which this bench turns off to measure the hub's speed
        env["MESHHUB_SEND_RATE"] = "0"
        port = free_port()
        hub_url = f"http://{HOST}:{port}"
        hub_log = root / "hub.log"
        with hub_log.open("ab") as fh:
            hub = procs.start([HUB_BIN, "start", "--host", HOST, "--port", str(port),
                               "--log-level", "warning"],
                              env=env, stdout=fh, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
        wait_healthy(hub, hub_url, 30, hub_log)
        hub_rss = Sampler(hub.pid)
        samplers.append(hub_rss)
        hub_rss.start()
        out["hub_pid"] = hub.pid
        if args.profile_pause:
            print(f"hub pid {hub.pid}; starting in {args.profile_pause} s", file=sys.stderr)
            time.sleep(args.profile_pause)
        log(args, f"hub pid {hub.pid} on {hub_url}: peak phase")
        peak = run_phase(procs, args, hub_url, hub.pid, "pk", args.messages, None, deadline,
                         root)
        peak["rss_peak_mb"] = hub_rss.peak / 2**20
        out["hub"] = peak
        log(args, f"  {peak['msgs_per_s']:.0f} msg/s, p99 {peak['p99_ms']:.1f} ms")
        rate = args.rate or (peak["msgs_per_s"] / 2 if args.half_rate else None)
        if rate and math.isfinite(rate):
            per_peer = max(1, min(args.messages,
                                  math.ceil(rate * args.rate_seconds / args.peers)))
            log(args, f"  rate phase: {rate:.0f} msg/s offered, {per_peer} msgs/peer")
            paced = run_phase(procs, args, hub_url, hub.pid, "rt", per_peer, rate, deadline,
                              root)
            paced["rss_peak_mb"] = hub_rss.peak / 2**20
            out["hub_rate"] = paced
        hub_rss.stop()
        out["hub_rss_peak_mb"] = hub_rss.peak / 2**20
        out["hub_rss_samples"] = hub_rss.samples
        Procs.stop(hub)
        if hub.returncode not in (0, -signal.SIGTERM):
            out["hub_exit"] = hub.returncode
        # -- the baseline relay ---------------------------------------------------------------
        if not args.skip_baseline:
            rport = free_port()
            relay_url = f"http://{HOST}:{rport}"
            relay_log = root / "relay.log"
            with relay_log.open("ab") as fh:
                relay = procs.start([sys.executable, THIS, "--role", "relay", "--port",
                                     str(rport)], stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            wait_healthy(relay, relay_url, 30, relay_log)
            relay_rss = Sampler(relay.pid)
            samplers.append(relay_rss)
            relay_rss.start()
            log(args, f"relay pid {relay.pid} on {relay_url}: peak phase")
            base = run_phase(procs, args, relay_url, relay.pid, "pk", args.messages, None,
                             deadline, root)
            relay_rss.stop()
            base["rss_peak_mb"] = relay_rss.peak / 2**20
            out["baseline"] = base
            Procs.stop(relay)
        out["hub_log_tail"] = hub_log.read_text()[-2000:] if hub_log.exists() else ""
    finally:
        for s in samplers:
            s.stop()
        procs.stop_all()
        tmp.cleanup()
    return out


def log(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def goal_rows(out: dict[str, Any]) -> list[Goal]:
    """The goal rows of issue 9, goal 3; a missing relay run leaves the baselines NaN (FAIL)."""
    hub, base = out.get("hub") or {}, out.get("baseline") or {}
    nan = math.nan
    return [
        Goal("ws", "throughput vs relay", hub.get("msgs_per_s", nan), "msgs/s",
             GOALS["throughput_ratio"], baseline=base.get("msgs_per_s", nan), compare=">="),
        Goal("ws", "p99 at peak vs relay", hub.get("p99_ms", nan), "ms", GOALS["p99_ratio"],
             baseline=base.get("p99_ms", nan)),
        Goal("ws", "delivered", hub.get("delivered_pct", nan), "%", GOALS["delivered_pct"],
             ratio_goal=False, compare=">="),
    ]


def report(out: dict[str, Any]) -> str:
    rows = [("hub (peak)", out.get("hub")), ("hub (paced)", out.get("hub_rate")),
            ("baseline", out.get("baseline"))]
    head = (f"{'run':<12} {'offered/s':>9} {'msgs/s':>8} {'deliv%':>7} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'max ms':>8} {'rtt p99':>8} {'RSS MB':>7} {'srv CPU':>7} "
            f"{'gen CPU':>7} {'other':>6} {'errors':>6}")
    lines = [f"peers={out['config']['peers']} messages={out['config']['messages']} "
             f"size={out['config']['size']} window={out['config']['window']} "
             f"client_procs={out['config']['client_procs']} cpus={out['cpus']}", head,
             "-" * len(head)]
    for label, r in rows:
        if not r:
            continue
        offered = f"{r['offered_rate']:.0f}" if r["offered_rate"] else "max"
        gen = "/".join(f"{c:.0f}" for c in r["gen_cpu_pct"])
        lines.append(
            f"{label:<12} {offered:>9} {r['msgs_per_s']:>8.0f} {r['delivered_pct']:>7.2f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.1f} "
            f"{r['send_rtt_p99_ms']:>8.2f} {r['rss_peak_mb']:>7.1f} "
            f"{r['server_cpu_pct']:>6.0f}% {gen:>6}% {r['other_cpu_pct']:>5.0f}% "
            f"{r['send_errors']:>6}"
        )
    lines.append("")
    hub, base = out.get("hub"), out.get("baseline")
    if hub and base:
        lines.append(f"throughput hub/baseline: {hub['msgs_per_s'] / base['msgs_per_s']:.2f}   "
                     f"p99 hub/baseline: {hub['p99_ms'] / max(base['p99_ms'], 1e-9):.1f}x   "
                     f"RSS hub/baseline: {hub['rss_peak_mb']:.0f} MB / "
                     f"{base['rss_peak_mb']:.0f} MB")
        lines.append(f"server CPU per message: hub {hub['server_cpu_us_per_msg']:.0f} us, "
                     f"baseline {base['server_cpu_us_per_msg']:.0f} us")
    for g in goal_rows(out):
        lines.append(f"  {'PASS' if g.ok else 'FAIL'}  {g.name:<24} {g.value:>10.2f}  "
                     f"(goal {g.target})")
    for label, r in rows:
        if r and r["error_samples"]:
            lines.append(f"{label} errors: {r['error_samples']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--peers", type=int, default=100, help="peers (WebSocket clients)")
    p.add_argument("--messages", type=int, default=1000, help="messages each peer sends")
    p.add_argument("--size", type=int, default=200, help="message body size in bytes")
    p.add_argument("--window", type=int, default=1,
                   help="sends in flight per peer (1: await each result before the next)")
    p.add_argument("--client-procs", type=int, default=1, help="load generator processes")
    p.add_argument("--rate", type=float, default=None,
                   help="also run a paced hub phase at this total rate (msgs/s)")
    p.add_argument("--half-rate", action="store_true",
                   help="also run a paced hub phase at half the measured peak rate")
    p.add_argument("--rate-seconds", type=float, default=10.0,
                   help="approximate length of the paced phase")
    p.add_argument("--sqlite-synchronous", choices=["FULL", "NORMAL", "OFF"], default=None,
                   help="override the hub's sqlite_synchronous (default: the hub's, FULL)")
    p.add_argument("--no-conversation-logs", action="store_true",
                   help="run the hub with [logs] conversations = false (their cost on sends)")
    p.add_argument("--skip-baseline", action="store_true", help="hub phases only")
    p.add_argument("--timeout", type=float, default=300.0, help="global time limit (s)")
    p.add_argument("--profile-pause", type=float, default=0.0,
                   help="sleep this long after the hub starts (to attach py-spy)")
    p.add_argument("--quick", action="store_true",
                   help=f"a brief run: --peers {QUICK[0]} --messages {QUICK[1]}")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--summary-json", action="store_true",
                   help="also print the GOALS line bench/run-all reads")
    # internal: child roles
    p.add_argument("--role", choices=["main", "client", "relay"], default="main",
                   help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--prefix", default="p", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.peers, args.messages = QUICK
    if args.peers < 2 or args.messages < 1 or args.window < 1 or args.size < 32:
        p.error("need --peers >= 2, --messages >= 1, --window >= 1, --size >= 32")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "client":
        run_client_role(args)
        return 0
    if args.role == "relay":
        asyncio.run(relay_main(args.port))
        return 0
    out = bench(args)
    tail = out.pop("hub_log_tail", "")
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(report(out))
        if "Traceback" in tail or " ERROR " in tail:
            print("\nhub log (tail):\n" + tail, file=sys.stderr)
    rows = goal_rows(out)
    if not args.json or args.summary_json:
        report_goals(rows, args.summary_json)
    return 0 if rows[-1].ok else 1


if __name__ == "__main__":
    sys.exit(main())
