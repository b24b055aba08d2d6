"""The owner's view of the audit log (:mod:`meshhub.audit`): the ``audit`` (tail) and
``audit_verify`` actions, behind ``hub audit tail`` and ``hub audit verify``.

Both are the hub's owner's only: the log names who joined, who was removed and which tokens
were made, which is more than any other member needs to know.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import InvalidRequest, NotFound

from .search_actions import parse_when

MAX_TAIL = 1000
MAX_EVENT = 64
MAX_KEY = 64  # a member's key in hex; a name is shorter
KEY_RE = re.compile(r"[0-9A-Fa-f]{8}|[0-9A-Fa-f]{64}")  # a peer's key or a member's


def _actor_key(ctx: ActionContext, actor: str) -> str:
    """The key an audit row names for ``actor``: a peer's or a member's name, or a key (one
    that has left the mesh too: its rows stay)."""
    text = actor.strip().lstrip("@")
    directory = ctx.hub.directory
    peer = directory.find(text)
    if peer is not None:
        return peer.key
    member = directory.member_named(text)
    if member is not None:
        return member.key
    if KEY_RE.fullmatch(text):
        return text.lower()
    raise NotFound(f"no peer or member named {actor!r}; closest known: "
                   f"{', '.join(directory.closest_names(text)) or 'none'}")


@action(admin=True, read_only=True)
async def audit(
    ctx: ActionContext,
    limit: Annotated[int, f"the newest this many rows (1-{MAX_TAIL}), oldest first"] = 50,
    event: Annotated[str | None, "only this event (member_joined, token_created...)",
                     Field(max_length=MAX_EVENT)] = None,
    actor: Annotated[str | None, "only what this peer or member did (a name or a key)",
                     Field(max_length=MAX_KEY)] = None,
    since: Annotated[str | float | None, "only rows from then on: epoch seconds, a duration "
                     "ago (2h, 3d) or an ISO 8601 time"] = None,
    after_seq: Annotated[int | None, "instead of the newest: the first rows after this row "
                         "number (0: from the start), to read the whole log page by page",
                         Field(ge=0)] = None,
) -> list[dict[str, Any]]:
    """The newest rows of the hub's audit log (or, with ``after_seq``, the rows after one):
    who did what (event, actor, subject, small details), never what anyone wrote. The hub's
    owner only."""
    if not 1 <= limit <= MAX_TAIL:
        raise InvalidRequest(f"limit must be between 1 and {MAX_TAIL}")
    return await ctx.hub.audit.entries(
        since=parse_when(since, time.time()) if since is not None else None, event=event,
        actor=_actor_key(ctx, actor) if actor is not None else None, after_seq=after_seq,
        limit=limit)


@action(admin=True, read_only=True)
async def audit_verify(ctx: ActionContext) -> dict[str, Any]:
    """Check the whole audit log's hash chain: ``ok``, how many rows hold (``checked``), and
    else the first row that does not (``seq``) and why (``reason``). The hub's owner only."""
    return (await ctx.hub.audit.verify()).public()


ALL: list[Action] = [audit, audit_verify]


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)
