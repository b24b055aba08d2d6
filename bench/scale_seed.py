"""Fill a stopped hub's database with the messages months of traffic would leave behind.

    python bench/scale_seed.py MESHHUB_DB --messages 1000000

``bench/scale.py`` calls :func:`seed` to measure the hub with 100,000 and 1,000,000 stored
messages. Going through the hub's API would take far too long for a million messages, so the
rows go straight into the store's own tables (the schema the hub created when it first started,
so the seed cannot drift from it) with ``executemany`` in one transaction.

What the rows look like: ``--peers`` peers (default 50) and ``--conversations`` conversations
(default 10, 3-8 members each); 70% of the messages are direct messages, the rest go to a
conversation and have a delivery row for every other member. Their times spread evenly over
``--days`` (default 30), so most are older than the hub's 7-day TTL. Deliveries are mostly
``read``, some ``delivered``; a few are ``dead`` (old) or still ``queued`` (recent): the states
real traffic leaves, so the hub's start-up and sweeps meet the same mix.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

NODE = "5eed00"  # the random part of a MonotonicIds id: marks seeded messages
DAY = 86400.0
TTL = 7 * DAY


def message_id(created_at: float, seq: int) -> str:
    """An id in the hub's own layout (see ``meshhub.ids``), so ids sort in time order."""
    return f"{int(created_at * 1000):012x}{seq % 0xFFFFFF:06x}{NODE}"


def peer_rows(count: int, now: float) -> list[tuple[object, ...]]:
    return [
        (f"5e{i:06x}", f"seed{i:04d}", f"seed{i:04d}", "agent", "bench", "{}", "offline",
         f"5eed-identity-{i}", now - 40 * DAY, now - DAY)
        for i in range(count)
    ]


def conversation_members(peers: list[str], count: int, rng: random.Random) -> dict[str, list[str]]:
    return {f"seed-topic-{c}": rng.sample(peers, rng.randint(3, min(8, len(peers))))
            for c in range(count)}


def delivery_state(age: float, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.90:
        return "read"
    if roll < 0.98:
        return "delivered"
    return "dead" if age > TTL else "queued"


Body = Callable[[int, random.Random], str]


def lorem(i: int, rng: random.Random) -> str:
    return f"seeded message {i}: " + "lorem ipsum " * rng.randint(2, 15)


def rows(count: int, peers: list[str], convs: dict[str, list[str]], now: float, days: float,
         rng: random.Random, body: Body = lorem,
         ) -> Iterator[tuple[tuple[object, ...], list[tuple[object, ...]]]]:
    """One message row and its delivery rows at a time, oldest first; ``body(i, rng)`` writes
    the i-th message's text."""
    names = list(convs)
    start = now - days * DAY
    step = days * DAY / max(1, count)
    for i in range(count):
        created = start + i * step
        sender = rng.choice(peers)
        if rng.random() < 0.7:
            recipient = rng.choice(peers)
            while recipient == sender:
                recipient = rng.choice(peers)
            recipients, conversation, target = [recipient], "dm", recipient
        else:
            name = rng.choice(names)
            recipients = [p for p in convs[name] if p != sender]
            conversation = target = "#" + name
        mid = message_id(created, i)
        message = (mid, sender, target, conversation, body(i, rng), json.dumps(recipients),
                   created)
        age = now - created
        deliveries = []
        for r in recipients:
            state = delivery_state(age, rng)
            deliveries.append((mid, r, state, 1 if state != "queued" else 0,
                               "undelivered after the TTL" if state == "dead" else None,
                               created + 1.0))
        yield message, deliveries


def insert(conn: sqlite3.Connection, messages: list[tuple[object, ...]],
           deliveries: list[tuple[object, ...]]) -> None:
    """Insert one batch of messages and their deliveries, then empty both lists."""
    conn.executemany(
        "INSERT INTO messages (id, sender, target, conversation, body, recipients_json, "
        "created_at) VALUES (?,?,?,?,?,?,?)", messages)
    conn.executemany(
        "INSERT INTO deliveries (message_id, recipient, state, attempts, reason, updated_at) "
        "VALUES (?,?,?,?,?,?)", deliveries)
    messages.clear()
    deliveries.clear()


def seed(db: Path, messages: int, *, peers: int = 50, conversations: int = 10,
         days: float = 30.0, rng_seed: int = 9, body: Body = lorem) -> float:
    """Add ``messages`` messages (and their peers, conversations and deliveries) to the hub
    database ``db``; the hub must be stopped. Returns the seconds it took. ``body`` writes
    the texts (``bench/search.py`` gives them words to find)."""
    t0 = time.perf_counter()
    rng = random.Random(rng_seed)
    now = time.time()
    conn = sqlite3.connect(str(db), isolation_level=None)
    try:
        # the hub keeps WAL; one huge transaction is much faster without it (the hub sets WAL
        # again when it opens the file)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        conn.execute("BEGIN")
        people = peer_rows(peers, now)
        conn.executemany(
            "INSERT INTO peers (key, name, name_lower, kind, connector, groups_json, status, "
            "identity, created_at, last_seen) VALUES (?,?,?,?,?,?,?,?,?,?)", people)
        keys = [str(p[0]) for p in people]
        convs = conversation_members(keys, conversations, rng)
        conn.executemany(
            "INSERT INTO conversations (name, created_by, created_at) VALUES (?,?,?)",
            [(name, members[0], now - 40 * DAY) for name, members in convs.items()])
        conn.executemany(
            "INSERT INTO conversation_members (conversation, peer) VALUES (?,?)",
            [(name, p) for name, members in convs.items() for p in members])
        batch: list[tuple[object, ...]] = []
        deliveries: list[tuple[object, ...]] = []
        for message, its_deliveries in rows(messages, keys, convs, now, days, rng, body):
            batch.append(message)
            deliveries.extend(its_deliveries)
            if len(batch) >= 20_000:
                insert(conn, batch, deliveries)
        insert(conn, batch, deliveries)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    # on disk before anyone times the hub: else the kernel writes the file back while the hub
    # starts, and the hub's first fsync waits for all of it
    fd = os.open(db, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", type=Path, help="the hub's meshhub.db (the hub stopped)")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--days", type=float, default=30.0)
    args = parser.parse_args()
    took = seed(args.db, args.messages, peers=args.peers, conversations=args.conversations,
                days=args.days)
    print(f"seeded {args.messages} messages in {took:.1f} s")


if __name__ == "__main__":
    main()
