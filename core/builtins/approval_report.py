"""The approvals' part of the session report: how many requests the viewer asked or was asked
in the window, and how they stand. Never a question's text: the counts say what happened,
``approvals`` shows the requests themselves."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from meshhub import hookimpl
from meshhub.ids import id_floor
from meshhub.records import In, Range
from meshhub.report import ReportSection

from .approval_book import APPROVALS, PARTIES, ApprovalBook

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

MAX_READ = 5000  # the viewer's own approvals read for one report; more says "at least"
STATES = ("pending", "answered", "closed", "expired")


def _line(what: str, states: Counter[str], cut: bool) -> str:
    total = sum(states.values())
    parts = ", ".join(f"{states[s]} {s}" for s in STATES if states[s])
    return f"- {'at least ' if cut else ''}{total} {what}: {parts}"


async def _ids(hub: Hub, collection: str, where: dict[str, Any], field: str) -> list[str]:
    """The values of ``field`` in the documents matching ``where``, at most
    :data:`MAX_READ` (one more tells that there were more)."""
    out: list[str] = []
    cursor: str | None = None
    while len(out) <= MAX_READ:
        page = await hub.records.find(collection, where, limit=500, after=cursor)
        out += [str(r.key if field == "key" else r.value[field]) for r in page.records]
        if page.cursor is None:
            break
        cursor = page.cursor
    return out[:MAX_READ + 1]


@hookimpl
async def meshhub_report_sections(hub: Hub, viewer: Peer, since: float,
                                  until: float) -> ReportSection:
    """Requests made in ``[since, until)`` that the viewer asked, or may answer (and how many
    it answered itself), read by the viewer: its own requests by ``asker``, the others
    through ``approval_parties``; "at least" when the viewer's own rows pass the cap."""
    book = ApprovalBook.of(hub)
    window = Range(ge=id_floor(since), lt=id_floor(until))
    mine = await _ids(hub, APPROVALS.name, {"asker": viewer.key, "key": window}, "key")
    names = [f"peer:{viewer.key}"] + ([f"member:{viewer.member_key}"]
                                      if viewer.member_key is not None else [])
    named = await _ids(hub, PARTIES.name, {"party": In(tuple(names)), "approval": window},
                       "approval")
    cut = len(mine) > MAX_READ or len(named) > MAX_READ
    asked: Counter[str] = Counter()
    to_answer: Counter[str] = Counter()
    answered_by_me = 0
    for approval_id in dict.fromkeys(mine[:MAX_READ] + named[:MAX_READ]):
        found = await hub.records.get(APPROVALS.name, approval_id)
        if found is None:
            continue
        r = found.value
        if r["asker"] == viewer.key:
            asked[r["state"]] += 1
        elif book.may_answer(r, viewer):
            to_answer[r["state"]] += 1
            answered_by_me += r.get("answered_by") == viewer.key
    lines = []
    if asked:
        lines.append(_line("asked by you", asked, cut))
    if to_answer:
        lines.append(_line("for you to answer", to_answer, cut) +
                     f" ({answered_by_me} answered by you)")
    return ReportSection("Approvals", lines, order=70)
