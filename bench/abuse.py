#!/usr/bin/env python
"""A healthy pair of peers while the hub is under attack: latency, RSS and FDs.

    python bench/abuse.py [--seconds 20] [--quick] [--json] [--summary-json]

One real hub (``hub start`` on 127.0.0.1, a temporary home, its defaults but a 5 s
``header_timeout`` so that a short attack outlasts it), and in the same run:

- **the healthy pair**, in this process: ``ann`` and ``bob`` send each other 20 messages a
  second each (each carries its send time) and ack each; latency is send to receipt.
- **quiet**: the pair alone, for ``--seconds``.
- **attack**: the pair again, for as long, while
  - a *flooder* (its own process) pipelines 32 KB sends as fast as the hub takes them, half to
    an offline peer, half to the stalled reader;
  - a *stalled reader* (its own process, stopped with SIGSTOP once connected) takes nothing
    from its socket;
  - 500 *idle sockets* sit open: 250 that never send a byte, 250 that send half a request
    head and stop.
- **after**: the attackers are stopped and closed; the hub is watched settling.

The hub's RSS and open file descriptors are read every 0.5 s throughout. Goals: the healthy
pair's p99 under attack at most 2x its quiet p99 (the baseline, measured in the same run); the
hub's RSS during the attack at most 64 MB over its quiet level; its FDs at the end of the
attack (the idle sockets have been open longer than the hub's slow-connection timeouts) at most
50 over its quiet level.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from goals import Goal, percentile, report  # noqa: E402
from telegram_latency import HOST, free_port, start_hub, stop_process  # noqa: E402

from meshhub.client import MeshClient  # noqa: E402
from meshhub.config import init_home, load_signing_key  # noqa: E402
from meshhub.errors import MeshError  # noqa: E402

RATE = 20  # healthy messages a second, each way (under the default send rate of 30)
HEADER_TIMEOUT = 5  # the hub's, so a short attack outlasts it
IDLE_SOCKETS = 500
FLOOD_BODY = 32 * 1024  # half of them fill the stalled reader past its 4 MiB queue
MB = 1024 * 1024
GOAL_P99_RATIO = 2.0
GOAL_RSS_MB = 64.0
GOAL_FDS = 50


# -- the attackers (child processes: ``--role flood|stall``) --------------------------------------
async def flood(url: str, home: Path) -> None:
    """Send as fast as the hub answers, until stdin closes; print what was taken and refused."""
    taken = refused = 0
    body = "f" * FLOOD_BODY
    async with MeshClient(url, load_signing_key(home), name="mallory", kind="agent") as client:
        print("ready", flush=True)
        stop = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        pending: set[asyncio.Future[Any]] = set()
        i = 0
        while not stop.done():
            target = "stuck" if i % 2 else "void"
            i += 1
            try:
                pending.add(await client.call_nowait("send", to=target, text=body))
            except ConnectionError:
                break
            if len(pending) >= 256:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    if isinstance(future.exception(), MeshError):
                        refused += 1
                    elif future.exception() is None:
                        taken += 1
        await asyncio.gather(*pending, return_exceptions=True)
    print(json.dumps({"taken": taken, "refused": refused}), flush=True)


async def stall(url: str, home: Path) -> None:
    """Connect, say ready, then read forever (the parent stops this process with SIGSTOP)."""
    async with MeshClient(url, load_signing_key(home), name="stuck", kind="agent") as client:
        print("ready", flush=True)
        async for _ in client.messages(auto_ack=True):
            pass


def start_role(role: str, url: str, home: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, __file__, "--role", role, "--url", url,
                             "--home", str(home)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"the {role} process did not start: {line!r}")
    return proc


# -- idle sockets -------------------------------------------------------------------------------
def open_idle(port: int, count: int) -> list[socket.socket]:
    """Half silent, half with half a request head; kept open by this process."""
    sockets = []
    for i in range(count):
        s = socket.create_connection((HOST, port))
        if i % 2:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sockets.append(s)
    return sockets


# -- measuring ----------------------------------------------------------------------------------
class Watch:
    """The hub's RSS and FD count every 0.5 s, tagged with the phase."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.phase = "quiet"
        self.rows: list[tuple[str, float, int, int]] = []
        self.started = time.monotonic()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.rows.append((self.phase, time.monotonic() - self.started,
                                  self.process.memory_info().rss, self.process.num_fds()))
            await asyncio.sleep(0.5)

    def of(self, phase: str) -> list[tuple[str, float, int, int]]:
        return [r for r in self.rows if r[0] == phase]


async def one_way(sender: MeshClient, receiver: MeshClient, seconds: float,
                  latencies: list[float]) -> None:
    """``sender`` -> ``receiver`` at RATE a second for ``seconds``; latencies in ms."""
    count = int(seconds * RATE)

    async def receive() -> None:
        for _ in range(count):
            message = await receiver.next_message(timeout=30)
            await receiver.ack(message["id"])
            latencies.append((time.perf_counter() - float(message["text"])) * 1000)

    receiving = asyncio.create_task(receive())
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await sender.call_nowait("send", to=receiver.peer["name"],
                                 text=repr(time.perf_counter()))
    await receiving


async def healthy(ann: MeshClient, bob: MeshClient, seconds: float) -> list[float]:
    """``ann`` and ``bob`` write each other at RATE a second each; the latencies in ms."""
    latencies: list[float] = []
    await asyncio.gather(one_way(ann, bob, seconds, latencies),
                         one_way(bob, ann, seconds, latencies))
    return latencies


