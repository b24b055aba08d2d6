"""What a fake third-party API was asked: the call log every fake keeps, and how a test waits
for a call. A mixin: the fake sets ``calls`` (each call a dict with at least ``method`` and
``ok``) and ``_changed`` (an ``asyncio.Condition``), and awaits ``_notify()`` after a change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class CallLog:
    calls: list[dict[str, Any]]
    _changed: asyncio.Condition

    def of(self, method: str) -> list[dict[str, Any]]:
        """Calls of ``method`` that took effect (lost answers included), oldest first."""
        return [c for c in self.calls if c["method"] == method and c["ok"]]

    async def wait_for(self, method: str, match: Callable[[dict[str, Any]], bool] | None = None,
                       timeout: float = 10.0, count: int = 1) -> dict[str, Any]:
        """The ``count``-th call of ``method`` that took effect and matches ``match``."""

        def found() -> list[dict[str, Any]]:
            return [c for c in self.of(method) if match is None or match(c)]

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(found()) >= count),
                                   timeout)
        return found()[count - 1]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
