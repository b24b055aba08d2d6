#!/usr/bin/env python
"""Inbound mail -> a connected peer's receipt: throughput over one SMTP connection, through a
real hub's email gateway, against a bare aiosmtpd server.

    python bench/email_throughput.py [--mails 1000] [--quick] [--json] [--summary-json]
                                     [--synchronous FULL|NORMAL|OFF]

Everything on 127.0.0.1, every child stopped by handle at the end (even on error):

- the hub: ``hub start`` as a child process with a temporary MESHHUB_HOME and its email gateway
  listening on a free port (``MESHHUB_EMAIL_LISTEN``), domain ``mesh.test``, with
  ``bench@example.com`` let in by ``MESHHUB_EMAIL_ALLOW`` (no pairing);
- ``agent`` as a :class:`MeshClient` in this process, receiving direct messages;
- the **baseline**: a bare aiosmtpd ``SMTP`` server in a child process (this file with
  ``--serve-baseline``) whose handler answers every DATA "250 OK" and keeps nothing: SMTP
  itself, with no hub behind it.

The sender is aiosmtplib's ``SMTP`` in this process: one connection per server, then one
``send_message`` after the other (each awaits the server's answer), ``bench@example.com`` to
``agent@mesh.test`` (envelope and headers alike), each mail with its own Message-ID and a short
text/plain body ``bench mail <index>``. The two connections take turns: 20 warm-up mails each
(not counted), then blocks of 100 mails, a block's mails one after the other and the next block
(on the other connection; which goes first alternates every round) once all of them ended, so a
noisy moment of the machine hits both alike.

Figures per path: mails/s (the counted mails over the time of their blocks, each from its first
mail's send start to its last one's end) and the latency of each mail from its send start to its
end. A mail ends, through the hub, when ``agent`` has a message whose text holds its body (every
one must arrive, once); at the baseline, when the server's 250 is back. The hub's own 250 (the
gateway took the mail) is printed beside it. Goals: hub >= 500 mails/s, and >= 0.5x the
baseline's mails/s.

``--synchronous`` sets the hub's ``sqlite_synchronous``, to see what the fsync of the commit
before each 250 costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from goals import Goal, report  # noqa: E402
from slack_latency import set_synchronous  # noqa: E402
from telegram_latency import HOST, free_port, start_hub, stop_process, summary  # noqa: E402

from meshhub.client import MeshClient  # noqa: E402
from meshhub.config import init_home, load_signing_key  # noqa: E402

GOAL_MAILS_PER_S = 500.0
GOAL_RATIO = 0.5
WARMUP = 20
BLOCK = 100  # mails per turn of a route
DOMAIN = "mesh.test"
SENDER = "bench@example.com"
PEER = "agent"
MARK = re.compile(r"bench mail (\d+)\b")
RECEIPT_TIMEOUT = 30.0


# -- the baseline server (a child process) ------------------------------------------------------
class Accept:
    """aiosmtpd's handler of the baseline: every mail is answered at once and dropped."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


async def serve_baseline(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Accept(), hostname="baseline.test"),
                                      HOST, port)
    await server.serve_forever()


def start_baseline(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(port)],
                            stdin=subprocess.DEVNULL)


# -- measuring --------------------------------------------------------------------------------
def make_mails(count: int) -> list[EmailMessage]:
    """``count`` mails to the peer, numbered from 0; built before any clock starts."""
    mails = []
    for index in range(count):
        mail = EmailMessage()
        mail["From"] = SENDER
        mail["To"] = f"{PEER}@{DOMAIN}"
        mail["Subject"] = f"bench {index}"
        mail["Message-ID"] = make_msgid(f"bench{index}", domain="example.com")
        mail.set_content(f"bench mail {index}\n")
        mails.append(mail)
    return mails


