"""The approvals' part of the session report: how many requests the viewer asked or was asked
in the window, and how they stand. Never a question's text: the counts say what happened,
``approvals`` shows the requests themselves."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from meshhub import hookimpl
from meshhub.ids import id_floor
from meshhub.records import Range
from meshhub.report import ReportSection

from .approval_book import APPROVALS, ApprovalBook

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

MAX_READ = 5000  # approvals read for one report; a window with more says "at least"
STATES = ("pending", "answered", "closed", "expired")


def _line(what: str, states: Counter[str], cut: bool) -> str:
    total = sum(states.values())
    parts = ", ".join(f"{states[s]} {s}" for s in STATES if states[s])
    return f"- {'at least ' if cut else ''}{total} {what}: {parts}"


@hookimpl
async def meshhub_report_sections(hub: Hub, viewer: Peer, since: float,
                                  until: float) -> ReportSection:
    """Requests made in ``[since, until)`` that the viewer asked, or may answer (and how many
    it answered itself)."""
    book = ApprovalBook.of(hub)
    asked: Counter[str] = Counter()
    to_answer: Counter[str] = Counter()
    answered_by_me = read = 0
    cursor: str | None = None
    while read < MAX_READ:
        page = await hub.records.find(
            APPROVALS.name, {"key": Range(ge=id_floor(since), lt=id_floor(until))},
            limit=500, after=cursor)
        for record in page.records:
            r = record.value
            if r["asker"] == viewer.key:
                asked[r["state"]] += 1
            elif book.may_answer(r, viewer):
                to_answer[r["state"]] += 1
                answered_by_me += r.get("answered_by") == viewer.key
        read += len(page.records)
        if page.cursor is None:
            break
        cursor = page.cursor
    cut = read >= MAX_READ
    lines = []
    if asked:
        lines.append(_line("asked by you", asked, cut))
    if to_answer:
        lines.append(_line("for you to answer", to_answer, cut) +
                     f" ({answered_by_me} answered by you)")
    return ReportSection("Approvals", lines, order=70)
