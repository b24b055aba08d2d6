"""The session report: a Markdown summary of what happened on the mesh in a time window,
as one peer may see it.

Each feature adds its own part through the ``meshhub_report_sections`` hook (tasks, decisions,
files...), so a third-party plugin's feature shows up in the report the same way. A section is
a title and Markdown lines; whatever a peer wrote is passed through :func:`report_text` before
it goes into a line, so a title or a name cannot start a heading, a link or a table of its own.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .sanitize import for_terminal

if TYPE_CHECKING:
    from .hub import Hub
    from .models import Peer

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


@dataclass
class ReportSection:
    """One part of the report: ``title`` (a ``##`` heading), ``lines`` (Markdown, usually
    ``- `` bullets) and ``order`` (smaller first; the core's own parts use 10-40)."""

    title: str
    lines: list[str] = field(default_factory=list)
    order: int = 50


def report_text(text: str, limit: int = 200) -> str:
    """Peer-written ``text`` made safe for one line of the report: one line, control and
    bidi characters neutralised, Markdown's own characters escaped, cut to ``limit``."""
    one = for_terminal(text, one_line=True)
    if len(one) > limit:
        one = one[: limit - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", one)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


async def build_report(hub: Hub, viewer: Peer, since: float, until: float) -> str:
    """The report of ``[since, until)`` for ``viewer``: every plugin's sections, in order,
    under one heading; a section with no lines is left out."""
    found = await hub.plugins.each("meshhub_report_sections", hub=hub, viewer=viewer,
                                   since=since, until=until)
    sections: list[ReportSection] = []
    for value in found:
        sections.extend(value if isinstance(value, list) else [value])
    sections.sort(key=lambda s: (s.order, s.title))
    out = [f"# Mesh report: {_when(since)} to {_when(until)}", ""]
    for section in sections:
        if section.lines:
            out += [f"## {section.title}", "", *section.lines, ""]
    if len(out) == 2:
        out += ["Nothing happened in this window that you can see.", ""]
    return "\n".join(out)
