#!/usr/bin/env python
"""Claude Code's tool-permission prompt to a phone and the tap back: the permission relay's
latency through a real ``hub mcp``, a real hub and the Telegram connector.

    python bench/approval_relay.py [--requests 200] [--json] [--quick] [--summary-json]

Everything on 127.0.0.1, stopped by handle at the end (even on error):

- the fake Telegram Bot API (tests/fakes/telegram_api.py) in this process;
- the hub: ``hub start`` as a child process with a temporary MESHHUB_HOME, its Telegram
  connector long-polling the fake; the member ``owner`` has linked its phone (``hub pair
  telegram``); send and action rates are off (``MESHHUB_SEND_RATE=0``...) and Telegram's
  pacing is raised (``[telegram] chat_rate``, ``bot_rate``), since this measures the hub, not the
  platform's limits;
- ``hub mcp`` as a child process, driven over stdin/stdout by raw JSON-RPC the way Claude Code
  drives it.

Per request, two timings:

* **out**: from the ``notifications/claude/channel/permission_request`` line written to
  ``hub mcp``'s stdin to the card's ``sendMessage`` arriving at the fake Bot API;
* **back**: from the Allow button's ``callback_query`` handed to the fake (which answers the
  hub's pending ``getUpdates`` at once) to the ``notifications/claude/channel/permission``
  verdict read on ``hub mcp``'s stdout.

The **baselines**, in the same run and over the same processes: out, a plain ``mesh_send`` tool
call to the phone (stdin to ``sendMessage``); back, a plain text from the phone to the session
(the update to the channel notification on stdout). Goals: p50 <= 10 ms each (absolute; the
ratio to the baseline is shown, the relay's own cost on top of a plain message).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import string
import sys
import tempfile
import time
from itertools import islice, product
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from goals import Goal, report  # noqa: E402
from telegram_latency import HOST, free_port, start_hub, stop_process, summary  # noqa: E402

from meshhub.client import MeshClient  # noqa: E402
from meshhub.config import init_home, load_signing_key  # noqa: E402
from tests.fakes.telegram_api import FakeTelegram, TgUser  # noqa: E402

HUB_BIN = str(Path(sys.executable).with_name("hub"))
GOAL_MS = 10.0
WARMUP = 20
PHONE = TgUser(7101, "Olive", "Owner")
SESSION = "owner-bench"
WAIT = 20.0
REQUEST_METHOD = "notifications/claude/channel/permission_request"
VERDICT_METHOD = "notifications/claude/channel/permission"
CHANNEL_METHOD = "notifications/claude/channel"


class Claude:
    """Claude Code's end of ``hub mcp``'s stdio: requests matched by id, notifications queued
    by method as they are read (with the time they were read)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ids = iter(range(1, 1 << 30))
        self.answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.notes: dict[str, asyncio.Queue[tuple[float, dict[str, Any]]]] = {}
        self.reader = asyncio.create_task(self._read())

    def queue(self, method: str) -> asyncio.Queue[tuple[float, dict[str, Any]]]:
        return self.notes.setdefault(method, asyncio.Queue())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            seen = time.perf_counter()
            message = json.loads(line)
            if "id" in message and message["id"] in self.answers:
                self.answers.pop(message["id"]).set_result(message)
            elif "method" in message:
                self.queue(message["method"]).put_nowait((seen, message.get("params") or {}))

    async def write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        await self.proc.stdin.drain()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        call_id = next(self.ids)
        future = self.answers[call_id] = asyncio.get_running_loop().create_future()
        await self.write({"id": call_id, "method": method, "params": params or {}})
        answer = await asyncio.wait_for(future, WAIT)
        if "error" in answer:
            raise RuntimeError(f"{method} failed: {answer['error']}")
        return answer["result"]

    async def next_note(self, method: str, match: Any) -> float:
        """When the next ``method`` notification whose params ``match`` was read."""
        queue = self.queue(method)
        while True:
            seen, params = await asyncio.wait_for(queue.get(), WAIT)
            if match(params):
                return seen


def refs(count: int) -> list[str]:
    """``count`` distinct refs of five lowercase letters, as Claude Code makes them."""
    return ["".join(p) for p in islice(product(string.ascii_lowercase, repeat=5), count)]


async def open_session(home: Path, url: str) -> tuple[asyncio.subprocess.Process, Claude]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHHUB_")}
    env.update(MESHHUB_HOME=str(home), MESHHUB_URL=url, MESHHUB_SESSION_NAME=SESSION)
    proc = await asyncio.create_subprocess_exec(
        HUB_BIN, "mcp", env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        limit=1 << 22)
    claude = Claude(proc)
    init = await claude.request("initialize", {
        "protocolVersion": "2025-06-18", "clientInfo": {"name": "bench", "version": "0"},
        "capabilities": {"experimental": {"claude/channel": {}}}})
    experimental = init["capabilities"].get("experimental", {})
    if "claude/channel/permission" not in experimental:
        raise RuntimeError("hub mcp does not declare claude/channel/permission")
    await claude.write({"method": "notifications/initialized"})
    await claude.request("tools/list")  # waits until the session has reached the hub
    return proc, claude


