#!/usr/bin/env python
"""Message search with a million stored messages: searching, reading history, and what the
index costs the send path.

    python bench/search.py [--messages 1000000] [--memories 100000] [--queries 300] [--quick]
        [--json] [--summary-json]

**The store.** A hub home is started once (the hub makes its schema) and stopped; then
``--messages`` messages (``--quick``: 100,000) go straight into its tables with
:func:`scale_seed.seed` (50 peers, 10 conversations, 30 days), their bodies 4 to 40 words
drawn from a 20,000-word vocabulary with a Zipf law, as words are in real text. Then the hub
is started on it and left alone: its background indexer indexes every stored message (what a
hub upgraded with old messages does); the time until all are indexed is printed, with the
file's size before and after.

**Reads**, on the real engine (a :class:`SQLiteStore` opened on the file once the hub is
stopped), as one seeded peer: ``search_messages`` for queries taken from the messages that
peer can see (one word, or two words of one message: frequent words come up as often as they
are frequent), each run once after a warm-up pass, then again with a filter no match passes
(``kind`` nonexistent, ``since`` an hour ahead: the worst case) or one sender; and
``history`` pages of its conversations (the newest page, or the page before a random
message), 50 messages each.

**Recall**: the memory ``recall`` action of an in-process hub (a fresh home, no server),
called as one of its peers the way every surface calls an action. ``--memories`` memories
(``--quick``: 10,000) are made by the ``remember`` action itself, 500 at once (so what is
stored is what the plugin writes): 30 to 50 words of the same vocabulary, 1 to 3 tags of 200
(a Zipf law too). Then ``--queries`` recalls of each kind, after a warm-up: two words of one
memory; one word of a memory with one of its tags; and one of its tags alone (the newest with
it).

**Sends**: acknowledged sends per second through a real ``hub start`` over WebSocket (the load
generator of ``bench/ws_throughput.py``: 50 peers, each awaiting every send) against the
indexed store and against an empty store, in turns (empty, stored, empty, stored); each
store's best run counts.

Goals (issue 16): search p50 and p99 <= 20 ms; history page p50 <= 5 ms; sends/s with the
stored messages >= 0.8 x with none (within 20 %); recall p50 <= 20 ms for each kind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from itertools import accumulate
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from goals import Goal, percentile, report  # noqa: E402
from scale_seed import seed  # noqa: E402
from ws_throughput import HOST, HUB_BIN, Procs, free_port, run_phase, wait_healthy  # noqa: E402

from meshhub.actions import ActionContext  # noqa: E402
from meshhub.builtins.sqlite_store import SQLiteStore  # noqa: E402
from meshhub.config import init_home, load_config  # noqa: E402
from meshhub.hub import Hub  # noqa: E402
from meshhub.store import MessageSearchResult  # noqa: E402

GOALS = {"search_ms": 20.0, "history_ms": 5.0, "send_ratio": 0.8, "recall_ms": 20.0}
VIEWER = "5e000000"  # the first seeded peer (see scale_seed.peer_rows)
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
TAGS = 200
REMEMBERED_AT_ONCE = 500
FILTERED = {"kind": "kind=nonexistent", "since": "since=<in an hour>", "sender": "a sender"}
RECALLS = {"two_words": "two words", "word_and_tag": "one word + tag", "tag": "tag only"}


def vocabulary(size: int = 20_000) -> tuple[list[str], list[float]]:
    """Made-up words (two to four syllables) and their Zipf cumulative weights."""
    rng = random.Random(16)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    return ordered, list(accumulate(1 / (rank + 1) ** 1.07 for rank in range(size)))


def body_maker() -> Any:
    words, weights = vocabulary()

    def body(i: int, rng: random.Random) -> str:
        return " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(4, 40)))

    return body


def start_hub(procs: Procs, home: Path, logdir: Path) -> tuple[Any, str]:
    """A ``hub start`` child on ``home`` (made if new) and a free port, without the
    per-member send rate (the hub's own speed is measured)."""
    home.mkdir(mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHHUB_")}
    env.update(MESHHUB_HOME=str(home), MESHHUB_SEND_RATE="0")
    url = f"http://{HOST}:{free_port()}"
    log = logdir / f"hub-{home.name}.log"
    with log.open("ab") as fh:
        hub = procs.start([HUB_BIN, "start", "--host", HOST, "--port", url.rsplit(":", 1)[1],
                           "--log-level", "warning"], env=env, stdout=fh,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_healthy(hub, url, 60, log)
    return hub, url


def db_size(home: Path) -> int:
    return sum(p.stat().st_size for p in home.glob("meshhub.db*"))


def indexed(db: Path) -> int:
    with sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM message_search_rows").fetchone()[0])


def build(procs: Procs, root: Path, count: int) -> dict[str, Any]:
    """The stored home: seeded, then indexed by its hub in the background."""
    home = root / "stored"
    hub, _ = start_hub(procs, home, root)  # the hub makes its schema
    Procs.stop(hub)
    progress(f"seeding {count} messages")
    seed_s = seed(home / "meshhub.db", count, body=body_maker())
    before = db_size(home)
    progress(f"seeded in {seed_s:.1f} s; indexing in the background")
    hub, _ = start_hub(procs, home, root)
    t0 = time.perf_counter()
    while (done := indexed(home / "meshhub.db")) < count:
        if time.perf_counter() - t0 > 3600:
            raise RuntimeError(f"only {done} of {count} indexed after an hour")
        time.sleep(0.25)
    index_s = time.perf_counter() - t0
    Procs.stop(hub)
    progress(f"indexed in {index_s:.1f} s")
    return {"home": home, "seed_s": seed_s, "index_s": index_s, "size_before": before,
            "size_after": db_size(home)}


def queries(db: Path, count: int) -> list[str]:
    """Words of the messages the viewer can see: one word, or two of one message."""
    rng = random.Random(7)
    with sqlite3.connect(db) as conn:
        bodies = [r[0] for r in conn.execute(
            "SELECT m.body FROM deliveries d JOIN messages m ON m.id = d.message_id "
            "WHERE d.recipient = ? AND d.state != 'dead'", (VIEWER,))]
    out = []
    for i in range(count):
        words = rng.choice(bodies).split()
        out.append(" ".join(rng.sample(words, 1 + i % 2)))
    return out


async def measure_reads(db: Path, probes: int) -> dict[str, Any]:
    """Search and history latencies on the real engine, as the viewer."""
    texts = queries(db, probes)
    with sqlite3.connect(db) as conn:
        convs = [r[0] for r in conn.execute(
            "SELECT DISTINCT m.conversation FROM deliveries d JOIN messages m ON "
            "m.id = d.message_id WHERE d.recipient = ? AND m.conversation != 'dm'", (VIEWER,))]
        ids = [r[0] for r in conn.execute("SELECT id FROM messages ORDER BY random() LIMIT ?",
                                          (probes,))]
        senders = [r[0] for r in conn.execute("SELECT DISTINCT sender FROM messages m JOIN "
                                              "deliveries d ON d.message_id = m.id WHERE "
                                              "d.recipient = ?", (VIEWER,))]
    store = SQLiteStore(db)
    await store.open([])
    try:
        hits: list[int] = []
        for text in texts[:20]:  # warm the cache as a running hub would have it
            await search(store, text)
        searches = []
        for text in texts:
            t0 = time.perf_counter()
            hits.append(len((await search(store, text)).hits))
            searches.append((time.perf_counter() - t0) * 1000)
        filtered = {kind: await timed_searches(store, texts, kind, senders)
                    for kind in FILTERED}
        pages = []
        for i in range(probes):
            before = ids[i] if i % 2 else None
            t0 = time.perf_counter()
            await store.history(VIEWER, conversation=convs[i % len(convs)], partner=None,
                                before=before, after=None, top_level_only=True, limit=51)
            pages.append((time.perf_counter() - t0) * 1000)
    finally:
        await store.close()
    return {"search_ms": searches, "history_ms": pages, "hits": hits, "filtered": filtered}


async def search(store: SQLiteStore, text: str, **filters: Any) -> MessageSearchResult:
    return await store.search_messages(VIEWER, text, **{
        "conversation": None, "partner": None, "sender": None, "since": None, "until": None,
        "kinds": None, "limit": 20, **filters})


def filters(kind: str, i: int, senders: list[str]) -> dict[str, Any]:
    """The filter of the ``i``-th search of a kind: one no match passes (``kind``, ``since``:
    the worst case, every match the cap lets through is examined) or one sender."""
    if kind == "kind":
        return {"kinds": ["nonexistent"]}
    if kind == "since":
        return {"since": time.time() + 3600}
    return {"sender": senders[i % len(senders)]}


async def timed_searches(store: SQLiteStore, texts: list[str], kind: str,
                         senders: list[str]) -> list[float]:
    """The searches again, each with a filter of this kind; ms each."""
    out = []
    for i, text in enumerate(texts):
        t0 = time.perf_counter()
        await search(store, text, **filters(kind, i, senders))
        out.append((time.perf_counter() - t0) * 1000)
    return out


def memory_maker() -> Any:
    """``memory(rng)``: the ``remember`` parameters of one made-up memory."""
    words, weights = vocabulary()
    tags = words[-TAGS:]  # words from the far end of the Zipf law, as tags
    tag_weights = list(accumulate(1 / (rank + 1) for rank in range(TAGS)))

    def memory(rng: random.Random) -> dict[str, Any]:
        picked = rng.choices(tags, cum_weights=tag_weights, k=rng.randint(1, 3))
        return {"content": " ".join(rng.choices(words, cum_weights=weights,
                                                k=rng.randint(30, 50))),
                "tags": list(dict.fromkeys(picked))}

    return memory


def recall_params(kind: str, memory: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A recall of ``kind`` (see :data:`RECALLS`) made from one stored memory."""
    words = memory["content"].split()
    if kind == "two_words":
        return {"query": " ".join(rng.sample(words, 2))}
    if kind == "word_and_tag":
        return {"query": rng.choice(words), "tags": [rng.choice(memory["tags"])]}
    return {"tags": [rng.choice(memory["tags"])]}


async def measure_recall(home: Path, count: int, probes: int) -> dict[str, Any]:
    """Recall latencies per kind, through the action on an in-process hub holding ``count``
    memories; with the seconds the ``remember`` calls took and how many each recall found."""
    init_home(home, "owner")
    hub = Hub(load_config(home))
    await hub.start()
    try:
        peer, _ = await hub.directory.register(identity="bench:recall", name="recaller",
                                               kind="agent", connector="cli")
        ctx = ActionContext(hub=hub, peer=peer, surface="cli")
        rng = random.Random(23)
        memory = memory_maker()
        made: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        while len(made) < count:
            burst = [memory(rng) for _ in range(min(REMEMBERED_AT_ONCE, count - len(made)))]
            await asyncio.gather(*(hub.actions.call(ctx, "remember", m, counted=False)
                                   for m in burst))
            made += burst
        remember_s = time.perf_counter() - t0
        out: dict[str, Any] = {"memories": count, "remember_s": remember_s}
        for kind in RECALLS:
            calls = [recall_params(kind, rng.choice(made), rng) for _ in range(probes + 20)]
            for params in calls[:20]:  # warm the cache as a running hub would have it
                await hub.actions.call(ctx, "recall", params, counted=False)
            times, found = [], []
            for params in calls[20:]:
                t0 = time.perf_counter()
                found.append(len(await hub.actions.call(ctx, "recall", params, counted=False)))
                times.append((time.perf_counter() - t0) * 1000)
            out[kind] = {"ms": times, "found": found}
        return out
    finally:
        await hub.stop()


def sends(procs: Procs, root: Path, stored: Path, quick: bool) -> dict[str, list[float]]:
    """Acked sends/s against an empty home and the stored one, in turns."""
    args = SimpleNamespace(peers=50, size=200, window=1, client_procs=1)
    per_peer = 200 if quick else 600
    rates: dict[str, list[float]] = {"empty": [], "stored": []}
    for turn in range(2):
        for label, home in (("empty", root / f"empty{turn}"), ("stored", stored)):
            hub, url = start_hub(procs, home, root)
            try:
                phase = run_phase(procs, args, url, hub.pid, f"{label[0]}{turn}x", per_peer,
                                  None, time.time() + 600, root)
            finally:
                Procs.stop(hub)
            rates[label].append(phase["msgs_per_s"])
            progress(f"  {label}: {phase['msgs_per_s']:.0f} sends/s "
                     f"({phase['delivered_pct']:.1f} % delivered)")
    return rates


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def size_label(count: int) -> str:
    return f"{count // 1000}k" if count < 1_000_000 else f"{count / 1e6:g}M"


def recall_summary(recall: dict[str, Any]) -> dict[str, Any]:
    """Per kind of recall: p50/p90/p99/max in ms and the median number of memories found."""
    out: dict[str, Any] = {"memories": recall["memories"], "remember_s": recall["remember_s"]}
    for kind in RECALLS:
        times, found = recall[kind]["ms"], recall[kind]["found"]
        out[kind] = {"ms": {q: percentile(times, q) for q in (50, 90, 99, 100)},
                     "found_median": percentile(found, 50), "found_none": found.count(0)}
    return out


def print_recall(summary: dict[str, Any]) -> None:
    print(f"recall, {summary['memories']} memories (remembered in "
          f"{summary['remember_s']:.1f} s):")
    for kind, label in RECALLS.items():
        row = summary[kind]
        print(f"  {label:>14}: " + "  ".join(f"p{q} {v:.2f} ms" for q, v in row["ms"].items())
              + f"  (found: median {row['found_median']}, none {row['found_none']})")


def goal_rows(count: int, reads: dict[str, Any], rates: dict[str, list[float]]) -> list[Goal]:
    size = size_label(count)
    s, h, recall = reads["search_ms"], reads["history_ms"], reads["recall"]
    memories = size_label(recall["memories"])
    return [
        Goal("search", f"search p50, {size} stored", percentile(s, 50), "ms",
             GOALS["search_ms"], ratio_goal=False),
        Goal("search", f"search p99, {size} stored", percentile(s, 99), "ms",
             GOALS["search_ms"], ratio_goal=False),
        Goal("search", f"history page p50, {size} stored", percentile(h, 50), "ms",
             GOALS["history_ms"], ratio_goal=False),
        Goal("search", f"sends/s, {size} stored vs none", max(rates["stored"]), "msgs/s",
             GOALS["send_ratio"], baseline=max(rates["empty"]), compare=">="),
    ] + [Goal("search", f"search p99, {label}, {size} stored",
              percentile(reads["filtered"][kind], 99), "ms", GOALS["search_ms"],
              ratio_goal=False) for kind, label in FILTERED.items()
         ] + [Goal("search", f"recall p50, {label}, {memories} memories",
              percentile(recall[kind]["ms"], 50), "ms", GOALS["recall_ms"], ratio_goal=False)
         for kind, label in RECALLS.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--memories", type=int, default=100_000, help="memories recalled from")
    p.add_argument("--queries", type=int, default=300,
                   help="searches, history pages and recalls of each kind")
    p.add_argument("--quick", action="store_true",
                   help="100,000 messages, 10,000 memories, 100 queries")
    p.add_argument("--json", action="store_true")
    p.add_argument("--summary-json", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.messages, args.memories, args.queries = 100_000, 10_000, 100
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="meshhub-bench-search-") as tmp:
        root = Path(tmp)
        try:
            built = build(procs, root, args.messages)
            reads = asyncio.run(measure_reads(built["home"] / "meshhub.db", args.queries))
            progress(f"remembering {args.memories} memories")
            reads["recall"] = asyncio.run(measure_recall(root / "memories", args.memories,
                                                         args.queries))
            rates = sends(procs, root, built["home"], args.quick)
        finally:
            procs.stop_all()
    s, h, hits = reads["search_ms"], reads["history_ms"], reads["hits"]
    out = {
        "messages": args.messages, "seed_s": built["seed_s"], "index_s": built["index_s"],
        "db_mb_before_index": built["size_before"] / 2**20,
        "db_mb_after_index": built["size_after"] / 2**20,
        "search_ms": {q: percentile(s, q) for q in (50, 90, 99, 100)},
        "history_ms": {q: percentile(h, q) for q in (50, 90, 99, 100)},
        "filtered_ms": {label: {q: percentile(reads["filtered"][kind], q)
                                for q in (50, 90, 99, 100)} for kind, label in FILTERED.items()},
        "hits_per_search": {"median": percentile(hits, 50), "none": hits.count(0)},
        "sends_per_s": rates, "recall": recall_summary(reads["recall"]),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{args.messages} messages: seeded in {out['seed_s']:.1f} s, indexed in the "
              f"background in {out['index_s']:.1f} s; file {out['db_mb_before_index']:.0f} MB "
              f"-> {out['db_mb_after_index']:.0f} MB")
        for what in ("search_ms", "history_ms"):
            print(f"{what[:-3]:>8}: " + "  ".join(f"p{q} {v:.2f} ms"
                                                    for q, v in out[what].items()))
        for label, row in out["filtered_ms"].items():
            print(f"search, {label}: " + "  ".join(f"p{q} {v:.2f} ms" for q, v in row.items()))
        print(f"hits per search: median {out['hits_per_search']['median']}, "
              f"{out['hits_per_search']['none']} of {len(hits)} found nothing")
        print("sends/s: " + "  ".join(f"{k} {', '.join(f'{v:.0f}' for v in vs)}"
                                      for k, vs in rates.items()))
        print_recall(out["recall"])
    report(goal_rows(args.messages, reads, rates), args.summary_json)


if __name__ == "__main__":
    main()
