"""A marker to read an inbox up to: what an action sent a peer is every message that peer gets
before a marker sent to it after the action (a hub delivers a peer's messages in the order it
stored them), so "nothing was sent" is proven without waiting for a silence."""

from __future__ import annotations

from typing import Any

from meshhub.client import MeshClient
from meshhub.ids import new_id

from .helpers import collect


async def before_marker(client: MeshClient, sender: MeshClient) -> list[dict[str, Any]]:
    """The messages ``client`` gets before a marker ``sender`` sends it now."""
    marker = f"marker {new_id()}"
    await sender.send(client.peer["key"], marker)
    out = []
    while True:
        (message,) = await collect(client, 1)
        if message["text"] == marker:
            return out
        out.append(message)
