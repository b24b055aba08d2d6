"""Turning arriving messages into channel notifications, per session mode.

* ``push`` (default): each message becomes one ``notifications/claude/channel``; once the
  notification is written the delivery is acked as ``delivered``. It is not marked ``read``:
  a Claude Code started without the channel flag drops notifications silently, so the message
  must stay unread for ``mesh_inbox``, ``mesh_check`` and the PostToolUse hook to show it.
* ``inbox``: arrivals are counted; one notification "3 unread from ann, bob" is written per
  burst, then the deliveries are acked as ``delivered``: the messages stay unread for
  ``mesh_inbox``.
* ``off``: nothing is pushed; the session does not even receive (messages stay queued until
  ``mesh_inbox`` reads them).

Both surfaces (the stdio process and the in-hub ``/mcp`` endpoint) use :class:`Pusher`; only
``send_channel``, ``ack`` and ``counts`` differ.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .tools import channel_content, channel_meta, unread_content

log = logging.getLogger(__name__)

SendChannel = Callable[[str, dict[str, str]], Awaitable[None]]
Ack = Callable[[list[str], str], Awaitable[None]]
Counts = Callable[[], Awaitable[dict[str, Any]]]
COUNT_DEBOUNCE = 0.05  # one count notification per burst of arrivals


class Pusher:
    def __init__(self, mode: str, send_channel: SendChannel, ack: Ack, counts: Counts) -> None:
        self.mode = mode
        self._send = send_channel
        self._ack = ack
        self._counts = counts
        self._uncounted: list[str] = []
        self._count_task: asyncio.Task[None] | None = None

    async def deliver(self, message: dict[str, Any]) -> None:
        """Write ``message`` to the session (by mode), then ack it. Raises ``ConnectionError``
        when the session is gone (the delivery stays leased and is pushed again later)."""
        if self.mode == "push":
            await self._send(channel_content(message), channel_meta(message))
            await self._ack([message["id"]], "delivered")
        elif self.mode == "inbox":
            self._uncounted.append(message["id"])
            if self._count_task is None or self._count_task.done():
                self._count_task = asyncio.create_task(self._notify_count())

    async def _notify_count(self) -> None:
        # arrivals during a notification are picked up by the next round of this loop
        while self._uncounted:
            await asyncio.sleep(COUNT_DEBOUNCE)
            ids, self._uncounted = self._uncounted, []
            try:
                text, meta = unread_content(await self._counts())
                await self._send(text, meta)
                await self._ack(ids, "delivered")
            except Exception as exc:  # the lease runs out and the hub pushes them again
                log.warning("unread count notification failed: %s", exc)

    async def close(self) -> None:
        if self._count_task is not None:
            self._count_task.cancel()
