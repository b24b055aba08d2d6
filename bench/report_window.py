#!/usr/bin/env python
"""The session report's count of a long window: how long the store takes to count a million
messages one peer can see, and what that does to the hub's event loop meanwhile.

    python bench/report_window.py [--messages 1000000] [--runs 3] [--quick] [--summary-json]

**The store.** A hub home is started once in-process (the hub makes its schema) and stopped;
then ``--messages`` messages (``--quick``: 100,000) go straight into its tables with
:func:`scale_seed.seed`: 3 peers and one conversation of the three over one day, so the viewer
(the first peer) sent or received nearly every one of them.

**What is timed**, on the real engine (a :class:`SQLiteStore` opened on the file):
``message_window`` over the whole day, as the viewer, ``--runs`` times. Meanwhile a ticker on
the same event loop wakes every millisecond and records the longest gap between two wakes:
the longest the loop was held, which every other peer of the hub would have waited. After each
count, the baseline: the same ticker on the same loop with nothing else running, for as long.

Goal: the median run's longest loop gap while counting <= 50 ms (absolute; the idle loop's
beside it). The count's own time (median) is printed for information.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from goals import Goal, report  # noqa: E402
from scale_seed import seed  # noqa: E402

from meshhub.builtins.sqlite_store import SQLiteStore  # noqa: E402
from meshhub.config import init_home, load_config  # noqa: E402
from meshhub.hub import Hub  # noqa: E402

VIEWER = "5e000000"  # the first seeded peer
GAP_GOAL_MS = 50.0


async def make_store(home: Path, messages: int) -> float:
    """A hub home with ``messages`` seeded messages; the seconds the seeding took."""
    init_home(home, "owner")
    hub = Hub(load_config(home))
    await hub.start()
    await hub.stop()
    return seed(home / "meshhub.db", messages, peers=3, conversations=1, days=1.0)


async def longest_gap(work: asyncio.Future[object] | None, seconds: float) -> float:
    """The longest gap (ms) between two wakes of a 1 ms ticker, until ``work`` is done (or for
    ``seconds`` when there is none)."""
    loop = asyncio.get_running_loop()
    worst, last = 0.0, loop.time()
    deadline = last + seconds
    while (work is not None and not work.done()) or (work is None and loop.time() < deadline):
        await asyncio.sleep(0.001)
        now = loop.time()
        worst, last = max(worst, now - last), now
    return worst * 1000


async def measure(db: Path, runs: int) -> dict[str, float]:
    """Count the window ``runs`` times, each followed by as long a time of the idle loop."""
    store = SQLiteStore(db)
    await store.open([])
    try:
        now = time.time()
        counted, gaps, idle, times = 0, [], [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            work = asyncio.ensure_future(store.message_window(VIEWER, now - 2 * 86400, now + 1))
            gaps.append(await longest_gap(work, 0))
            times.append(time.perf_counter() - t0)
            counted = sum(c.messages for c in work.result().counts)
            idle.append(await longest_gap(None, times[-1]))
    finally:
        await store.close()
    return {"counted": counted, "count_s": statistics.median(times),
            "gap_ms": statistics.median(gaps), "idle_ms": statistics.median(idle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 messages")
    parser.add_argument("--summary-json", action="store_true")
    args = parser.parse_args()
    count = 100_000 if args.quick else args.messages
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "hub"
        seeded = asyncio.run(make_store(home, count))
        print(f"seeded {count} messages in {seeded:.1f} s", flush=True)
        found = asyncio.run(measure(home / "meshhub.db", args.runs))
    print(f"counted {found['counted']:.0f} messages the viewer can see in "
          f"{found['count_s']:.3f} s (median of {args.runs})")
    report([Goal("report_window", f"loop gap counting {count:,} messages", found["gap_ms"],
                 "ms", GAP_GOAL_MS, baseline=found["idle_ms"], ratio_goal=False)],
           args.summary_json)


if __name__ == "__main__":
    main()
