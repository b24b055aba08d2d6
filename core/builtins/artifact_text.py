"""The checks and texts of artifacts that need no hub: names, kinds, and the diff hint a
refused update carries."""

from __future__ import annotations

import difflib
import re

from meshhub.errors import InvalidRequest

MAX_NAME = 200
MAX_KIND = 32
MAX_TITLE = 300
MAX_NOTE = 500
DIFF_LINES = 40
DIFF_CHARS = 2000
KIND_RE = re.compile(r"[a-z][a-z0-9_-]*")


def check_name(name: str) -> str:
    """A name is one line of printable text without spaces at its ends (``plan.md``,
    ``API design``), so lists and reports show it as it is."""
    if not name or name != name.strip() or not name.isprintable() or len(name) > MAX_NAME:
        raise InvalidRequest(f"bad artifact name {name[:MAX_NAME]!r}: a name is 1 to "
                             f"{MAX_NAME} printable characters, without spaces at its ends")
    return name


def check_kind(kind: str) -> str:
    if len(kind) > MAX_KIND or not KIND_RE.fullmatch(kind):
        raise InvalidRequest(f"bad artifact kind {kind[:MAX_KIND]!r}: a kind is one lower-case "
                             f"word (plan, doc, code...), at most {MAX_KIND} characters")
    return kind


def diff_hint(old: str | None, new: str, base: int, current: int) -> str:
    """A short unified diff from version ``base`` to ``current`` (at most ``DIFF_LINES``
    lines and ``DIFF_CHARS`` characters): enough for the writer to see what to merge, small
    enough for an error message."""
    if old is None:
        return f"(version {base} is not kept any more: read version {current} to merge)"
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(),
                                      f"version {base}", f"version {current}", n=1,
                                      lineterm=""))
    if not lines:
        return f"(version {current} has the same text as version {base})"
    shown = "\n".join(line[:200] for line in lines[:DIFF_LINES])
    cut = len(lines) > DIFF_LINES or len(shown) > DIFF_CHARS
    return shown[:DIFF_CHARS] + ("\n... (the diff goes on: read the version)" if cut else "")