async def connect(port: int) -> aiosmtplib.SMTP:
    """One plain SMTP connection, once the server listens (it may still be starting)."""
    deadline = time.monotonic() + 20
    while True:
        client = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False)
        try:
            await client.connect()
            return client
        except (aiosmtplib.SMTPConnectError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no SMTP server on port {port} within 20 s") from None
            await asyncio.sleep(0.05)


class Route:
    """One server the mails go to over one connection, and its timestamps
    (``time.perf_counter``) by mail index. A mail ends when the peer has it (``via_peer``),
    else when the server's 250 is back."""

    def __init__(self, name: str, client: aiosmtplib.SMTP, via_peer: bool) -> None:
        self.name, self.client, self.via_peer = name, client, via_peer
        self.sent: dict[int, float] = {}
        self.replied: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.counted: list[int] = []
        self.spans: list[float] = []  # per counted block: first send start -> last end
        self.arrival = asyncio.Event()

    async def block(self, mails: list[EmailMessage], indices: range, counted: bool) -> None:
        """Send the mails of ``indices`` one after the other, then wait until all ended."""
        for index in indices:
            self.sent[index] = time.perf_counter()
            errors, _ = await self.client.send_message(mails[index])
            self.replied[index] = time.perf_counter()
            if errors:
                raise RuntimeError(f"{self.name}: mail {index} refused: {errors}")
            if not self.via_peer:
                self.ended[index] = self.replied[index]
        await self.all_ended(indices)
        if counted:
            self.counted += indices
            self.spans.append(max(self.ended[i] for i in indices)
                              - min(self.sent[i] for i in indices))

    async def all_ended(self, indices: range) -> None:
        while True:
            self.arrival.clear()
            if all(i in self.ended for i in indices):
                return
            try:
                await asyncio.wait_for(self.arrival.wait(), RECEIPT_TIMEOUT)
            except TimeoutError:
                missing = [i for i in indices if i not in self.ended]
                raise RuntimeError(f"{self.name}: {len(missing)} mails never reached {PEER}, "
                                   f"the first {missing[0]}") from None

    def figures(self) -> dict[str, Any]:
        """mails/s (counted mails over the counted blocks' time) and each mail's latency."""
        return {"mails": len(self.counted),
                "mails_per_s": round(len(self.counted) / sum(self.spans), 1),
                **summary([self.ended[i] - self.sent[i] for i in self.counted]),
                "reply": summary([self.replied[i] - self.sent[i] for i in self.counted])}


async def receive_all(agent: MeshClient, route: Route) -> None:
    """Stamps each mail's arrival at the peer by the index in its text; acks after the stamp."""
    while True:
        message = await agent.next_message(3600)
        stamp = time.perf_counter()
        found = MARK.search(str(message.get("text", "")))
        if found is None:
            raise RuntimeError(f"{PEER} got a message that is no bench mail: {message!r}")
        if int(found[1]) in route.ended:
            raise RuntimeError(f"{PEER} got mail {found[1]} twice")
        route.ended[int(found[1])] = stamp
        route.arrival.set()
        await agent.ack(message["id"])


async def interleave(mails: list[EmailMessage], routes: list[Route]) -> None:
    """The warm-up, then blocks of ``BLOCK`` mails, each route in turn (the order alternates
    every round), so a noisy moment of the machine hits both alike."""
    starts = [0, *range(WARMUP, len(mails), BLOCK)]
    ends = [*starts[1:], len(mails)]
    for round_, (start, end) in enumerate(zip(starts, ends, strict=True)):
        for route in routes if round_ % 2 else routes[::-1]:
            await route.block(mails, range(start, end), counted=round_ > 0)


async def measure(root: Path, mails: list[EmailMessage], synchronous: str | None
                  ) -> tuple[Route, Route]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        base_port, port, smtp_port = free_port(), free_port(), free_port()
        procs.append(start_baseline(base_port))
        home, agent_home = root / "hub", root / PEER
        init_home(home, "owner")
        init_home(agent_home, PEER)
        if synchronous:
            set_synchronous(home, synchronous)
        env = {"MESHHUB_EMAIL_DOMAIN": DOMAIN, "MESHHUB_EMAIL_LISTEN": f"{HOST}:{smtp_port}",
               "MESHHUB_EMAIL_ALLOW": SENDER,
               # one sender's mails as fast as they go: past the per-member send rate
               # (meshhub.limits), turned off to measure the gateway's speed
               "MESHHUB_SEND_RATE": "0"}
        procs.append(await asyncio.to_thread(start_hub, home, port, env))
        async with MeshClient(f"http://{HOST}:{port}", load_signing_key(agent_home),
                              name=PEER, kind="agent") as agent:
            hub = Route("hub", await connect(smtp_port), via_peer=True)
            base = Route("baseline", await connect(base_port), via_peer=False)
            receiving = asyncio.create_task(receive_all(agent, hub))
            try:
                async with hub.client, base.client:
                    await interleave(mails, [hub, base])
            finally:
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)
        return hub, base
    finally:
        for proc in procs:
            await asyncio.to_thread(stop_process, proc)


async def bench(n: int, synchronous: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meshhub-email-bench-") as tmp:
        hub_route, base_route = await measure(Path(tmp), make_mails(WARMUP + n), synchronous)
    hub, base = hub_route.figures(), base_route.figures()
    return {"mails": n, "warmup": WARMUP, "block": BLOCK,
            "sqlite_synchronous": synchronous or "hub default (FULL)", "hub": hub,
            "baseline": base, "ratio": round(hub["mails_per_s"] / base["mails_per_s"], 2),
            "goal_mails_per_s": GOAL_MAILS_PER_S, "goal_ratio": GOAL_RATIO}


def show(out: dict[str, Any]) -> None:
    hub, base = out["hub"], out["baseline"]
    print(f"inbound mail -> peer receipt, {out['mails']} mails over one SMTP connection each "
          f"(after {WARMUP} warm-up), in turns of {BLOCK}, sqlite synchronous: "
          f"{out['sqlite_synchronous']}")
    print(f"  hub:      {hub['mails_per_s']:.0f} mails/s   p50 {hub['p50_ms']:.2f} ms   "
          f"p99 {hub['p99_ms']:.2f} ms   max {hub['max_ms']:.2f} ms   (the gateway's 250: "
          f"p50 {hub['reply']['p50_ms']:.2f} ms, p99 {hub['reply']['p99_ms']:.2f} ms)")
    print(f"  baseline: {base['mails_per_s']:.0f} mails/s   p50 {base['p50_ms']:.2f} ms   "
          f"p99 {base['p99_ms']:.2f} ms   max {base['max_ms']:.2f} ms   (aiosmtpd alone)")
    print(f"  hub/baseline: {out['ratio']:.2f}x mails/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL", "OFF"], default=None,
                        help="the hub's [hub] sqlite_synchronous (default: the hub's own)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a brief run (--mails 300)")
    parser.add_argument("--summary-json", action="store_true",
                        help="also print the GOALS line bench/run-all reads")
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        asyncio.run(serve_baseline(args.serve_baseline))
        return
    if args.quick:
        args.mails = 300
    out = asyncio.run(bench(args.mails, args.synchronous))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        show(out)
    rate, base_rate = out["hub"]["mails_per_s"], out["baseline"]["mails_per_s"]
    report([Goal("email", "inbound mails/s", rate, "mails/s", GOAL_MAILS_PER_S,
                 baseline=base_rate, compare=">=", ratio_goal=False),
            Goal("email", "inbound mails/s vs aiosmtpd", rate, "mails/s", GOAL_RATIO,
                 baseline=base_rate, compare=">=")], args.summary_json)


if __name__ == "__main__":
    main()