async def measure(tg: FakeTelegram, root: Path, n: int) -> dict[str, Any]:
    home = root / "hub"
    init_home(home, "owner")
    with (home / "config.toml").open("a") as fh:
        fh.write("\n[telegram]\nchat_rate = 1000.0\nchat_burst = 1000\n"
                 "bot_rate = 1000.0\nbot_burst = 1000\n")
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {**tg.env(), "MESHHUB_TELEGRAM_POLL_TIMEOUT": "25", "MESHHUB_SEND_RATE": "0",
           "MESHHUB_ACTION_RATE": "0"}
    hub = await asyncio.to_thread(start_hub, home, port, env)
    proc: asyncio.subprocess.Process | None = None
    try:
        async with MeshClient(url, load_signing_key(home), name="owner", receive=False) as o:
            code = (await o.call("pair_create", connector="telegram"))["code"]
        await tg.send_text(PHONE, f"/pair {code}")
        await tg.wait_for("sendMessage", lambda m: "Paired" in m["text"], timeout=30)
        proc, claude = await open_session(home, url)
        await tg.send_text(PHONE, f"@{SESSION}")  # the phone talks to the session from now on
        await tg.wait_for("sendMessage", lambda m: "Now talking" in m["text"], timeout=30)
        names = refs(WARMUP + n)
        out: list[float] = []
        back: list[float] = []
        base_out: list[float] = []
        base_back: list[float] = []
        for i in range(WARMUP + n):
            ref = names[i]
            sent_before = len(tg.of("sendMessage"))
            started = time.perf_counter()
            await claude.write({"method": REQUEST_METHOD, "params": {
                "request_id": ref, "tool_name": "Bash", "description": f"run step {i}",
                "input_preview": f"make step-{i}"}})
            card = await tg.wait_for("sendMessage", lambda m, r=ref: f"/approve {r}" in m["text"],
                                     timeout=WAIT, count=1)
            arrived = time.perf_counter()
            if len(tg.of("sendMessage")) <= sent_before:
                raise RuntimeError("no card was sent")
            keyboard = card["reply_markup"]["inline_keyboard"][0]
            pressed = time.perf_counter()
            verdict = asyncio.create_task(claude.next_note(
                VERDICT_METHOD, lambda p, r=ref: p.get("request_id") == r))
            await tg.press(PHONE, card["result"], keyboard[0]["callback_data"])
            answered = await verdict
            # a plain message each way over the same processes
            started_base = time.perf_counter()
            await claude.request("tools/call", {"name": "mesh_send", "arguments": {
                "to": "owner-telegram", "text": f"plain {i}"}})
            plain = await tg.wait_for("sendMessage", lambda m, k=i: f"plain {k}" in m["text"],
                                      timeout=WAIT)
            assert plain
            plain_arrived = time.perf_counter()
            echo = asyncio.create_task(claude.next_note(
                CHANNEL_METHOD, lambda p, k=i: f"reply-{k}-end" in p.get("content", "")))
            base_pressed = time.perf_counter()
            await tg.send_text(PHONE, f"reply-{i}-end")
            echoed = await echo
            if i >= WARMUP:
                out.append(arrived - started)
                back.append(answered - pressed)
                base_out.append(plain_arrived - started_base)
                base_back.append(echoed - base_pressed)
        return {"out": summary(out), "back": summary(back), "baseline_out": summary(base_out),
                "baseline_back": summary(base_back)}
    finally:
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)
        await asyncio.to_thread(stop_process, hub)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meshhub-relay-bench-") as tmp:
        async with FakeTelegram() as tg:
            result = await measure(tg, Path(tmp), args.requests)
    result["requests"] = args.requests
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="50 requests")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--summary-json", action="store_true",
                        help="end with the GOALS line bench/run-all reads")
    args = parser.parse_args()
    if args.quick:
        args.requests = 50
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key in ("out", "back", "baseline_out", "baseline_back"):
            row = result[key]
            print(f"{key:14} p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms  "
                  f"mean {row['mean_ms']:7.3f} ms  (n={row['n']})")
    goals = [
        Goal("approval", "permission_request to Telegram card p50",
             result["out"]["p50_ms"], "ms", GOAL_MS,
             baseline=result["baseline_out"]["p50_ms"], ratio_goal=False),
        Goal("approval", "button to verdict on stdout p50",
             result["back"]["p50_ms"], "ms", GOAL_MS,
             baseline=result["baseline_back"]["p50_ms"], ratio_goal=False),
    ]
    report(goals, args.summary_json)


if __name__ == "__main__":
    main()