async def run(seconds: float, root: Path) -> dict[str, Any]:
    homes = {}
    for name in ("hub", "ann", "bob", "mallory", "stuck", "void"):
        homes[name] = root / name
        init_home(homes[name], "owner" if name == "hub" else name)
    port = free_port()
    url = f"http://{HOST}:{port}"
    hub = await asyncio.to_thread(start_hub, homes["hub"], port,
                                  {"MESHHUB_HEADER_TIMEOUT": str(HEADER_TIMEOUT)})
    procs: list[subprocess.Popen[Any]] = [hub]
    idle: list[socket.socket] = []
    watch = Watch(hub.pid)
    watching = asyncio.create_task(watch.run())
    try:
        async with MeshClient(url, load_signing_key(homes["ann"]), name="ann") as ann, \
                MeshClient(url, load_signing_key(homes["bob"]), name="bob") as bob:
            await ann.call("whoami")  # both known to the hub before the first send
            async with MeshClient(url, load_signing_key(homes["stuck"]), name="stuck"):
                pass  # "stuck" exists before the flood addresses it
            async with MeshClient(url, load_signing_key(homes["void"]), name="void"):
                pass  # and "void", which then stays offline
            await healthy(ann, bob, 2)  # warm-up
            quiet = await healthy(ann, bob, seconds)
            watch.phase = "attack"
            stuck = start_role("stall", url, homes["stuck"])
            procs.append(stuck)
            os.kill(stuck.pid, signal.SIGSTOP)
            flooder = start_role("flood", url, homes["mallory"])
            procs.append(flooder)
            idle = await asyncio.to_thread(open_idle, port, IDLE_SOCKETS)
            attacked = await healthy(ann, bob, seconds)
            watch.phase = "after"
            assert flooder.stdin is not None and flooder.stdout is not None
            flooder.stdin.close()
            flood_counts = json.loads(await asyncio.to_thread(flooder.stdout.readline) or "{}")
            for s in idle:
                s.close()
            os.kill(stuck.pid, signal.SIGCONT)
            stuck.kill()
            await asyncio.sleep(5)
    finally:
        watching.cancel()
        for s in idle:
            s.close()
        for proc in procs[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(10)
        await asyncio.to_thread(stop_process, hub)
    return {"quiet": quiet, "attack": attacked, "flood": flood_counts, "watch": watch}


def figures(out: dict[str, Any]) -> dict[str, Any]:
    watch: Watch = out["watch"]
    quiet, attack, after = watch.of("quiet"), watch.of("attack"), watch.of("after")
    base_rss = min(r[2] for r in quiet)
    base_fds = min(r[3] for r in quiet)
    return {
        "quiet_p50_ms": percentile(out["quiet"], 50), "quiet_p99_ms": percentile(out["quiet"], 99),
        "attack_p50_ms": percentile(out["attack"], 50),
        "attack_p99_ms": percentile(out["attack"], 99),
        "rss_quiet_mb": base_rss / MB,
        "rss_attack_peak_mb": max(r[2] for r in attack) / MB,
        "rss_after_mb": after[-1][2] / MB if after else float("nan"),
        "fds_quiet": base_fds, "fds_attack_peak": max(r[3] for r in attack),
        "fds_attack_end": attack[-1][3], "fds_after": after[-1][3] if after else -1,
        "flood": out["flood"],
        "timeline": [(phase, round(t, 1), round(rss / MB, 1), fds)
                     for phase, t, rss, fds in watch.rows],
    }


def show(f: dict[str, Any]) -> None:
    print(f"healthy pair, {RATE} msgs/s: quiet p50 {f['quiet_p50_ms']:.2f} ms, p99 "
          f"{f['quiet_p99_ms']:.2f} ms; under attack p50 {f['attack_p50_ms']:.2f} ms, p99 "
          f"{f['attack_p99_ms']:.2f} ms")
    print(f"flood: {f['flood'].get('taken', '?')} sends taken, "
          f"{f['flood'].get('refused', '?')} refused")
    print(f"hub RSS: quiet {f['rss_quiet_mb']:.0f} MB, attack peak "
          f"{f['rss_attack_peak_mb']:.0f} MB, after {f['rss_after_mb']:.0f} MB")
    print(f"hub FDs: quiet {f['fds_quiet']}, attack peak {f['fds_attack_peak']}, end of "
          f"attack {f['fds_attack_end']}, after {f['fds_after']}")
    print("timeline (phase, s, RSS MB, FDs):")
    for phase in ("quiet", "attack", "after"):
        rows = [r for r in f["timeline"] if r[0] == phase]
        print(f"  {phase:6} " + "  ".join(f"{t:.0f}s:{rss:.0f}/{fds}" for _, t, rss, fds in
                                          rows[::max(1, len(rows) // 12)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="10 s phases")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--summary-json", action="store_true")
    parser.add_argument("--role", choices=["flood", "stall"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        asyncio.run((flood if args.role == "flood" else stall)(args.url, args.home))
        return
    seconds = 10.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="meshhub-abuse-bench-") as tmp:
        f = figures(asyncio.run(run(seconds, Path(tmp))))
    if args.json:
        print(json.dumps(f))
    else:
        show(f)
    report([
        Goal("abuse", "healthy p99 under attack vs quiet", f["attack_p99_ms"], "ms",
             GOAL_P99_RATIO, baseline=f["quiet_p99_ms"]),
        Goal("abuse", "hub RSS growth under attack", f["rss_attack_peak_mb"] - f["rss_quiet_mb"],
             "MB", GOAL_RSS_MB, ratio_goal=False),
        Goal("abuse", "hub FDs over quiet, end of attack", f["fds_attack_end"] - f["fds_quiet"],
             "FDs", GOAL_FDS, ratio_goal=False),
    ], args.summary_json)


if __name__ == "__main__":
    main()
