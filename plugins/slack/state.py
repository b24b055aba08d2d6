"""The connector's own data, in record collections (``hub.records``):

- ``slack_events``: the Events API events taken, by Slack's ``event_id``: the id of each handled
  one (kept a day, so a retry Slack sends, ``X-Slack-Retry-Num``, is recognised even after a
  restart), and the whole body of one acked before it was handled (it outlasted Slack's ack
  window, or handling it failed), which the next start handles.
- ``slack_messages``: which Slack message (channel, ts) carries which mesh message, both ways,
  for threads, reactions, edits, button updates and not posting a part twice;
- ``slack_attempts``: a post whose answer was lost (a 5xx, the network): the next attempt looks
  the message up (by its metadata) instead of posting it again.

Hubs from before the record API kept these in tables of their own; :mod:`.sqlite_upgrade` moves
them here.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from meshhub.records import Collection, Conflict, Range

if TYPE_CHECKING:
    from meshhub.records import Records, Where

KEEP_EVENTS = 86400.0
PAGE = 10000  # the most documents one find returns

EVENTS = Collection("slack_events", indexes=("received_at", "handled_at", "attempts"))
MESSAGES = Collection("slack_messages", indexes=("mesh_id", "channel", "part", "outgoing"))
ATTEMPTS = Collection("slack_attempts", indexes=("mesh_id", "channel"))
COLLECTIONS = (EVENTS, MESSAGES, ATTEMPTS)


def message_key(channel: str, ts: str) -> str:
    return f"{channel}:{ts}"


def attempt_key(mesh_id: str, channel: str, part: int) -> str:
    return f"{mesh_id}:{channel}:{part}"


class SlackState:
    """The connector's collections, through the hub's record API."""

    def __init__(self, records: Records) -> None:
        self.records = records

    # -- the event inbox -------------------------------------------------------------------------
    async def keep_event(self, event_id: str, body: dict[str, Any], *,
                         failed: bool = False) -> None:
        """Keep an event acked before it is handled (it outlasted the ack window, or handling
        it ``failed``, which counts an attempt): it is handled again later. An event handled
        meanwhile stays handled."""
        now = time.time()

        def keep(current: dict[str, Any] | None) -> dict[str, Any] | None:
            if current is None:
                return {"body": body, "received_at": now, "handled_at": None,
                        "attempts": int(failed)}
            if current["handled_at"] is not None:
                return None
            return {**current, "body": body, "attempts": current["attempts"] + int(failed)}

        await self.records.modify(EVENTS.name, event_id, keep)

    async def event_handled(self, event_id: str) -> None:
        """Remember a handled event's id for a day (Slack retries for an hour at most); its
        body goes. Handled wins over a keep racing it, so the write is unconditional."""
        now = time.time()
        current = await self.records.get(EVENTS.name, event_id)
        value = {"body": None, "received_at": current.value["received_at"] if current else now,
                 "handled_at": now, "attempts": current.value["attempts"] if current else 0}
        await self.records.put(EVENTS.name, event_id, value, ttl=KEEP_EVENTS)

    async def known_events(self, limit: int) -> list[str]:
        """The ids of the newest events taken (handled or kept), newest first."""
        ids: list[str] = []
        cursor: str | None = None
        while len(ids) < limit:
            page = await self.records.find(EVENTS.name, order="-received_at",
                                           limit=min(limit - len(ids), PAGE), after=cursor)
            ids += [record.key for record in page.records]
            if page.cursor is None:
                break
            cursor = page.cursor
        return ids

    async def pending_events(self, max_attempts: int) -> list[dict[str, Any]]:
        """Events kept but not handled yet (a failure, or the hub stopped in between) that
        failed fewer than ``max_attempts`` times, oldest first."""
        kept = await self.records.all(
            EVENTS.name, {"handled_at": None, "attempts": Range(lt=max_attempts)},
            order="received_at")
        return [record.value["body"] for record in kept]

    # -- message map -----------------------------------------------------------------------------
    async def map_message(self, channel: str, ts: str, mesh_id: str, *, part: int = 0,
                          outgoing: bool) -> None:
        """Remember that Slack's (``channel``, ``ts``) carries part ``part`` of ``mesh_id``
        (``outgoing``: posted by the app); a post in flight for it is done. Both writes are
        queued together, so they share a commit. An event about the post that arrives while
        it is being mapped still finds it: a read waits for the writes made before it."""
        key = message_key(channel, ts)
        value = {"channel": channel, "ts": ts, "mesh_id": mesh_id, "part": part,
                 "outgoing": outgoing}
        await asyncio.gather(
            self.records.put(MESSAGES.name, key, value),
            self.records.delete(ATTEMPTS.name, attempt_key(mesh_id, channel, part)))

    async def mesh_id(self, channel: str, ts: str) -> str | None:
        """The mesh message a Slack message carries (either way), if any."""
        found = await self.records.get(MESSAGES.name, message_key(channel, ts))
        return str(found.value["mesh_id"]) if found else None

    async def ts_of(self, mesh_id: str, channel: str) -> str | None:
        """The Slack message in ``channel`` that begins ``mesh_id`` (posted or taken)."""
        page = await self.records.find(MESSAGES.name, {"mesh_id": mesh_id, "channel": channel},
                                       order="part", limit=1)
        return str(page.records[0].value["ts"]) if page.records else None

    async def posts_of(self, mesh_id: str) -> list[tuple[str, str]]:
        """Every (channel, ts) where the first part of ``mesh_id`` is on Slack."""
        found = await self.records.all(MESSAGES.name, {"mesh_id": mesh_id, "part": 0})
        return [(record.value["channel"], record.value["ts"]) for record in found]

    async def every_part(self, mesh_id: str) -> dict[str, dict[int, str]]:
        """Every channel the app posted ``mesh_id`` to: channel -> (part -> ts)."""
        found = await self.records.all(MESSAGES.name, {"mesh_id": mesh_id, "outgoing": True})
        posts: dict[str, dict[int, str]] = {}
        for record in found:
            posts.setdefault(record.value["channel"], {})[record.value["part"]] = \
                record.value["ts"]
        return posts

    async def parts(self, mesh_id: str, channel: str) -> tuple[dict[int, str], dict[int, float]]:
        """What is known of ``mesh_id`` in ``channel``: the parts already posted (part -> ts),
        and those whose post may have gone through though its answer was lost (part -> when the
        first try started)."""
        where: Where = {"mesh_id": mesh_id, "channel": channel}
        posted = await self.records.all(MESSAGES.name, {**where, "outgoing": True})
        unsure = await self.records.all(ATTEMPTS.name, where)
        return ({r.value["part"]: r.value["ts"] for r in posted},
                {r.value["part"]: float(r.value["started_at"]) for r in unsure})

    # -- posts whose answer may be lost ----------------------------------------------------------
    async def unsure(self, mesh_id: str, channel: str, part: int, since: float) -> None:
        """Remember that a post of ``part`` may be on Slack (a try's answer was lost); the
        next try looks for it first. Written only on such a failure, never per post."""
        value = {"mesh_id": mesh_id, "channel": channel, "part": part, "started_at": since}
        try:
            await self.records.create(ATTEMPTS.name, attempt_key(mesh_id, channel, part), value)
        except Conflict:
            pass
