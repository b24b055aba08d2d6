"""The session report's action (``report``, behind ``hub report --since 2h``) and the core's
own sections of it: who took part and how many messages went where.

Both sections come from one count of the window by the store
(:meth:`meshhub.store.Store.message_window`): the messages the viewer sent or has a live
delivery of, so a whisper to others is never counted, nor the name of who whispered it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import InvalidRequest
from meshhub.report import ReportSection, build_report, report_text
from meshhub.store import MessageWindow

from .coordination import peer_name
from .search_actions import parse_when

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

LABELS = {"dm": "direct messages", "multi": "messages to several", "*": "broadcasts"}


@action(read_only=True)
async def report(
    ctx: ActionContext,
    since: Annotated[str | float, "the window's start: a duration ago (2h, 3d), epoch "
                     "seconds or an ISO 8601 time"],
    until: Annotated[str | float | None, "its end (same forms; default: now)"] = None,
) -> dict[str, Any]:
    """A Markdown summary of ``[since, until)`` as you may see it: participants, messages per
    conversation, and every feature's part (tasks, decisions, approvals, files...). Anyone
    may ask for their own."""
    now = time.time()
    start = parse_when(since, now)
    end = parse_when(until, now) if until is not None else now
    if start >= end:
        raise InvalidRequest("since must be before until")
    markdown = await build_report(ctx.hub, ctx.peer, start, end)
    return {"markdown": markdown, "since": start, "until": end}


def _name(hub: Hub, key: str) -> str:
    return report_text(peer_name(hub, key), 60)


def _label(conversation: str) -> str:
    return LABELS.get(conversation) or report_text(conversation, 100)


def _plural(n: int, word: str, words: str = "") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def participants(hub: Hub, window: MessageWindow) -> ReportSection:
    """Who sent the messages of the window, most first."""
    sent: Counter[str] = Counter()
    for count in window.counts:
        sent[count.sender] += count.messages
    lines = [f"- {_name(hub, key)}: {_plural(n, 'message')}"
             for key, n in sorted(sent.items(), key=lambda kv: (-kv[1], _name(hub, kv[0])))]
    return ReportSection("Participants", lines, order=10)


def messages(window: MessageWindow) -> ReportSection:
    """Messages per conversation, most first, with the replies and threads among them."""
    total: Counter[str] = Counter()
    replies: Counter[str] = Counter()
    for count in window.counts:
        total[count.conversation] += count.messages
        replies[count.conversation] += count.replies
    lines = []
    for conversation, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])):
        line = f"- {_label(conversation)}: {_plural(n, 'message')}"
        if replies[conversation]:
            threads = window.threads.get(conversation, 0)
            line += (f" ({_plural(replies[conversation], 'reply', 'replies')} in "
                     f"{_plural(threads, 'thread')})")
        lines.append(line)
    return ReportSection("Messages", lines, order=20)


@hookimpl
async def meshhub_report_sections(hub: Hub, viewer: Peer, since: float,
                                  until: float) -> list[ReportSection]:
    window = await hub.store.message_window(viewer.key, since, until)
    return [participants(hub, window), messages(window)]


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    register(report)
