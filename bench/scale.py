#!/usr/bin/env python
"""Growth: send latency, hub memory and start-up as peers and stored messages grow.

    python bench/scale.py [--quick] [--peers 10,100,1000,5000] [--stored 0,100000,1000000]
                          [--sends 300] [--idle send-only|receiving] [--summary-json]

Everything runs on 127.0.0.1; every child is stopped by handle at the end, even on error.

Peers: one real ``hub start`` child (temporary ``MESHHUB_HOME``, free port). Load-generator
children (this file with ``--role peers``) hold idle ``MeshClient`` connections (TCP, each its
own key, enrolled once through the hub's local socket; send-only unless ``--idle receiving``);
the parent grows their number to each size in turn (``--peers``). At each size, once the hub's
RSS and CPU have settled, the parent samples the hub's RSS; then a probe child (two more peers)
sends ``--sends`` direct messages one after the other, each awaiting the hub's result, to a
receiver that acks each. ``send`` latency is the time from the send call to the message's
receipt by the receiver; ``rtt`` is the time until the hub's result. The probe pair counts among
the N peers. A reference hub keeps the smallest size throughout and takes turns with it, send
by send, so that another job on the machine slows both alike.

Stored messages: for each size (``--stored``), a fresh hub home is started once and stopped (so
the hub creates its own schema), then filled with that many messages and their deliveries by
``scale_seed.py`` while the hub is stopped. Start-up is the time from spawning ``hub start``
until its ``/health`` answers (median of ``--starts``); then all these hubs run at once, each
with the smallest peer count, and take turns at the probe as above.

Goals (issue 9): send p50 at the largest size within 1.5x of the smallest, for peers and for
stored messages; RSS per idle peer (RSS growth from the smallest to the largest size / the
peers added; the row names the ``--idle`` mode) <= 100 KB; start-up with 1,000,000 stored
messages <= 2 s (the start-up with none is shown beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from goals import Goal, report
from scale_seed import seed
from ws_throughput import HOST, HUB_BIN, Lines, Procs, free_port, health, pct, wait_healthy

THIS = str(Path(__file__).resolve())
PEERS_PER_GEN = 2500  # idle peers one load generator holds at most
CONNECTS_IN_FLIGHT = 32  # per load generator
WARMUP = 20  # probe sends not counted, per hub
ROUND = 1  # probe sends on one hub before the next hub's turn


# ================================================================================================
# load generator and probe (child processes): commands on stdin, one answer line each
# ================================================================================================
class _Discard(asyncio.Queue):  # type: ignore[type-arg]
    """Presence events for idle peers: thousands per peer at large sizes, none of them read."""

    def put_nowait(self, item: Any) -> None:
        pass


async def open_peer(url: str, name: str, receive: bool) -> Any:
    """A peer over TCP, its key enrolled through the hub's local socket first."""
    from nacl.signing import SigningKey

    from meshhub.client import MeshClient

    key = SigningKey.generate()
    async with MeshClient(url, key, name=name, kind="agent", connector="bench", receive=False):
        pass
    client = MeshClient(url, key, name=name, kind="agent", connector="bench", local=False,
                        receive=receive)
    client.events = _Discard()
    await asyncio.wait_for(client.connect(), 60)
    return client


async def add_peers(url: str, prefix: str, first: int, count: int, receive: bool,
                    clients: list[Any]) -> None:
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def one(i: int) -> None:
        async with gate:
            clients.append(await open_peer(url, f"{prefix}{i:05d}", receive))

    await asyncio.gather(*(one(first + i) for i in range(count)))


async def probe(sender: Any, receiver: Any, to: str, sends: int,
                warmup: int) -> dict[str, list[float]]:
    """``warmup`` + ``sends`` DMs one after the other; per counted send, the seconds until
    receipt and until the hub's result."""
    loop = asyncio.get_running_loop()
    receipt: list[float] = []
    rtt: list[float] = []
    for i in range(warmup + sends):
        got: asyncio.Future[float] = loop.create_future()
        waiting = asyncio.create_task(receiver.next_message(30))
        waiting.add_done_callback(lambda _t, got=got: got.set_result(time.perf_counter()))
        t0 = time.perf_counter()
        await sender.call("send", to=to, text=f"probe {i}")
        t_result = time.perf_counter()
        message = await waiting
        await receiver.ack(message["id"])
        if i >= warmup:
            receipt.append(await got - t0)
            rtt.append(t_result - t0)
    return {"receipt": receipt, "rtt": rtt}


