"""Change histories kept beside the documents they describe: one small document per entry.

A decision or a task changes many times; keeping every change inside its document would make
the document (and every ``record`` event sent for it) grow with each change. Instead the head
document carries its current value and a count, and each change is a document of its own in
a history collection, keyed ``<parent>:<seq>`` (zero-padded, so keys sort in order) and
indexed by its parent, so a reader pages one history and the writer drops the oldest entries
past the bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshhub.records import Collection, Range

if TYPE_CHECKING:
    from meshhub.hub import Hub


@dataclass(frozen=True)
class History:
    """The history collection ``name``: ``keep`` entries per parent, the newest; with
    ``pin_first`` the first entry (a creation) is kept as well. ``indexes``: more fields the
    entries are found by (the time ``at`` always is)."""

    name: str
    keep: int
    pin_first: bool = False
    indexes: tuple[str, ...] = ()
    collection: Collection = field(init=False)

    def __post_init__(self) -> None:
        coll = Collection(self.name, indexes=("parent", "seq", "at", *self.indexes))
        object.__setattr__(self, "collection", coll)

    @staticmethod
    def key(parent: str, seq: int) -> str:
        return f"{parent}:{seq:010d}"

    async def add(self, hub: Hub, parent: str, seq: int, entry: dict[str, Any]) -> None:
        """Write entry ``seq`` of ``parent`` (its head counted it) and drop the one that
        falls out of the kept window."""
        await hub.records.put(self.name, self.key(parent, seq),
                              {**entry, "parent": parent, "seq": seq})
        kept = self.keep - 1 if self.pin_first else self.keep
        old = seq - kept
        if old > (1 if self.pin_first else 0):
            await hub.records.delete(self.name, self.key(parent, old))

    async def page(self, hub: Hub, parent: str, after: int | None,
                   limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` entries of ``parent`` after entry number ``after``, oldest
        first, and whether there are more."""
        where: dict[str, Any] = {"parent": parent}
        if after is not None:
            where["seq"] = Range(gt=after)
        found = await hub.records.find(self.name, where, order="seq", limit=limit)
        return [r.value for r in found.records], found.cursor is not None
