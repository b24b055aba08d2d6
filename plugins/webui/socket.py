"""The page's connection: the peer protocol, plus each message body rendered as safe HTML.

The message shape stays the one shape of docs/protocol.md; the HTML rides beside it: a pushed
``message`` frame gets ``"html"``, and a ``result`` that holds messages gets ``"html"``, a map
from message id to HTML. Rendering (:func:`meshhub.render.to_html`) happens here, for browser
connections only, so no other peer pays for it.
"""

from __future__ import annotations

from typing import Any

from meshhub import codec
from meshhub.presence import Connection
from meshhub.render import to_html

MESSAGE_FRAME = '{"type":"message"'
MAX_DEPTH = 4


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and "from_key" in value and isinstance(value.get("text"), str)


def collect_html(value: Any, out: dict[str, str], depth: int = 0) -> None:
    """Render every message found in an action's result (lists and objects, a few levels
    deep: ``history``, ``thread``, ``inbox`` and the like)."""
    if depth > MAX_DEPTH:
        return
    if _is_message(value):
        out[value["id"]] = to_html(value["text"])
        return
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        collect_html(item, out, depth + 1)


class WebConnection(Connection):
    """A browser tab's socket: the member's peer, live on the ``web`` surface."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.surface = "web"

    def send(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "result":
            rendered: dict[str, str] = {}
            collect_html(frame.get("result"), rendered)
            if rendered:
                frame = {**frame, "html": rendered}
        super().send(frame)

    def render(self, text: str) -> str:
        """A pushed message frame with its HTML beside it (counted by the queue's bound)."""
        if not text.startswith(MESSAGE_FRAME):
            return text
        frame = codec.loads(text)
        frame["html"] = to_html(frame["message"]["text"])
        return codec.dumps(frame)