async def peers_main(args: argparse.Namespace) -> None:
    clients: list[Any] = []
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "QUIT":
                return
            t0 = time.perf_counter()
            if line[0] == "ADD":
                first, count, receive = int(line[1]), int(line[2]), line[3] == "receiving"
                await add_peers(args.url, args.prefix, first, count, receive, clients)
                answer: dict[str, Any] = {"peers": len(clients),
                                          "seconds": time.perf_counter() - t0}
            elif line[0] == "PROBE":
                if not clients:
                    await add_peers(args.url, args.prefix, 0, 2, True, clients)
                answer = await probe(clients[0], clients[1], f"{args.prefix}00001",
                                     int(line[1]), int(line[2]))
            else:
                answer = {"error": f"unknown command {line[0]}"}
            print("ANSWER " + json.dumps(answer), flush=True)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# ================================================================================================
# parent
# ================================================================================================
def raise_nofile() -> None:
    """Soft open-files limit up to the hard one (children, the hub too, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Gen:
    """One child of ``--role peers``: ``ask`` sends a command and waits for its answer."""

    def __init__(self, procs: Procs, url: str, prefix: str, logdir: Path) -> None:
        with (logdir / f"{prefix}.err").open("w") as err:
            self.proc = procs.start([sys.executable, THIS, "--role", "peers", "--url", url,
                                     "--prefix", prefix], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        self.lines = Lines(self.proc)
        self.held = 0

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            line = self.lines.next(deadline)
            if line.startswith("ANSWER "):
                result: dict[str, Any] = json.loads(line[7:])
                if "error" in result:
                    raise RuntimeError(result["error"])
                return result

    def ask(self, command: str, timeout: float) -> dict[str, Any]:
        self.send(command)
        return self.answer(timeout)


def start_hub(procs: Procs, home: Path, logdir: Path) -> tuple[subprocess.Popen[Any], str, float]:
    """A ``hub start`` child on a free port; also the seconds until its /health answered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHHUB_")}
    env["MESHHUB_HOME"] = str(home)
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = logdir / f"hub-{home.name}.log"
    with log.open("ab") as fh:
        t0 = time.perf_counter()
        hub = procs.start([HUB_BIN, "start", "--host", HOST, "--port", str(port),
                           "--log-level", "warning"], env=env, stdout=fh,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = t0 + 60
    while health(url) is None:
        if time.perf_counter() > deadline or hub.poll() is not None:
            wait_healthy(hub, url, 0, log)  # raises with the log's tail
        time.sleep(0.01)
    return hub, url, time.perf_counter() - t0


def settled_rss(pid: int, timeout: float = 60.0) -> float:
    """The hub's RSS in bytes once it is idle: CPU under 5% and RSS steady (within 1%) over the
    last 2 s (presence events of the last peers to join may still be on their way)."""
    proc = psutil.Process(pid)
    history: list[tuple[float, float, int]] = []
    deadline = time.monotonic() + timeout
    while True:
        t = proc.cpu_times()
        history.append((time.monotonic(), t.user + t.system, proc.memory_info().rss))
        recent = [h for h in history if h[0] >= history[-1][0] - 2.0]
        span = recent[-1][0] - recent[0][0]
        if span >= 1.5:
            cpu = (recent[-1][1] - recent[0][1]) / span
            rss = [h[2] for h in recent]
            if cpu < 0.05 and max(rss) - min(rss) <= 0.01 * max(rss):
                return float(rss[-1])
        if time.monotonic() > deadline:
            return float(history[-1][2])
        time.sleep(0.2)


@dataclass
class Row:
    label: str
    size: int
    receipt: list[float] = field(default_factory=list)
    rtt: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)  # the reference hub's, meanwhile
    rss: float = 0.0
    connect_s: float = 0.0
    startup_s: list[float] = field(default_factory=list)
    seed_s: float = 0.0

    @staticmethod
    def ms(values: list[float], q: float) -> float:
        return 1000 * (pct(values, q) or math.nan)


def probe_all(probers: list[Gen], sends: int, timeout: float) -> list[dict[str, list[float]]]:
    """``sends`` probe sends on each hub, in rounds of ``ROUND`` taking turns, so that another
    job on the machine slows every hub alike; after ``WARMUP`` uncounted sends each."""
    for g in probers:
        g.ask(f"PROBE 0 {WARMUP}", timeout)
    found: list[dict[str, list[float]]] = [{"receipt": [], "rtt": []} for _ in probers]
    for r in range(math.ceil(sends / ROUND)):
        turn = list(enumerate(probers))
        for i, g in turn[r % len(turn):] + turn[:r % len(turn)]:
            answer = g.ask(f"PROBE {min(ROUND, sends - r * ROUND)} 0", timeout)
            for key in found[i]:
                found[i][key] += answer[key]
    return found


