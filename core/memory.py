"""Handing freed memory back to the system.

Python frees a large string (a 60 KB message, a frame) to the C allocator, and glibc keeps the
freed pages in its heap unless they sit at its very top: after a burst of large messages (a
reader that stalled, then caught up or left) the hub's RSS stays tens of MB above its idle level
with nothing in use. :func:`release` asks glibc for them back (``malloc_trim``, a few ms on a
fragmented heap of hundreds of MB); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
try:
    _trim = ctypes.CDLL(None).malloc_trim  # glibc: Linux, not musl, not macOS
except (AttributeError, OSError, TypeError):  # no such function; no C library to ask
    pass


def release() -> bool:
    """Return the C heap's free pages to the system; False where the allocator cannot."""
    if _trim is None:
        return False
    _trim(0)
    return True
