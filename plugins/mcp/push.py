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

Changes of the shared state (``record`` events of the ``state`` collection) become channel
notifications through :class:`StateNotices`, filtered by the session's state setting (``all``,
``off`` or key prefixes, see :func:`state_setting`) and coalesced: a burst of changes is one
notification naming each key once, with its latest value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .tools import channel_content, channel_meta, state_content, unread_content

log = logging.getLogger(__name__)

SendChannel = Callable[[str, dict[str, str]], Awaitable[None]]
Ack = Callable[[list[str], str], Awaitable[None]]
Counts = Callable[[], Awaitable[dict[str, Any]]]
COUNT_DEBOUNCE = 0.05  # one count notification per burst of arrivals
# one state notification per burst of changes: longer than the count's, since a script
# setting several keys in a row is the common case and each notification costs the model
STATE_DEBOUNCE = 0.25
STATE_DEFAULT = "all"


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


def state_setting(text: str | None) -> tuple[str, ...]:
    """The key prefixes a session hears of: ``all`` is every key (``("",)``), ``off`` none
    (``()``), anything else comma-separated prefixes (``build/,deploy``)."""
    text = (text or STATE_DEFAULT).strip()
    if text.lower() == "all":
        return ("",)
    if text.lower() == "off":
        return ()
    prefixes = tuple(p.strip() for p in text.split(",") if p.strip())
    if not prefixes:
        raise ValueError("state must be all, off or comma-separated key prefixes, e.g. build/")
    return prefixes


class StateNotices:
    """Turns the hub's ``record`` events of the shared state into channel notifications for
    the keys the session follows; the changes of one burst go out as one notification."""

    def __init__(self, prefixes: tuple[str, ...], send_channel: SendChannel) -> None:
        self.prefixes = prefixes
        self._send = send_channel
        self._pending: dict[str, dict[str, Any]] = {}  # the latest change of each key
        self._task: asyncio.Task[None] | None = None

    def wanted(self, frame: dict[str, Any]) -> bool:
        if frame.get("event") != "record" or frame.get("collection") != "state":
            return False
        return str(frame.get("key", "")).split(" ")[-1].startswith(self.prefixes)

    def offer(self, frame: dict[str, Any]) -> None:
        """Take one hub event; a state change the session follows is sent after the burst."""
        if not self.wanted(frame):
            return
        key = str(frame["key"])
        self._pending.pop(key, None)  # a key changed again moves to the end, latest value
        self._pending[key] = frame
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._notify())

    async def _notify(self) -> None:
        while self._pending:
            await asyncio.sleep(STATE_DEBOUNCE)
            changes, self._pending = list(self._pending.values()), {}
            try:
                await self._send(*state_content(changes))
            except Exception as exc:  # the change stays readable with mesh_state_get
                log.warning("state notification failed: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
