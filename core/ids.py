"""Identifiers: sortable message ids and short peer keys."""

from __future__ import annotations

import hashlib
import os
import threading
import time


class MonotonicIds:
    """Unique ids that sort in creation order, even within one millisecond.

    Layout (hex, fixed width so string order is time order): 12 digits of milliseconds since the
    epoch, 6 digits of a per-millisecond sequence, 6 random digits so two hubs sharing a store do
    not collide.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = 0
        self._node = os.urandom(3).hex()

    def new(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                self._seq += 1
                ms = self._last_ms
                if self._seq >= 0xFFFFFF:  # more than 16M ids in one ms: borrow the next ms
                    ms += 1
                    self._seq = 0
            else:
                self._seq = 0
            self._last_ms = ms
            return f"{ms:012x}{self._seq:06x}{self._node}"


_ids = MonotonicIds()


def id_floor(at: float) -> str:
    """The smallest id made at or after ``at`` (epoch seconds): ids sort by time, so a time
    window is a range of ids."""
    return f"{max(0, int(at * 1000)):012x}"


def new_id() -> str:
    """A new sortable unique id (messages, tokens, conversations)."""
    return _ids.new()


def peer_key_for(identity: str, attempt: int = 0) -> str:
    """The 8-hex short key of an identity; ``attempt`` > 0 re-hashes after a collision."""
    seed = identity if attempt == 0 else f"{identity}#{attempt}"
    return hashlib.sha256(seed.encode()).hexdigest()[:8]


def is_peer_key(text: str) -> bool:
    return len(text) == 8 and all(c in "0123456789abcdef" for c in text)