def grow_peers(args: argparse.Namespace, procs: Procs, root: Path) -> list[Row]:
    """One hub whose peers grow to each size in turn, probed at each size together with a
    reference hub that keeps the smallest size throughout."""
    smallest = args.peers[0]
    ref_home, home = root / "peers-reference", root / "peers"
    ref_home.mkdir(mode=0o700)
    home.mkdir(mode=0o700)
    ref_hub, ref_url, _ = start_hub(procs, ref_home, root)
    Gen(procs, ref_url, "ref-idle-", root).ask(f"ADD 0 {smallest - 2} {args.idle}",
                                                         args.timeout)
    ref_prober = Gen(procs, ref_url, "probe", root)
    hub, url, _ = start_hub(procs, home, root)
    prober = Gen(procs, url, "probe", root)
    gens: list[Gen] = []
    rows = []
    for n in args.peers:
        idle = n - 2
        while len(gens) < math.ceil(idle / PEERS_PER_GEN):
            gens.append(Gen(procs, url, f"idle{len(gens)}-", root))
        t0 = time.perf_counter()
        orders = []
        for g in gens:
            more = min(PEERS_PER_GEN - g.held, idle - sum(x.held for x in gens))
            if more > 0:
                g.send(f"ADD {g.held} {more} {args.idle}")
                orders.append(g)
                g.held += more
        for g in orders:
            g.answer(args.timeout)
        row = Row("peers", n, connect_s=time.perf_counter() - t0)
        row.rss = settled_rss(hub.pid)
        mine, ref = probe_all([prober, ref_prober], args.sends, args.timeout)
        row.receipt, row.rtt, row.reference = mine["receipt"], mine["rtt"], ref["receipt"]
        progress(f"{n} peers: connected in {row.connect_s:.1f} s, RSS "
                 f"{row.rss / 2**20:.1f} MB, send p50 {row.ms(row.receipt, 50):.2f} ms "
                 f"(reference {row.ms(row.reference, 50):.2f} ms)")
        rows.append(row)
    Procs.stop(hub)
    Procs.stop(ref_hub)
    return rows


def stored(args: argparse.Namespace, procs: Procs, root: Path) -> list[Row]:
    """A hub home per size, seeded while its hub is stopped; start-ups taken in turns; then all
    hubs run at once, each with the smallest peer count, and are probed together."""
    rows, homes = [], []
    for count in args.stored:
        home = root / f"stored-{count}"
        home.mkdir(mode=0o700)
        hub, _, _ = start_hub(procs, home, root)  # the hub creates its schema
        Procs.stop(hub)
        row = Row("stored", count)
        if count:
            progress(f"seeding {count} messages")
            row.seed_s = seed(home / "meshhub.db", count)
        rows.append(row)
        homes.append(home)
    for _ in range(args.starts):
        for row, home in zip(rows, homes, strict=True):
            hub, _, took = start_hub(procs, home, root)
            row.startup_s.append(took)
            Procs.stop(hub)
    hubs, probers = [], []
    for home in homes:
        hub, url, _ = start_hub(procs, home, root)
        hubs.append(hub)
        Gen(procs, url, "idle-", root).ask(f"ADD 0 {args.peers[0] - 2} {args.idle}",
                                                   args.timeout)
        probers.append(Gen(procs, url, "probe", root))
    for row, hub, found in zip(rows, hubs, probe_all(probers, args.sends, args.timeout),
                               strict=True):
        row.receipt, row.rtt = found["receipt"], found["rtt"]
        row.rss = float(psutil.Process(hub.pid).memory_info().rss)
        Procs.stop(hub)
        progress(f"{row.size} stored: seeded in {row.seed_s:.1f} s, start-ups "
                 f"{', '.join(f'{s:.2f}' for s in row.startup_s)} s, send p50 "
                 f"{row.ms(row.receipt, 50):.2f} ms")
    return rows


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_table(rows: list[Row]) -> None:
    head = (f"{'size':<22} {'send p50':>9} {'p99':>8} {'ref p50':>8} {'rtt p50':>8} {'p99':>8} "
            f"{'RSS MB':>7} {'connect s':>9} {'seed s':>7} {'start-up s':>10}")
    print("send: send call until receipt by the receiver; rtt: until the hub's result; ref: the\n"
          "reference hub (smallest peer count) probed in turns with it (ms)\n"
          f"{head}\n{'-' * len(head)}")
    for r in rows:
        size = f"{r.size:,} {'peers' if r.label == 'peers' else 'stored messages'}"
        ref = f"{r.ms(r.reference, 50):.2f}" if r.reference else "-"
        connect = f"{r.connect_s:.1f}" if r.label == "peers" else "-"
        seeded = f"{r.seed_s:.1f}" if r.label == "stored" else "-"
        startup = f"{statistics.median(r.startup_s):.2f}" if r.startup_s else "-"
        print(f"{size:<22} {r.ms(r.receipt, 50):>9.2f} {r.ms(r.receipt, 99):>8.2f} {ref:>8} "
              f"{r.ms(r.rtt, 50):>8.2f} {r.ms(r.rtt, 99):>8.2f} {r.rss / 2**20:>7.1f} "
              f"{connect:>9} {seeded:>7} {startup:>10}")


