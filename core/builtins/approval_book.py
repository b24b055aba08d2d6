"""Where approvals live and how one is settled, once, everywhere at once.

An approval has an asker, approvers (members, whose every human surface may answer, and peers
without a member), a question with options (none: any text answers it), and a state:
``pending``, then exactly one of ``answered`` (by an approver, or by the policy),
``closed`` (the asker says the prompt moved on: answered at the terminal, or cancelled) or
``expired``. Approvals are documents of the ``approvals`` collection (keyed by id); a
compare-and-set that only moves a ``pending`` document decides which settlement wins; the
winner then, in this order:

1. wakes every caller waiting on it (``approval_wait``, ``ask``), who get it as their result;
2. pushes an ``approval`` event to the connected peers involved (the web page moves the card);
3. calls ``meshhub_approval_settled`` (for plugins that follow approvals) and
   ``meshhub_card_settled``, so each bridge updates the card it posted;
4. sends the asker an ``approval_answer`` message, only when nobody was waiting on it (an
   answer that comes after the asker's call returned still reaches it, in its inbox), and
   never for a tool permission (its relay asks with ``approval_wait``, again after a
   reconnect: a message would only repeat the verdict to the agent).

Expiry and quiet-hour holds are timers, set again from the store when the hub starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from meshhub import codec
from meshhub.errors import InvalidRequest, NotFound
from meshhub.ids import new_id
from meshhub.per_hub import PerHub
from meshhub.records import Collection, In

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

    from .approval_policy import PolicyBook

log = logging.getLogger(__name__)
START_GRACE = 10.0  # seconds after a start before overdue approvals expire (connectors connect)
APPROVALS = Collection("approvals", indexes=("asker", "state", "ref"))
# who each approval names (``asker:<key>``, ``peer:<key>``, ``member:<key>``), one document
# each: approvers are lists in an approval, which no index reads, and a peer lists its own
PARTIES = Collection("approval_parties", indexes=("party", "approval"))
SETTLED = ("answered", "closed", "expired")
# an approval's fields; ``options``, ``approvers`` ({"members": [...], "peers": [...]}) and
# ``recipients`` (the peer keys its card went to) are lists and dicts
FIELDS = ("id", "message_id", "asker", "approver", "question", "options", "state", "answer",
          "reason", "answer_message_id", "created_at", "answered_at", "kind", "ref",
          "approvers", "answered_by", "answered_on", "tool", "input_preview", "expires_at",
          "held_until", "recipients")


def minutes(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    return f"{max(1, round(seconds / 60))} min" if seconds >= 60 else f"{int(seconds)} s"


class ApprovalBook(PerHub):
    """A hub's approvals: the store's rows, the callers waiting on them, and their timers."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        # approval id -> (waiting peer's key, its future): the asker's own waiter getting the
        # answer is what spares it the answer message
        self.waiters: dict[str, list[tuple[str, asyncio.Future[dict[str, Any]]]]] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        # set by the actions module: sends a held request's card when its hold ends
        self.release: Callable[[dict[str, Any]], Any] | None = None
        self.policies: PolicyBook | None = None  # the config's [approvals], once read

    # -- reading ------------------------------------------------------------------------------
    def view(self, row: dict[str, Any]) -> dict[str, Any]:
        """The public shape of an approval (docs/protocol.md, "Approvals")."""
        r: dict[str, Any] = dict.fromkeys(FIELDS) | row
        peers = self.hub.directory.peers

        def name(key: str | None) -> str | None:
            return None if key is None else peers[key].name if key in peers else key

        approvers = self.approver_names(r["approvers"] or {}, r["approver"])
        view = {
            "id": r["id"], "ref": r["ref"], "kind": r["kind"], "message_id": r["message_id"],
            "asker": name(r["asker"]), "asker_key": r["asker"],
            "approver": ", ".join(approvers), "approver_key": r["approver"],
            "approvers": approvers, "question": r["question"],
            "options": list(r["options"] or ()), "state": r["state"],
            "answer": r["answer"], "reason": r["reason"],
            "answered_by": name(r["answered_by"]), "answered_on": r["answered_on"],
            "answer_message_id": r["answer_message_id"], "tool": r["tool"],
            "input_preview": r["input_preview"], "expires_at": r["expires_at"],
            "held_until": r["held_until"], "created_at": r["created_at"],
            "answered_at": r["answered_at"],
        }
        view["label"] = label(view)
        return view

    def approver_names(self, approvers: dict[str, list[str]], first: str) -> list[str]:
        directory = self.hub.directory
        names = [directory.members[k].name for k in approvers.get("members", ())
                 if k in directory.members]
        names += [directory.peers[k].name for k in approvers.get("peers", ())
                  if k in directory.peers]
        if not names:  # an approval from before several approvers: its one peer
            names = [directory.peers[first].name if first in directory.peers else first]
        return names

    async def row(self, ident: str, peer: Peer | None = None) -> dict[str, Any] | None:
        """The approval with this id; or, for ``peer``, the one with this short ref (any case)
        among those it asked or may answer: its own first, pending first. Refs are the
        agent's (Claude Code's five letters), so two sessions may use the same one: a ref that
        names two pending requests of different askers is refused as ambiguous."""
        wanted = ident.strip().lower()
        records = self.hub.records
        exact = await records.get("approvals", wanted)
        if exact is not None:
            return exact.value
        if peer is None:
            return None
        found = []
        for states in ("pending", In(SETTLED)):  # pending first, each newest first
            page = await records.find("approvals", {"ref": wanted, "state": states},
                                      order="-key", limit=50)
            found += [r.value for r in page.records]
        found = found[:50]
        own = [r for r in found if r["asker"] == peer.key]
        if own:
            return own[0]
        theirs = [r for r in found if self.may_answer(r, peer)]
        open_askers = {r["asker"] for r in theirs if r["state"] == "pending"}
        if len(open_askers) > 1:
            raise InvalidRequest(f"{ident!r} names requests of {len(open_askers)} sessions; "
                                 "use the request's id (`approvals` lists them)",
                                 code="ambiguous")
        return theirs[0] if theirs else None

    async def get(self, ident: str, peer: Peer | None = None) -> dict[str, Any]:
        found = await self.row(ident, peer)
        if found is None:
            raise NotFound(f"no approval {ident!r} that you asked or may answer; `approvals` "
                           "lists yours")
        return found

    def may_answer(self, r: dict[str, Any], peer: Peer) -> bool:
        """``peer`` is one of the approvers, or a surface of an approving member (never an
        agent session for a tool permission: the agent would approve itself)."""
        if peer.key == r["asker"]:
            return False
        approvers, recipients = parties(r)
        if not approvers:  # a request from before several approvers: its one peer
            return peer.key == r["approver"]
        if peer.key in approvers.get("peers", ()):
            return True
        if peer.member_key is None or peer.member_key not in approvers.get("members", ()):
            return False
        if peer.kind != "agent":
            return True
        # a member's agent sessions answer only what was sent to them (a member with nothing
        # else to reach), and never a tool permission: the agent would approve itself
        return r["kind"] != "permission" and peer.key in recipients

    def involved(self, r: dict[str, Any], peer: Peer) -> bool:
        return peer.key == r["asker"] or self.may_answer(r, peer) or peer.key in parties(r)[1]

    # -- writing ------------------------------------------------------------------------------
    async def insert(self, r: dict[str, Any]) -> None:
        """Store a new approval (queued at once: a send started in the same loop turn shares
        its commit) and who it names (queued next, before that commit is handed over)."""
        doc = dict.fromkeys(FIELDS) | {"approvers": {}, "recipients": []}
        doc |= {k: v for k, v in r.items() if k in FIELDS}  # not what is cached on it
        records = self.hub.records
        named = [asyncio.ensure_future(records.put("approval_parties", key, value))
                 for key, value in party_docs(doc).items()]
        try:
            await records.create("approvals", r["id"], doc)
        finally:
            await asyncio.gather(*named)

    async def delete(self, r: dict[str, Any]) -> None:
        records = self.hub.records
        await asyncio.gather(records.delete("approvals", r["id"]),
                             *(records.delete("approval_parties", k) for k in party_docs(r)))

    async def update(self, approval_id: str, **values: Any) -> None:
        await self.hub.records.modify(
            "approvals", approval_id, lambda found: None if found is None else found | values)

    async def send_recorded(self, approval_id: str, field: str,
                            send: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """``send(message_id)`` a message with a new id, and record that id in ``field`` of
        the approval in the commit that stores the message (both are queued in one loop turn),
        so whoever gets the message reads the approval with it; a refused send leaves the field
        empty."""
        chosen = new_id()
        recorded, sent = await asyncio.gather(self.update(approval_id, **{field: chosen}),
                                              send(chosen), return_exceptions=True)
        if isinstance(sent, BaseException):
            if not isinstance(recorded, BaseException):
                await self.update(approval_id, **{field: None})
            raise sent
        if isinstance(recorded, BaseException):
            raise recorded
        return sent

    async def settle(self, approval_id: str, state: str, *, answer: str | None = None,
                     reason: str | None = None, by: str | None = None,
                     on: str | None = None) -> dict[str, Any] | None:
        """Move a pending approval to ``state``; ``None`` when it was settled already (the
        first settlement wins, whatever surface it came from)."""
        settlement = {"state": state, "answer": answer, "reason": reason, "answered_by": by,
                      "answered_on": on, "answered_at": time.time(), "held_until": None}
        moved = False

        def change(found: dict[str, Any] | None) -> dict[str, Any] | None:
            nonlocal moved  # of the last attempt: the one whose write went through
            moved = found is not None and found["state"] == "pending"
            return found | settlement if found is not None and moved else None

        record = await self.hub.records.modify("approvals", approval_id, change)
        if not moved or record is None:
            return None
        timer = self.timers.pop(approval_id, None)
        if timer is not None:
            timer.cancel()
        r = record.value
        view = self.view(r)
        asker_told = False
        for waiter, future in self.waiters.pop(approval_id, []):
            if not future.done():
                future.set_result(view)
                asker_told = asker_told or waiter == r["asker"]
        self._announce(r, view)
        message = (await self.hub.store.get_message(r["message_id"])
                   if r["message_id"] else None)
        self.hub.spawn(self.hub.plugins.each("meshhub_approval_settled", hub=self.hub,
                                             approval=view, message=message))
        if message is not None:
            self.hub.spawn(self.hub.plugins.each("meshhub_card_settled", hub=self.hub,
                                                 message=message, label=str(view["label"])))
        if state in ("answered", "expired") and not asker_told and r["kind"] != "permission":
            # (a tool permission's relay asks with approval_wait, again after a reconnect)
            await self._tell_asker(r, view)
        return view

    def _announce(self, r: dict[str, Any], view: dict[str, Any]) -> None:
        frame = codec.dumps({"type": "event", "event": "approval", "approval": view})
        presence = self.hub.presence
        for conns in list(presence.connections.values()):
            for conn in conns:
                if conn.receive and self.involved(r, conn.peer):
                    conn.send_event(frame)

    async def _tell_asker(self, r: dict[str, Any], view: dict[str, Any]) -> None:
        asker = self.hub.directory.peers.get(r["asker"])
        by = self.hub.directory.peers.get(r["answered_by"] or "")
        if asker is None:
            return
        sender = by or asker
        if view["state"] == "answered":
            because = f"\nReason: {view['reason']}" if view["reason"] else ""
            body = f"{view['label']}: {view['question']}{because}"
        else:
            body = f"No answer ({view['label']}): {view['question']}"
        data = {"approval_id": r["id"], "question": r["question"], "answer": view["answer"],
                "reason": view["reason"], "state": view["state"], "by": view["answered_by"],
                "on": view["answered_on"], "ref": r["ref"]}
        try:
            await self.send_recorded(r["id"], "answer_message_id", lambda chosen: self.hub.send(
                sender, asker.key, body, kind="approval_answer", priority="now",
                reply_to=r["message_id"], data=data, message_id=chosen))
        except Exception as exc:  # the answer is stored; approval_get shows it
            log.warning("could not tell %s about approval %s: %s", asker.name, r["id"], exc)

    # -- waiting ------------------------------------------------------------------------------
    def expect(self, approval_id: str, peer_key: str) -> asyncio.Future[dict[str, Any]]:
        """A waiter of ``peer_key`` on the approval's settlement, registered now (before its
        card goes out, so even an answer given at once finds it); :meth:`wait` awaits it."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(approval_id, []).append((peer_key, future))
        return future

    def _forget(self, approval_id: str, future: asyncio.Future[dict[str, Any]]) -> None:
        left = [w for w in self.waiters.get(approval_id, []) if w[1] is not future]
        if left:
            self.waiters[approval_id] = left
        else:
            self.waiters.pop(approval_id, None)

    async def wait(self, r: dict[str, Any], timeout: float, peer_key: str,
                   future: asyncio.Future[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The approval once it is settled, or as it is after ``timeout`` seconds."""
        if future is None:
            if r["state"] != "pending" or timeout <= 0:
                return self.view(r)
            future = self.expect(r["id"], peer_key)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self._forget(r["id"], future)  # gone before reading, so no answer lands unread
            if future.done():
                return future.result()
            return self.view(await self.get(r["id"]))
        finally:
            self._forget(r["id"], future)

    # -- timers -------------------------------------------------------------------------------
    def schedule(self, r: dict[str, Any], at_least: float = 0.0) -> None:
        """Arm the approval's next timer: its hold's end, else its expiry (in ``at_least``
        seconds at the soonest)."""
        old = self.timers.pop(r["id"], None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        now = time.time()
        if r["held_until"] is not None:
            delay, fire = r["held_until"] - now, self._released
        elif r["expires_at"] is not None:
            delay, fire = r["expires_at"] - now, self._expired
        else:
            return
        self.timers[r["id"]] = loop.call_later(
            max(at_least, delay), lambda: self.hub.spawn(fire(r["id"])))

    async def _released(self, approval_id: str) -> None:
        self.timers.pop(approval_id, None)
        if self.release is None:
            return
        released = False

        def change(found: dict[str, Any] | None) -> dict[str, Any] | None:
            nonlocal released  # only a pending request's card goes out
            released = found is not None and found["state"] == "pending"
            return found | {"held_until": None} if found is not None and released else None

        record = await self.hub.records.modify("approvals", approval_id, change)
        if not released or record is None:
            return  # settled meanwhile: no card for it
        r = record.value
        try:
            await self.release(r)
        except Exception:
            log.exception("could not send the card of approval %s after quiet hours; it "
                          "stays listed in `hub approvals` until it expires", approval_id)
        finally:
            self.schedule(r)  # its expiry, whatever became of the card

    async def _expired(self, approval_id: str) -> None:
        self.timers.pop(approval_id, None)
        await self.settle(approval_id, "expired", on="timer")

    async def load(self) -> None:
        """Arm the timers of every pending approval (the hub restarted). One that came due
        while the hub was down fires :data:`START_GRACE` seconds after the start, so the
        chat connectors are connected and can update its cards."""
        for found in await self.hub.records.all("approvals", {"state": "pending"}):
            r = found.value
            if r["expires_at"] is not None or r["held_until"] is not None:
                self.schedule(r, at_least=START_GRACE)

    def stop(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()


def parties(r: dict[str, Any]) -> tuple[dict[str, list[str]], frozenset[str]]:
    """An approval's approvers and card recipients, kept on it once made (an event checks every
    connection against them)."""
    found = r.get("_parties")
    if found is None:
        found = r["_parties"] = (r["approvers"] or {}, frozenset(r["recipients"] or ()))
    return found


def party_docs(r: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The ``approval_parties`` documents of an approval: its asker, its first approver (the
    only one of a request from before several approvers), each approving peer and member."""
    approvers = r["approvers"] or {}
    names = [f"asker:{r['asker']}", f"peer:{r['approver']}"]
    names += [f"peer:{k}" for k in approvers.get("peers", ())]
    names += [f"member:{k}" for k in approvers.get("members", ())]
    return {f"{name} {r['id']}": {"party": name, "approval": r["id"]}
            for name in dict.fromkeys(names)}


def label(view: dict[str, Any]) -> str:
    """What every card shows: who answered what where, or why no one did."""
    state = view["state"]
    if state == "answered":
        if view["answered_on"] == "policy":
            return f"{view['answer']} by policy"
        return f"{view['answer']}, answered by {view['answered_by']} on {view['answered_on']}"
    if state == "closed":
        return ("answered at the terminal" if view["answered_on"] == "terminal"
                else f"cancelled by {view['asker']}")
    if state == "expired":
        waited = (view["expires_at"] or 0) - view["created_at"]
        return f"expired after {minutes(waited)} without an answer"
    if view["held_until"] is not None:
        return f"held for quiet hours, waiting for {view['approver']}"
    return f"waiting for {view['approver']}"


def check_ident(ident: str) -> str:
    if not ident.strip():
        raise InvalidRequest("say which approval: its id or its short reference")
    return ident
