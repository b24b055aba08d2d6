"""Full-text search over the messages a peer may see: the ``search`` action.

What a peer may see is what ``history`` shows it (messages it sent, or has a live delivery row
for), so a whisper to others is never found. The query is a peer's text: only its words count,
every one of them required (stemmed: "deploying" finds "deployed"), never search syntax.

A hit's ``snippet`` is the matched part of the body as plain text, with each matched word
between ``[`` and ``]``. A ``[``, ``]`` or ``\\`` the sender wrote is escaped with a
backslash, so those two marks are the only markup a reader has to interpret (the web page
escapes the rest as text); control and bidi characters are removed, and the snippet is one
line.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import InvalidRequest, NotFound
from meshhub.sanitize import one_line, shown_snippet

MAX_QUERY = 500
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
INCOMPLETE = ("the search index is still being built (a backlog of stored messages): the "
              "newest messages may be missing from these hits; search again in a minute")
CUT_SHORT = ("the words match too many messages to check the time range on every one: older "
             "hits may be missing; narrow the search (more words, a conversation, a sender)")


LAST_MOMENT = 253402300799.0  # 9999-12-31T23:59:59Z, the last moment a date shows


def parse_when(text: str | float, now: float, *, ahead: bool = False) -> float:
    """A point in time as epoch seconds, from epoch seconds (``1733390000``), a duration
    meaning that long ago (``90s``, ``15m``, ``2h``, ``3d``, ``1w``; with ``ahead``: that long
    from now, a deadline) or an ISO 8601 time
    (``2026-12-05``, ``2026-12-05T10:00:00Z``; without a zone it is UTC). A time that is not
    a finite number, or not between 1970 and the year 9999, is refused: nothing downstream
    (a date shown in a report, a deadline) has to guard against it."""
    if isinstance(text, (int, float)):
        return _in_range(float(text), text)
    value = text.strip().lower()
    try:
        return _in_range(float(value), text)
    except ValueError:
        pass
    duration = _DURATION.fullmatch(value)
    if duration:
        span = float(duration.group(1)) * _UNITS[duration.group(2)]
        return _in_range(now + span if ahead else now - span, text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"cannot read {text!r} as a time: give epoch seconds, a duration ago like 2h or "
            "3d, or an ISO 8601 time like 2026-12-05T10:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _in_range(moment.timestamp(), text)


def _in_range(moment: float, text: str | float) -> float:
    if not math.isfinite(moment):
        raise InvalidRequest(f"cannot read {text!r} as a time: it is not a finite number")
    if not 0 <= moment <= LAST_MOMENT:
        raise InvalidRequest(f"{text!r} is not a time between 1970 and the year 9999")
    return moment


def public_snippet(snippet: str) -> str:
    """The engine's snippet (matched words between :data:`MARK_START` and :data:`MARK_END`)
    as shown to a peer: one safe line, the peer's brackets escaped, the marks ``[`` and ``]``."""
    return one_line(shown_snippet(snippet, ("[", "]")), limit=10_000)


@action(read_only=True)
async def search(
    ctx: ActionContext,
    query: Annotated[str, "the words to find (all of them; stemmed, no operators)",
                     Field(min_length=1, max_length=MAX_QUERY)],
    conversation: Annotated[str | None, "only in this #conversation or @group; dm:NAME for "
                            "the direct messages with one peer"] = None,
    sender: Annotated[str | None, "only messages this peer (name or key) sent"] = None,
    since: Annotated[str | float | None, "only messages from then on: epoch seconds, a "
                     "duration ago (2h, 3d) or ISO 8601"] = None,
    until: Annotated[str | float | None, "only messages before then (same forms)"] = None,
    kind: Annotated[str | None, "only messages of this kind (text, approval...)"] = None,
    limit: Annotated[int, "at most this many hits (1-100)"] = 20,
) -> dict[str, Any]:
    """Search the messages you sent or received for words, best match first.

    Each hit: ``message`` (the usual message shape), ``score`` (higher is better) and
    ``snippet`` (the matching part, matched words between [ and ]; a bracket the sender
    wrote is escaped with a backslash). ``complete`` is false (with a ``note``) while the
    hub is still indexing a backlog of stored messages, or when the words match so many
    messages that the time range could not be checked on all of them: then some may be
    missing."""
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100")
    conv, partner = ctx.hub.directory.conversation_filter(conversation)
    sender_key = None
    if sender is not None:
        peer = ctx.hub.directory.find(sender)
        if peer is None:
            raise NotFound(f"no peer {sender!r}; known: "
                           f"{', '.join(ctx.hub.directory.closest_names(sender))}")
        sender_key = peer.key
    now = time.time()
    found = await ctx.hub.store.search_messages(
        ctx.peer.key, query, conversation=conv, partner=partner, sender=sender_key,
        since=parse_when(since, now) if since is not None else None,
        until=parse_when(until, now) if until is not None else None,
        kinds=[kind] if kind is not None else None, limit=limit)
    out: dict[str, Any] = {"query": query, "complete": found.complete, "hits": [
        {"message": ctx.hub.message_view(hit.message), "score": hit.score,
         "snippet": public_snippet(hit.snippet)} for hit in found.hits]}
    if found.cut_short:
        out["complete"] = False
        out["note"] = CUT_SHORT
    elif not found.complete:
        out["note"] = INCOMPLETE
    return out


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    register(search)
