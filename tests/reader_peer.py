"""A peer in a process of its own, for tests that stop it (SIGSTOP) to make a reader that takes
nothing from its socket: ``python -m tests.reader_peer HUB_URL HOME NAME``.

It prints ``ready`` once welcomed, then one line per message frame it gets (``id``, duplicates
included: it does not dedupe), acking each; ``lost`` when its connection drops (it reconnects).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from meshhub.client import MeshClient
from meshhub.config import load_signing_key


async def main(url: str, home: str, name: str) -> None:
    client = MeshClient(url, load_signing_key(Path(home)), name=name, kind="agent",
                        reconnect=True, dedupe=False)
    client.on_link = lambda up: print("ready" if up else "lost", flush=True)
    await client.connect()
    async for message in client.messages(auto_ack=True):
        print(message["id"], flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
