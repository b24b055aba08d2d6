"""The most each field a peer can store may hold, in one place (docs/protocol.md, "Limits").

Every text or list a hello or an action keeps (a role, a summary, a topic, group names and how
many, a connector, a token label...) has a maximum here. It is checked at the edge, before
anything is stored or changed, and an input over it is refused with :class:`TooLong`, which
names the field and the limit. Without them one peer could make every ``peers`` answer huge
for everyone (a 700,000-character role, 20,000 groups, a 900 KB topic).

Actions declare theirs in their parameters' annotations (``Annotated[str, "help",
Field(max_length=MAX_ROLE)]``), so the JSON schemas of the HTTP API and the MCP tools show them
too (``maxLength``, ``maxItems``); :mod:`meshhub.actions` turns pydantic's length errors into
:class:`TooLong`. Other inputs (the hello's fields) call :func:`check_length`. Lengths of text
are counted in characters (code points).
"""

from __future__ import annotations

from typing import Any, TypeVar

from .errors import InvalidRequest

MAX_NAME = 40  # a peer's or member's name (the name rule of meshhub.directory)
MAX_ROLE = 100  # a peer's role, and its role in each group
MAX_SUMMARY = 200  # the one-line summary next to a peer's name
MAX_GROUP = 100  # a group or conversation name, subgroups included ("backend/db")
MAX_GROUPS = 50  # groups one peer is in
MAX_TOPIC = 300  # a conversation's topic
MAX_CONNECTOR = 40  # the surface a WebSocket peer names (cli, mcp...)
MAX_SESSION = 100  # a session label of a hello
MAX_LABEL = 100  # a bearer token's label
MAX_CLIENT_ID = 128  # a send's idempotency key
MAX_MIME = 127  # a file's media type
MAX_REASON = 1000  # the reason given with an approval's answer
MAX_OPTIONS = 8  # answers an approval request offers
MAX_OPTION = 40  # one such answer
MAX_EMOJI = 32  # one reaction
MAX_TOOL = 200  # an agent tool's name (a permission prompt's, a hook's)
MAX_NAMES = 100  # names a send mentions or whispers to (as many as its targets)
MAX_PATH = 1024  # a file's path, as an agent tool names the file it edits
MAX_REPO = 300  # a repository's identity (host/owner/name of its remote, or its directory)

Sized = TypeVar("Sized", str, list[Any], dict[str, Any])


class TooLong(InvalidRequest):
    """A field over its maximum: the message and ``details`` name the field and the limit."""

    code = "too_long"

    def __init__(self, field: str, limit: int, unit: str = "characters") -> None:
        super().__init__(f"{field} is over its limit: at most {limit} {unit}", field=field,
                         limit=limit)


def check_length(field: str, value: Sized, limit: int) -> Sized:
    """``value`` when it holds at most ``limit`` characters (text) or items (a list, an
    object); :class:`TooLong` otherwise."""
    if len(value) > limit:
        raise TooLong(field, limit, "characters" if isinstance(value, str) else "items")
    return value
