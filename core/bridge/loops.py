"""Loop prevention for bridges: nothing a bridge relays into the mesh comes back out to where
it came from, and nothing a bridge posted itself is taken as new input.

Two rules, the same for every connector:

1. A message a bridge relays into the mesh carries its **origin** in ``message.data``
   (``{"origin": {"connector": "telegram", "chat": "-100123"}}``). When the mesh delivers that
   message to the peer standing for the same chat (a linked group), :func:`is_echo` is true and
   the connector acks it without posting: the chat already shows it.
2. A connector records the platform ids of what it posted (:class:`LoopGuard`) and drops input
   carrying one of them, or written by the bot's own account.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshhub.models import Message


def origin(connector: str, chat: str | int) -> dict[str, Any]:
    """The ``data`` to stamp on a message relayed in from ``chat`` of ``connector``."""
    return {"origin": {"connector": connector, "chat": str(chat)}}


def origin_of(message: Message) -> tuple[str, str] | None:
    data = message.data if isinstance(message.data, dict) else None
    src = data.get("origin") if data else None
    if isinstance(src, dict) and "connector" in src and "chat" in src:
        return str(src["connector"]), str(src["chat"])
    return None


def is_echo(message: Message, connector: str, chat: str | int) -> bool:
    """Whether ``message`` came from ``chat`` of ``connector`` in the first place."""
    return origin_of(message) == (connector, str(chat))


class LoopGuard:
    """Remembers (bounded) the platform message keys a bridge posted itself."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._own: OrderedDict[str, None] = OrderedDict()

    def posted(self, key: str) -> None:
        self._own[key] = None
        self._own.move_to_end(key)
        while len(self._own) > self.size:
            self._own.popitem(last=False)

    def is_own(self, key: str) -> bool:
        return key in self._own
