#!/usr/bin/env python
"""Inbound mail -> a connected peer's receipt: throughput over one SMTP connection, through a
real hub's email gateway, against a bare aiosmtpd server.

    python bench/email_throughput.py [--mails 1000] [--quick] [--json] [--summary-json]

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
text/plain body ``bench mail <index>``. The first 20 mails of each connection warm it up and
are not counted. The baseline runs first, then the hub, one after the other.

Figures per path: mails/s (the measured mails over the time from the first one's send start to
the last one's end) and the latency of each mail from its send start to its end. A mail ends,
through the hub, when ``agent`` has a message whose text holds its body (every one must arrive,
once); at the baseline, when the server's 250 is back. The hub's own 250 (the gateway accepted
the mail) is printed beside it. Goals: hub >= 500 mails/s, and >= 0.5x the baseline's mails/s.
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
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from goals import Goal, report  # noqa: E402
from telegram_latency import HOST, free_port, start_hub, stop_process, summary  # noqa: E402

from meshhub.client import MeshClient  # noqa: E402
from meshhub.config import init_home, load_signing_key  # noqa: E402

GOAL_MAILS_PER_S = 500.0
GOAL_RATIO = 0.5
WARMUP = 20
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


@dataclass
class Run:
    """One path's timestamps (``time.perf_counter``) by mail index."""

    name: str
    sent: dict[int, float] = field(default_factory=dict)  # send start
    replied: dict[int, float] = field(default_factory=dict)  # the server's 250
    ended: dict[int, float] = field(default_factory=dict)  # the peer's receipt, or the 250

    def figures(self, first: int) -> dict[str, Any]:
        """mails/s and latency (send start -> end) of the mails from index ``first`` on."""
        counted = [i for i in self.ended if i >= first]
        span = max(self.ended[i] for i in counted) - min(self.sent[i] for i in counted)
        return {"mails": len(counted), "mails_per_s": round(len(counted) / span, 1),
                **summary([self.ended[i] - self.sent[i] for i in counted]),
                "reply": summary([self.replied[i] - self.sent[i] for i in counted])}


async def send_all(client: aiosmtplib.SMTP, mails: list[EmailMessage], run: Run) -> None:
    async with client:
        for index, mail in enumerate(mails):
            run.sent[index] = time.perf_counter()
            errors, _ = await client.send_message(mail)
            run.replied[index] = time.perf_counter()
            if errors:
                raise RuntimeError(f"{run.name}: mail {index} refused: {errors}")


async def receive_all(agent: MeshClient, run: Run, count: int) -> None:
    """Stamps each mail's arrival at the peer by the index in its text; acks after the stamp."""
    while len(run.ended) < count:
        message = await agent.next_message(RECEIPT_TIMEOUT)
        stamp = time.perf_counter()
        found = MARK.search(str(message.get("text", "")))
        if found is None:
            raise RuntimeError(f"{PEER} got a message that is no bench mail: {message!r}")
        if int(found[1]) in run.ended:
            raise RuntimeError(f"{PEER} got mail {found[1]} twice")
        run.ended[int(found[1])] = stamp
        await agent.ack(message["id"])


async def measure_baseline(mails: list[EmailMessage]) -> Run:
    port = free_port()
    proc = start_baseline(port)
    try:
        run = Run("baseline")
        await send_all(await connect(port), mails, run)
        run.ended = run.replied
        return run
    finally:
        await asyncio.to_thread(stop_process, proc)


async def measure_hub(root: Path, mails: list[EmailMessage]) -> Run:
    home, port, smtp_port = root / "hub", free_port(), free_port()
    init_home(home, "owner")
    env = {"MESHHUB_EMAIL_DOMAIN": DOMAIN, "MESHHUB_EMAIL_LISTEN": f"{HOST}:{smtp_port}",
           "MESHHUB_EMAIL_ALLOW": SENDER}
    proc = await asyncio.to_thread(start_hub, home, port, env)
    try:
        agent_home = root / PEER
        init_home(agent_home, PEER)
        async with MeshClient(f"http://{HOST}:{port}", load_signing_key(agent_home),
                              name=PEER, kind="agent") as agent:
            run = Run("hub")
            receiving = asyncio.create_task(receive_all(agent, run, len(mails)))
            try:
                await send_all(await connect(smtp_port), mails, run)
                await asyncio.wait_for(asyncio.shield(receiving), RECEIPT_TIMEOUT)
            finally:
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)
            return run
    finally:
        await asyncio.to_thread(stop_process, proc)


async def bench(n: int) -> dict[str, Any]:
    mails = make_mails(WARMUP + n)
    with tempfile.TemporaryDirectory(prefix="meshhub-email-bench-") as tmp:
        base = (await measure_baseline(mails)).figures(WARMUP)
        hub = (await measure_hub(Path(tmp), mails)).figures(WARMUP)
    return {"mails": n, "warmup": WARMUP, "hub": hub, "baseline": base,
            "ratio": round(hub["mails_per_s"] / base["mails_per_s"], 2),
            "goal_mails_per_s": GOAL_MAILS_PER_S, "goal_ratio": GOAL_RATIO}


def show(out: dict[str, Any]) -> None:
    hub, base = out["hub"], out["baseline"]
    print(f"inbound mail -> peer receipt, {out['mails']} mails over one SMTP connection each "
          f"(after {WARMUP} warm-up)")
    print(f"  hub:      {hub['mails_per_s']:.0f} mails/s   p50 {hub['p50_ms']:.2f} ms   "
          f"p99 {hub['p99_ms']:.2f} ms   max {hub['max_ms']:.2f} ms   (the gateway's 250: "
          f"p50 {hub['reply']['p50_ms']:.2f} ms, p99 {hub['reply']['p99_ms']:.2f} ms)")
    print(f"  baseline: {base['mails_per_s']:.0f} mails/s   p50 {base['p50_ms']:.2f} ms   "
          f"p99 {base['p99_ms']:.2f} ms   max {base['max_ms']:.2f} ms   (aiosmtpd alone)")
    print(f"  hub/baseline: {out['ratio']:.2f}x mails/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=1000)
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
    out = asyncio.run(bench(args.mails))
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
