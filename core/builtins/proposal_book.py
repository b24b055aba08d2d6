"""The life of a proposal once it is open: counting votes, resolving it exactly once, and the
deadline timers that expire it.

A proposal is one document of the ``proposals`` collection; every vote is written into it with
``records.modify`` (compare-and-set, retried while another voter wins), and the write that
takes the proposal out of ``open`` is the one that resolves it: however many voters and timers
race, only one write sees an open proposal and closes it, so the result is told and audited
once. Timers live in the hub process; at start every open proposal with a deadline gets its
timer back (one that came due while the hub was down fires right after the start).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from meshhub.per_hub import PerHub
from meshhub.records import Change, Collection

from .coordination import notify

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Message, Peer

START_GRACE = 2.0  # seconds after a start before an overdue deadline fires (bridges connect)
VOTES = ("approve", "reject")


def _involved(hub: Hub, change: Change) -> Iterable[str]:
    """The proposer and the electorate hear of every change of a proposal."""
    doc = change.value or change.previous or {}
    return [doc.get("proposer", ""), *doc.get("electorate", ())]


PROPOSALS = Collection("proposals", indexes=("state", "proposer", "opened_at", "resolved_at"),
                       feed=True, notify=_involved)
# one document per elector of each proposal (``<proposal>:<elector>``): the electorate is a
# list in the proposal, which no index reads, and an elector lists the proposals put to it
ELECTORS = Collection("proposal_electors", indexes=("elector", "opened_at"))


def tally(doc: dict[str, Any]) -> dict[str, int]:
    votes = [v["vote"] for v in doc["votes"].values()]
    return {"approve": votes.count("approve"), "reject": votes.count("reject")}


def outcome(doc: dict[str, Any]) -> str | None:
    """``approved`` once the approvals reach the threshold; ``rejected`` once the rejections
    leave too few electors to reach it; ``None`` while it is still open to either."""
    counts = tally(doc)
    if counts["approve"] >= doc["threshold"]:
        return "approved"
    if len(doc["electorate"]) - counts["reject"] < doc["threshold"]:
        return "rejected"
    return None


def result_label(doc: dict[str, Any]) -> str:
    """What a resolved proposal's cards say under it."""
    counts = tally(doc)
    return f"{doc['state']}: {counts['approve']} approve, {counts['reject']} reject"


class ProposalBook(PerHub):
    """The proposals' timers and their resolution, one per hub."""


    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.timers: dict[str, asyncio.TimerHandle] = {}

    # -- timers -------------------------------------------------------------------------------
    def arm(self, doc: dict[str, Any], at_least: float = 0.0) -> None:
        if doc["deadline"] is None or doc["state"] != "open":
            return
        old = self.timers.pop(doc["id"], None)
        if old is not None:
            old.cancel()
        delay = max(at_least, doc["deadline"] - time.time())
        self.timers[doc["id"]] = asyncio.get_running_loop().call_later(
            delay, lambda: self.hub.spawn(self.expire(doc["id"])))

    async def load(self) -> None:
        for found in await self.hub.records.all(PROPOSALS.name, {"state": "open"}):
            self.arm(found.value, at_least=START_GRACE)

    def stop(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()

    async def expire(self, proposal_id: str) -> None:
        """The deadline came: an open proposal expires (one resolved meanwhile stays as it
        is)."""
        self.timers.pop(proposal_id, None)
        expired = False

        def change(found: dict[str, Any] | None) -> dict[str, Any] | None:
            nonlocal expired
            expired = found is not None and found["state"] == "open"
            if not expired or found is None:
                return None
            return found | {"state": "expired", "resolved_at": time.time()}

        record = await self.hub.records.modify(PROPOSALS.name, proposal_id, change)
        if expired and record is not None:
            await self.resolved(record.value, None)

    # -- resolution ---------------------------------------------------------------------------
    async def resolved(self, doc: dict[str, Any], actor: Peer | None) -> None:
        """Tell, audit and update the cards of a proposal that was just resolved (by
        ``actor``'s vote, or by its deadline when ``None``)."""
        timer = self.timers.pop(doc["id"], None)
        if timer is not None:
            timer.cancel()
        counts = tally(doc)
        await self.hub.audit.append("proposal_resolved", actor, subject=doc["id"],
                                    outcome=doc["state"], approvals=counts["approve"],
                                    rejections=counts["reject"])
        message = (await self.hub.store.get_message(doc["message_id"])
                   if doc["message_id"] else None)
        await self._tell(doc, actor, message)
        if message is not None:
            self.hub.spawn(self.hub.plugins.each("meshhub_card_settled", hub=self.hub,
                                                 message=message, label=result_label(doc)))

    async def _tell(self, doc: dict[str, Any], actor: Peer | None,
                    card: Message | None) -> None:
        """A ``proposal_result`` notice from the voter who resolved it to the proposer and
        the rest of the electorate; at a deadline, from the proposer to the electorate and
        itself (nobody acted, so the proposer is told too). It answers the proposal's card
        when there is one (the card was sent)."""
        directory = self.hub.directory
        sender = actor or directory.peers.get(doc["proposer"])
        if sender is None:
            return
        told = [k for k in dict.fromkeys([doc["proposer"], *doc["electorate"]])
                if k != sender.key or actor is None]
        counts = tally(doc)
        body = (f"Proposal {doc['state']}: {doc['title']} ({counts['approve']} approve, "
                f"{counts['reject']} reject, {doc['threshold']} needed)")
        data = {"proposal_id": doc["id"], "state": doc["state"], "approvals": counts["approve"],
                "rejections": counts["reject"], "threshold": doc["threshold"]}
        await notify(self.hub, sender, told, body, kind="proposal_result", data=data,
                     reply_to=card.id if card is not None else None)

    async def settled_label(self, message: Message) -> str | None:
        """The result a proposal card shows once its proposal is resolved, else ``None``."""
        data = message.data if isinstance(message.data, dict) else {}
        found = await self.hub.records.get(PROPOSALS.name, str(data.get("proposal_id", "")))
        if found is None or found.value["state"] == "open":
            return None
        return result_label(found.value)
