#!/usr/bin/env python
"""A peer's send -> the message in the web page's DOM, beside the same send to a WebSocket client.

    python bench/webui.py [--messages 200] [--history 1000] [--quick] [--json] [--summary-json]

Everything on 127.0.0.1, stopped by handle at the end (even on error):

- the hub: ``hub start`` as a child process with a temporary MESHHUB_HOME;
- ``ann``, signed in to the web page in Debian's Chromium (Playwright, headless) with a link
  from ``hub web``, showing her direct messages with bob; and ``ann`` again as a
  :class:`MeshClient` that receives (the baseline);
- ``bob``, a :class:`MeshClient` that sends.

Each message bob sends to ann is pushed to both of ann's connections at once, so one send gives
both figures: the clock starts just before bob's ``send`` and stops when ann's client has the
message (**baseline**) and when the page has put it in its DOM (**figure**: a MutationObserver
in the page stamps each message element with the wall clock as it is added). One message at a
time, after a warm-up. Goal: page p50 and p99 within 2x of the client's.

Then **first paint**: bob fills ``#bench`` with ``--history`` messages; the page opens the
conversation (a click in the sidebar) and the clock stops at the first animation frame after
its first page of messages is in the DOM (paged history: the page asks for 50). Median of
several opens; goal: under 300 ms. Beside it, for information, the same page of ``history``
asked for by a WebSocket client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from goals import Goal, percentile, report  # noqa: E402
from ws_throughput import free_port, health  # noqa: E402

from meshhub.client import MeshClient  # noqa: E402
from meshhub.config import init_home, load_signing_key  # noqa: E402

HOST = "127.0.0.1"
HUB_BIN = str(Path(sys.executable).with_name("hub"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
GOAL_RATIO = 2.0
GOAL_FIRST_PAINT_MS = 300.0
WARMUP = 20
OPENS = 7

STAMP_ARRIVALS = """() => {
  window.__arrivals = {};
  new MutationObserver((records) => {
    const now = performance.timeOrigin + performance.now();
    for (const record of records) for (const node of record.addedNodes) {
      if (node.nodeType !== 1) continue;
      const found = node.matches('[data-testid="message"]') ? [node]
        : node.querySelectorAll('[data-testid="message"]');
      for (const item of found) if (!(item.dataset.id in window.__arrivals))
        window.__arrivals[item.dataset.id] = now;
    }
  }).observe(document.body, {childList: true, subtree: true});
}"""

OPEN_VIEW = """async ([view, marker]) => {
  const started = performance.now();
  document.querySelector(`[data-view="${view}"]`).click();
  await new Promise((resolve) => {
    const check = () => document.querySelector(`[data-testid="message"][data-id="${marker}"]`)
      ? requestAnimationFrame(() => resolve()) : requestAnimationFrame(check);
    check();
  });
  return performance.now() - started;
}"""


def env_for(home: Path, url: str, sockets: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHHUB_")}
    env.update(MESHHUB_HOME=str(home), MESHHUB_URL=url, MESHHUB_SOCKET_DIR=str(sockets))
    return env


def start_hub(root: Path, port: int, sockets: Path) -> subprocess.Popen[bytes]:
    home = root / "hub"
    init_home(home, "owner")
    url = f"http://{HOST}:{port}"
    log = (root / "hub.log").open("ab")
    proc = subprocess.Popen([HUB_BIN, "start", "--host", HOST, "--port", str(port),
                             "--log-level", "warning"], env=env_for(home, url, sockets),
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while health(url) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the hub did not start:\n{(root / 'hub.log').read_text()}")
        time.sleep(0.05)
    return proc


def sign_in_link(root: Path, url: str, sockets: Path) -> str:
    out = subprocess.run([HUB_BIN, "web", "--no-open"], env=env_for(root / "ann", url, sockets),
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


async def page_arrival(page: Any, message_id: str, timeout: float = 10.0) -> float:
    handle = await page.wait_for_function(
        "(id) => window.__arrivals && window.__arrivals[id]", arg=message_id,
        timeout=timeout * 1000)
    return float(await handle.json_value()) / 1000


async def measure(url: str, link: str, root: Path, n: int, history: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    bob = MeshClient(url, load_signing_key(root / "bob"), name="bob", kind="human")
    ann = MeshClient(url, load_signing_key(root / "ann"), name="ann", kind="human")
    async with bob, ann, async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            await page.goto(link)
            first = await bob.send("ann", "hello from bob")
            await ann.next_message(10)
            await page.click('[data-view="dm:bob"]', timeout=15000)
            await page.wait_for_selector(f'[data-testid="message"][data-id="{first["id"]}"]')
            await page.evaluate(STAMP_ARRIVALS)
            page_ms: list[float] = []
            client_ms: list[float] = []
            for i in range(WARMUP + n):
                started = time.time()
                sent = await bob.send("ann", f"message {i} from bob: `code` and **bold**")
                got = await ann.next_message(10)
                client_at = time.time()
                await ann.ack(got["id"])
                page_at = await page_arrival(page, sent["id"])
                if i >= WARMUP:
                    client_ms.append((client_at - started) * 1000)
                    page_ms.append((page_at - started) * 1000)
            paint_ms, history_ms = await first_paint(page, bob, ann, history)
        finally:
            await browser.close()
    return {"page_ms": page_ms, "client_ms": client_ms, "paint_ms": paint_ms,
            "history_ms": history_ms}


async def first_paint(page: Any, bob: MeshClient, ann: MeshClient,
                      history: int) -> tuple[list[float], list[float]]:
    """Opens of a conversation of ``history`` messages: the page's time to its first frame
    with the newest page painted, and a client's time for the same ``history`` call."""
    await bob.call("conversation_create", name="bench")
    await ann.call("conversation_join", name="bench")
    newest = None
    for i in range(history):
        newest = (await bob.send("#bench", f"history {i}: the page shows the newest 50"))["id"]
    await page.reload()
    await page.wait_for_selector('[data-view="#bench"]', timeout=15000)
    paint: list[float] = []
    client: list[float] = []
    for _ in range(OPENS):
        await page.click('[data-view="dm:bob"]')
        await page.wait_for_selector('[data-testid="message"][data-from="bob"]')
        paint.append(float(await page.evaluate(OPEN_VIEW, ["#bench", newest])))
        started = time.perf_counter()
        await ann.call("history", conversation="#bench", limit=50)
        client.append((time.perf_counter() - started) * 1000)
    return paint, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 messages, 1,000 in history")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--summary-json", action="store_true", help="the GOALS line (run-all)")
    args = parser.parse_args()
    n = 100 if args.quick else args.messages
    with tempfile.TemporaryDirectory(prefix="meshhub-bench-web-") as tmp:
        root = Path(tmp)
        sockets = root / "sockets"
        sockets.mkdir(mode=0o700)
        for name in ("ann", "bob"):
            init_home(root / name, name)
        port = free_port()
        url = f"http://{HOST}:{port}"
        hub = start_hub(root, port, sockets)
        try:
            os.environ["MESHHUB_SOCKET_DIR"] = str(sockets)
            link = sign_in_link(root, url, sockets)
            out = asyncio.run(measure(url, link, root, n, args.history))
        finally:
            hub.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                hub.wait(15)
            if hub.poll() is None:
                hub.kill()
    page, client = out["page_ms"], out["client_ms"]
    figures = {
        "messages": len(page),
        "page_p50_ms": percentile(page, 50), "page_p99_ms": percentile(page, 99),
        "client_p50_ms": percentile(client, 50), "client_p99_ms": percentile(client, 99),
        "first_paint_median_ms": statistics.median(out["paint_ms"]),
        "first_paint_max_ms": max(out["paint_ms"]),
        "history_call_median_ms": statistics.median(out["history_ms"]),
        "history_messages": args.history,
    }
    print(f"web page vs WebSocket client, {len(page)} messages one at a time "
          f"(after {WARMUP} warm-up):")
    for key, value in figures.items():
        print(f"  {key:24} {value:.2f}" if isinstance(value, float) else f"  {key:24} {value}")
    if args.json:
        print(json.dumps({**figures, "raw": out}))
    report([
        Goal("webui", "send -> DOM p50", figures["page_p50_ms"], "ms", GOAL_RATIO,
             baseline=figures["client_p50_ms"]),
        Goal("webui", "send -> DOM p99", figures["page_p99_ms"], "ms", GOAL_RATIO,
             baseline=figures["client_p99_ms"]),
        Goal("webui", f"first paint, {args.history} msgs", figures["first_paint_median_ms"],
             "ms", GOAL_FIRST_PAINT_MS, baseline=figures["history_call_median_ms"],
             ratio_goal=False),
    ], args.summary_json)


if __name__ == "__main__":
    main()
