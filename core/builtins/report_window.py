"""One way for every report section to read its window: by a time range in the query, a
page at a time, filtered by the viewer, and cut at a cap with a line saying how many more.

A section never reads a whole collection: the query names ``[since, until)`` on an indexed
time field (and, where it can, the viewer's own rows), and reading stops once the cap is
full. A section that must also filter rows in code (a task's or a proposal's audience) may
read its whole window when the viewer sees few of its rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshhub.records import Range, Record

if TYPE_CHECKING:
    from meshhub.hub import Hub

CAP = 200  # lines a section shows
PAGE = 200


async def window_lines(hub: Hub, collection: str, where: dict[str, Any], *, since: float,
                       until: float, line: Callable[[Record], str],
                       visible: Callable[[Record], bool] | None = None,
                       field: str = "at") -> list[str]:
    """The lines of the records matching ``where`` whose ``field`` is in ``[since,
    until)``, oldest first, at most :data:`CAP` and then ``... and N more``. ``line`` makes a
    record's line. Rows ``where`` selects for the viewer alone are counted
    for N; with a ``visible`` filter beyond the query, the tail says only ``and more`` (a
    count would tell the viewer about rows it may not see)."""
    query = {**where, field: Range(ge=since, lt=until)}
    lines: list[str] = []
    cursor: str | None = None
    while True:
        page = await hub.records.find(collection, query, order=field, limit=PAGE, after=cursor)
        for record in page.records:
            if visible is not None and not visible(record):
                continue
            if len(lines) == CAP:
                return lines + [await _more(hub, collection, query, exact=visible is None)]
            lines.append(line(record))
        if page.cursor is None:
            return lines
        cursor = page.cursor


async def _more(hub: Hub, collection: str, query: dict[str, Any], exact: bool) -> str:
    if not exact:
        return "- … and more"
    return f"- … and {await hub.records.count(collection, query) - CAP} more"
