"""State a plugin keeps for each hub it serves (its book of approvals, pairings,
proposals...): made on first use, dropped with the hub.

Plugins are modules, loaded once per process, while a process may run several hubs (the tests
do): module globals would mix them up, so such state hangs off the hub instead.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    from .hub import Hub


class PerHub:
    """A base for a class with one instance per hub: ``Book.of(hub)``."""

    _instances: ClassVar[dict[type, weakref.WeakKeyDictionary[Hub, Any]]] = {}

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    @classmethod
    def of(cls, hub: Hub) -> Self:
        per_class = PerHub._instances.setdefault(cls, weakref.WeakKeyDictionary())
        found = per_class.get(hub)
        if found is None:
            found = per_class[hub] = cls(hub)
        return found
