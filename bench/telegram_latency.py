#!/usr/bin/env python
"""Telegram update in -> a connected peer's receipt: latency through a real hub.

    python bench/telegram_latency.py [--updates 1000] [--json] [--quick] [--summary-json]

Everything on 127.0.0.1, stopped by handle at the end (even on error):

- the fake Telegram Bot API (tests/fakes/telegram_api.py) in this process;
- the hub: ``hub start`` as a child process with a temporary MESHHUB_HOME, its Telegram
  connector long-polling the fake (``MESHHUB_TELEGRAM_*``);
- a paired Telegram user whose current target is ``carl``, and ``carl`` as a
  :class:`MeshClient` in this process.

One update at a time: the clock starts when the update is handed to the fake (which answers the
hub's pending ``getUpdates`` at once) and stops when carl's client has the message. The
**baseline** is the same path without the hub: a bare python-telegram-bot ``get_updates`` loop
in this process receiving the same updates from the same fake, i.e. the floor set by the Bot API
round trip. Goal: hub p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from goals import Goal, percentile, report  # noqa: E402

from meshhub.client import MeshClient  # noqa: E402
from meshhub.config import init_home, load_signing_key  # noqa: E402
from tests.fakes.telegram_api import FakeTelegram, TgUser  # noqa: E402

HOST = "127.0.0.1"
HUB_BIN = str(Path(sys.executable).with_name("hub"))
GOAL_P50_MS = 5.0
WARMUP = 50
USER = TgUser(7001, "Bench", "User")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def summary(latencies: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3),
            "p99_ms": round(percentile(ms, 99), 3), "mean_ms": round(statistics.mean(ms), 3),
            "max_ms": round(max(ms), 3)}


def start_hub(home: Path, port: int, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHHUB_")}
    env.update(MESHHUB_HOME=str(home), **env_extra)
    log = (home / "bench-hub.log").open("ab")
    proc = subprocess.Popen([HUB_BIN, "start", "--host", HOST, "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited: see {home / 'bench-hub.log'}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the hub did not start within 20 s")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def measure_hub(tg: FakeTelegram, root: Path, n: int,
                      synchronous: str | None = None) -> dict[str, Any]:
    home = root / "hub"
    init_home(home, "owner")
    if synchronous:  # e.g. OFF, to see what the per-message fsync costs
        import tomllib

        import tomli_w

        raw = tomllib.loads((home / "config.toml").read_text())
        raw.setdefault("hub", {})["sqlite_synchronous"] = synchronous
        (home / "config.toml").write_text(tomli_w.dumps(raw))
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = tg.env()
    env["MESHHUB_TELEGRAM_POLL_TIMEOUT"] = "25"
    proc = await asyncio.to_thread(start_hub, home, port, env)
    try:
        async with MeshClient(url, load_signing_key(home), name="owner",
                              receive=False) as owner:
            code = (await owner.call("pair_create", connector="telegram"))["code"]
        await tg.send_text(USER, f"/pair {code}")
        await tg.wait_for("sendMessage", lambda m: "Paired" in m["text"], timeout=30)
        carl_home = root / "carl"
        init_home(carl_home, "carl")
        async with MeshClient(url, load_signing_key(carl_home), name="carl") as carl:
            await tg.send_text(USER, "@carl start")
            await carl.ack((await carl.next_message(10))["id"])
            latencies: list[float] = []
            for i in range(WARMUP + n):
                started = time.perf_counter()
                await tg.send_text(USER, f"update {i}")
                message = await carl.next_message(10)
                elapsed = time.perf_counter() - started
                await carl.ack(message["id"])
                if message["text"] != f"update {i}":
                    raise RuntimeError(f"out of order: {message['text']!r} for update {i}")
                if i >= WARMUP:
                    latencies.append(elapsed)
        return summary(latencies)
    finally:
        await asyncio.to_thread(stop_process, proc)


async def measure_baseline(tg: FakeTelegram, n: int) -> dict[str, Any]:
    """The floor: python-telegram-bot polling the same fake, no hub in between."""
    from telegram import Bot
    from telegram.request import HTTPXRequest

    tg.updates.clear()
    bot = Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url,
              get_updates_request=HTTPXRequest(read_timeout=40,
                                               httpx_kwargs={"trust_env": False}))
    await bot.initialize()
    arrived: asyncio.Queue[str] = asyncio.Queue()

    async def poll() -> None:
        offset = None
        while True:
            for update in await bot.get_updates(offset=offset, timeout=25):
                offset = update.update_id + 1
                if update.message is not None and update.message.text:
                    arrived.put_nowait(update.message.text)

    task = asyncio.create_task(poll())
    latencies: list[float] = []
    try:
        for i in range(WARMUP + n):
            started = time.perf_counter()
            await tg.send_text(USER, f"base {i}")
            text = await asyncio.wait_for(arrived.get(), 10)
            if i >= WARMUP:
                latencies.append(time.perf_counter() - started)
            assert text == f"base {i}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await bot.shutdown()
    return summary(latencies)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"updates": args.updates,
                           "sqlite_synchronous": args.synchronous or "hub default (FULL)"}
    with tempfile.TemporaryDirectory(prefix="meshhub-tg-bench-") as tmp:
        async with FakeTelegram() as tg:
            out["hub"] = await measure_hub(tg, Path(tmp), args.updates, args.synchronous)
        if not args.skip_baseline:
            async with FakeTelegram() as tg:
                out["baseline"] = await measure_baseline(tg, args.updates)
    hub, base = out["hub"], out.get("baseline")
    if base:
        out["p50_ratio"] = round(hub["p50_ms"] / max(base["p50_ms"], 1e-9), 2)
        out["p99_ratio"] = round(hub["p99_ms"] / max(base["p99_ms"], 1e-9), 2)
    out["goal_p50_ms"] = GOAL_P50_MS
    out["goal_met"] = hub["p50_ms"] <= GOAL_P50_MS
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL", "OFF"], default=None,
                        help="the hub's [hub] sqlite_synchronous (default: the hub's own)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a brief run (--updates 200)")
    parser.add_argument("--summary-json", action="store_true",
                        help="also print the GOALS line bench/run-all reads")
    args = parser.parse_args()
    if args.quick:
        args.updates = 200
    out = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    hub, base = out["hub"], out.get("baseline")
    print(f"telegram update -> peer receipt, {args.updates} updates (after {WARMUP} warm-up), "
          f"sqlite synchronous: {out['sqlite_synchronous']}")
    print(f"  hub:      p50 {hub['p50_ms']:.2f} ms   p99 {hub['p99_ms']:.2f} ms   "
          f"mean {hub['mean_ms']:.2f} ms   max {hub['max_ms']:.2f} ms")
    if base:
        print(f"  baseline: p50 {base['p50_ms']:.2f} ms   p99 {base['p99_ms']:.2f} ms   "
              f"(python-telegram-bot polling the same fake, no hub)")
        print(f"  hub/baseline: p50 {out['p50_ratio']:.2f}x   p99 {out['p99_ratio']:.2f}x")
    report([Goal("telegram", "update -> peer p50", hub["p50_ms"], "ms", GOAL_P50_MS,
                 baseline=base["p50_ms"] if base else None, ratio_goal=False)],
           args.summary_json)


if __name__ == "__main__":
    main()
