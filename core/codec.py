"""JSON for the wire: every frame the hub or :class:`meshhub.client.MeshClient` encodes or
decodes goes through here, with orjson, which is an order of magnitude faster than the standard
library on the per-message path (a frame is encoded and decoded several times per message).

``dumps`` gives compact text (no spaces, UTF-8 characters as they are); ``loads`` takes text or
bytes and raises :class:`JSONDecodeError` (a ``json.JSONDecodeError``, with ``msg`` and ``pos``).

``read`` is ``loads`` for what arrives from outside (a frame, a request body): besides what orjson
refuses itself (invalid UTF-8, lone surrogates such as ``"\\ud800"``, ``NaN``, nesting past 1024),
it refuses nesting deeper than :data:`MAX_DEPTH`, so nothing the hub keeps or echoes (a call's
``id``) is too deep to encode again, and no code that walks a value recursively can overflow.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
_OPTIONS = orjson.OPT_NON_STR_KEYS
MAX_DEPTH = 32  # levels of arrays and objects in a frame or body; a frame needs about 5


def dumps(value: Any) -> str:
    """``value`` as compact JSON text."""
    return orjson.dumps(value, option=_OPTIONS).decode()


def dumps_line(value: Any) -> bytes:
    """``value`` as one line of compact JSON, UTF-8, ending in a newline (a ``.jsonl`` line)."""
    return orjson.dumps(value, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


def read(text: str | bytes) -> Any:
    """Parse JSON that came from outside; :class:`JSONDecodeError` for anything ``loads``
    refuses or that nests deeper than :data:`MAX_DEPTH`."""
    value = orjson.loads(text)
    if not _shallow(value):
        raise JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", "", 0)
    return value


def _shallow(value: Any) -> bool:
    """No array or object in ``value`` lies deeper than :data:`MAX_DEPTH` (without recursion)."""
    level: list[Any] = [value]
    for _depth in range(MAX_DEPTH):
        level = [child for item in level if isinstance(item, (dict, list))
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return True
    return not any(isinstance(item, (dict, list)) for item in level)