def short(count: int) -> str:
    return f"{count // 1_000_000}M" if count >= 1_000_000 and not count % 1_000_000 else \
        f"{count // 1000}k" if count >= 1000 and not count % 1000 else str(count)


def goal_rows(peers: list[Row], stores: list[Row], idle: str) -> list[Goal]:
    """The goal rows; the RSS row names how the idle peers connected (``--idle``), since
    send-only peers get no presence traffic and so cost the hub less than receiving ones. RSS
    that shrank as peers were added gives a negative figure, which fails (see ``Goal``)."""
    goals = []
    if len(peers) >= 2:
        small, large = peers[0], peers[-1]
        goals.append(Goal("scale", f"send p50, {large.size} peers vs {small.size}",
                          large.ms(large.receipt, 50), "ms", 1.5,
                          baseline=large.ms(large.reference, 50)))
    if len(stores) >= 2:
        small, large = stores[0], stores[-1]
        goals.append(Goal("scale", f"send p50, {short(large.size)} stored vs {small.size}",
                          large.ms(large.receipt, 50), "ms", 1.5,
                          baseline=small.ms(small.receipt, 50)))
    if len(peers) >= 2:
        per_peer = (peers[-1].rss - peers[0].rss) / (peers[-1].size - peers[0].size)
        goals.append(Goal("scale", f"RSS per idle peer ({idle})", per_peer / 1024, "KB", 100,
                          ratio_goal=False))
    if len(stores) >= 2:
        goals.append(Goal("scale", f"start-up, {short(stores[-1].size)} stored",
                          statistics.median(stores[-1].startup_s), "s", 2,
                          baseline=statistics.median(stores[0].startup_s), ratio_goal=False))
    return goals


def sizes(text: str) -> list[int]:
    return sorted(int(x.replace("_", "")) for x in text.split(",") if x)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=sizes, help="connected peers (default 10,100,1000,5000; "
                   "--quick 10,100,1000,2000); the probe pair counts among them")
    p.add_argument("--stored", type=sizes, help="stored messages (default 0,100000,1000000; "
                   "--quick 0,1000000, so that the start-up goal is measured as it is set)")
    p.add_argument("--sends", type=int, help="probe sends per size (default 300, --quick 100)")
    p.add_argument("--starts", type=int, help="hub starts per stored size (default 3, "
                   "--quick 2); the median is reported")
    p.add_argument("--idle", choices=["send-only", "receiving"], default="send-only",
                   help="idle peers connect send-only (the default: no presence events), or "
                   "receiving (each joining peer is announced to every receiving peer, so "
                   "filling N peers costs N*N/2 event frames: minutes at 2,000)")
    p.add_argument("--quick", action="store_true", help="a brief run (for bench/run-all)")
    p.add_argument("--timeout", type=float, default=600.0, help="limit for any one step (s)")
    p.add_argument("--summary-json", action="store_true",
                   help="also print the GOALS line bench/run-all reads")
    p.add_argument("--role", choices=["main", "peers"], default="main", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.peers = args.peers or ([10, 100, 1000, 2000] if args.quick else [10, 100, 1000, 5000])
    args.stored = args.stored if args.stored is not None else (
        [0, 1_000_000] if args.quick else [0, 100_000, 1_000_000])
    args.sends = args.sends or (100 if args.quick else 300)
    args.starts = args.starts or (2 if args.quick else 3)
    if min(args.peers) < 3:
        p.error("--peers: every size must be at least 3 (the probe pair and an idle peer)")
    return args


def main() -> None:
    args = parse_args()
    raise_nofile()
    if args.role == "peers":
        asyncio.run(peers_main(args))
        return
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="meshhub-scale-") as tmp:
        root = Path(tmp)
        try:
            peers = grow_peers(args, procs, root)
            stores = stored(args, procs, root)
        finally:
            procs.stop_all()
            with contextlib.suppress(Exception):
                for log in root.glob("*.err"):
                    if "Traceback" in (text := log.read_text()):
                        progress(f"{log.name}:\n{text[-2000:]}")
    print_table(peers + stores)
    report(goal_rows(peers, stores, args.idle), args.summary_json)


if __name__ == "__main__":
    main()
