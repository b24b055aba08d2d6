"""JSON for the wire: every frame the hub or :class:`meshhub.client.MeshClient` encodes or
decodes goes through here, with orjson, which is an order of magnitude faster than the standard
library on the per-message path (a frame is encoded and decoded several times per message).

``dumps`` gives compact text (no spaces, UTF-8 characters as they are); ``loads`` takes text or
bytes and raises :class:`JSONDecodeError` (a ``json.JSONDecodeError``, with ``msg`` and ``pos``).
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    """``value`` as compact JSON text."""
    return orjson.dumps(value, option=_OPTIONS).decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)
