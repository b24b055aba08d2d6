"""Where approvals live and how one is settled, once, everywhere at once.

An approval has an asker, approvers (members, whose every human surface may answer, and peers
without a member), a question with options (none: any text answers it), and a state:
``pending``, then exactly one of ``answered`` (by an approver, or by the policy),
``closed`` (the asker says the prompt moved on: answered at the terminal, or cancelled) or
``expired``. The one ``UPDATE ... WHERE state='pending'`` decides which settlement wins; the
winner then, in this order:

1. wakes every caller waiting on it (``approval_wait``, ``ask``), who get it as their result;
2. pushes an ``approval`` event to the connected peers involved (the web page moves the card);
3. calls ``meshhub_approval_settled`` so each bridge updates the card it posted;
4. sends the asker an ``approval_answer`` message, only when nobody was waiting on it (an
   answer that comes after the asker's call returned still reaches it, in its inbox), and
   never for a tool permission (its relay asks with ``approval_wait``, again after a
   reconnect: a message would only repeat the verdict to the agent).

Expiry and quiet-hour holds are timers, set again from the store when the hub starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub import codec
from meshhub.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

    from .approval_policy import PolicyBook

log = logging.getLogger(__name__)
migrations = Migrations("meshhub.approvals")


@migrations()
def m001_create_approvals(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            message_id TEXT,
            asker TEXT NOT NULL,
            approver TEXT NOT NULL,
            question TEXT NOT NULL,
            options_json TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            answer TEXT,
            reason TEXT,
            answer_message_id TEXT,
            created_at REAL NOT NULL,
            answered_at REAL
        )
        """
    )
    db.execute("CREATE INDEX approvals_approver ON approvals (approver, state)")
    db.execute("CREATE INDEX approvals_asker ON approvals (asker, state)")


@migrations()
def m002_approvers_and_settlements(db: Database) -> None:
    """Several approvers (members or peers), kinds (tool permissions, questions), a short
    reference people can type, who settled it where, expiry and quiet-hour holds."""
    for column in ("kind TEXT NOT NULL DEFAULT 'approval'", "ref TEXT",
                   "approvers_json TEXT NOT NULL DEFAULT '{}'", "answered_by TEXT",
                   "answered_on TEXT", "tool TEXT", "input_preview TEXT", "expires_at REAL",
                   "held_until REAL", "recipients_json TEXT NOT NULL DEFAULT '[]'"):
        db.execute(f"ALTER TABLE approvals ADD COLUMN {column}")
    db.execute("CREATE INDEX approvals_ref ON approvals (ref, state)")
    db.execute("CREATE INDEX approvals_open ON approvals (state, expires_at)")


COLUMNS = ("id", "message_id", "asker", "approver", "question", "options_json", "state",
           "answer", "reason", "answer_message_id", "created_at", "answered_at", "kind", "ref",
           "approvers_json", "answered_by", "answered_on", "tool", "input_preview",
           "expires_at", "held_until", "recipients_json")
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM approvals"


def minutes(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    return f"{max(1, round(seconds / 60))} min" if seconds >= 60 else f"{int(seconds)} s"


class ApprovalBook:
    """A hub's approvals: the store's rows, the callers waiting on them, and their timers."""

    _books: weakref.WeakKeyDictionary[Hub, ApprovalBook] = weakref.WeakKeyDictionary()

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        # set by the actions module: sends a held request's card when its hold ends
        self.release: Callable[[dict[str, Any]], Any] | None = None
        self.policies: PolicyBook | None = None  # the config's [approvals], once read

    @classmethod
    def of(cls, hub: Hub) -> ApprovalBook:
        book = cls._books.get(hub)
        if book is None:
            book = cls._books[hub] = cls(hub)
        return book

    # -- reading ------------------------------------------------------------------------------
    def view(self, row: tuple[Any, ...] | dict[str, Any]) -> dict[str, Any]:
        """The public shape of an approval (docs/protocol.md, "Approvals")."""
        r: dict[str, Any] = (dict.fromkeys(COLUMNS) | row if isinstance(row, dict)
             else dict(zip(COLUMNS, row, strict=True)))
        peers = self.hub.directory.peers

        def name(key: str | None) -> str | None:
            return None if key is None else peers[key].name if key in peers else key

        approvers = self.approver_names(json.loads(r["approvers_json"] or "{}"), r["approver"])
        view = {
            "id": r["id"], "ref": r["ref"], "kind": r["kind"], "message_id": r["message_id"],
            "asker": name(r["asker"]), "asker_key": r["asker"],
            "approver": ", ".join(approvers), "approver_key": r["approver"],
            "approvers": approvers, "question": r["question"],
            "options": json.loads(r["options_json"]), "state": r["state"],
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

    async def row(self, ident: str) -> dict[str, Any] | None:
        """The approval with this id, or the newest pending one with this ref (any case)."""
        wanted = ident.strip().lower()
        found = await self.hub.store.transact(lambda conn: conn.execute(
            f"{_SELECT} WHERE id=? UNION ALL SELECT * FROM ({_SELECT} WHERE ref=? "
            "ORDER BY state='pending' DESC, id DESC LIMIT 1) LIMIT 1",
            (wanted, wanted)).fetchone())
        return None if found is None else dict(zip(COLUMNS, found, strict=True))

    async def get(self, ident: str) -> dict[str, Any]:
        found = await self.row(ident)
        if found is None:
            raise NotFound(f"no approval {ident!r}; `approvals` lists yours")
        return found

    def may_answer(self, r: dict[str, Any], peer: Peer) -> bool:
        """``peer`` is one of the approvers, or a surface of an approving member (never an
        agent session for a tool permission: the agent would approve itself)."""
        if peer.key == r["asker"]:
            return False
        approvers = json.loads(r["approvers_json"] or "{}")
        if peer.key in approvers.get("peers", ()) or peer.key == r["approver"]:
            return True
        if r["kind"] == "permission" and peer.kind == "agent":
            return False
        return peer.member_key is not None and peer.member_key in approvers.get("members", ())

    def involved(self, r: dict[str, Any], peer: Peer) -> bool:
        return peer.key == r["asker"] or self.may_answer(r, peer) or (
            peer.key in json.loads(r["recipients_json"] or "[]"))

    # -- writing ------------------------------------------------------------------------------
    async def insert(self, r: dict[str, Any]) -> None:
        names = ", ".join(r)
        marks = ", ".join("?" for _ in r)
        await self.hub.store.transact(lambda conn: conn.execute(
            f"INSERT INTO approvals ({names}) VALUES ({marks})", tuple(r.values())))

    async def delete(self, approval_id: str) -> None:
        await self.hub.store.transact(lambda conn: conn.execute(
            "DELETE FROM approvals WHERE id=?", (approval_id,)))

    async def update(self, approval_id: str, **values: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in values)
        await self.hub.store.transact(lambda conn: conn.execute(
            f"UPDATE approvals SET {sets} WHERE id=?", (*values.values(), approval_id)))

    async def settle(self, approval_id: str, state: str, *, answer: str | None = None,
                     reason: str | None = None, by: str | None = None,
                     on: str | None = None) -> dict[str, Any] | None:
        """Move a pending approval to ``state``; ``None`` when it was settled already (the
        first settlement wins, whatever surface it came from)."""
        now = time.time()

        def run(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            cur = conn.execute(
                "UPDATE approvals SET state=?, answer=?, reason=?, answered_by=?, "
                "answered_on=?, answered_at=?, held_until=NULL WHERE id=? AND state='pending'",
                (state, answer, reason, by, on, now, approval_id))
            if not cur.rowcount:
                return None
            found: tuple[Any, ...] = conn.execute(f"{_SELECT} WHERE id=?",
                                                  (approval_id,)).fetchone()
            return found

        found = await self.hub.store.transact(run)
        if found is None:
            return None
        timer = self.timers.pop(approval_id, None)
        if timer is not None:
            timer.cancel()
        r = dict(zip(COLUMNS, found, strict=True))
        view = self.view(r)
        waiting = self.waiters.pop(approval_id, [])
        for future in waiting:
            if not future.done():
                future.set_result(view)
        self._announce(r, view)
        message = (await self.hub.store.get_message(r["message_id"])
                   if r["message_id"] else None)
        self.hub.spawn(self.hub.plugins.each("meshhub_approval_settled", hub=self.hub,
                                             approval=view, message=message))
        if state in ("answered", "expired") and not waiting and r["kind"] != "permission":
            # (a tool permission's relay asks with approval_wait, again after a reconnect)
            await self._tell_asker(r, view)
        return view

    def _announce(self, r: dict[str, Any], view: dict[str, Any]) -> None:
        frame = codec.dumps({"type": "event", "event": "approval", "approval": view})
        approvers = json.loads(r["approvers_json"] or "{}")
        keys = {r["asker"], r["approver"], *approvers.get("peers", ()),
                *json.loads(r["recipients_json"] or "[]")}
        members = set(approvers.get("members", ()))
        presence = self.hub.presence
        for peer_key in {*keys, *(p.key for m in members for p in
                                  self.hub.directory.peers_of(m))}:
            for conn in presence.connections.get(peer_key, ()):
                if conn.receive:
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
        try:
            sent = await self.hub.send(
                sender, asker.key, body, kind="approval_answer", priority="now",
                reply_to=r["message_id"],
                data={"approval_id": r["id"], "question": r["question"],
                      "answer": view["answer"], "reason": view["reason"],
                      "state": view["state"], "by": view["answered_by"],
                      "on": view["answered_on"], "ref": r["ref"]})
        except Exception as exc:  # the answer is stored; approval_get shows it
            log.warning("could not tell %s about approval %s: %s", asker.name, r["id"], exc)
            return
        await self.update(r["id"], answer_message_id=sent["id"])

    # -- waiting ------------------------------------------------------------------------------
    def expect(self, approval_id: str) -> asyncio.Future[dict[str, Any]]:
        """A waiter on the approval's settlement, registered now (before its card goes out,
        so even an answer given at once finds someone waiting); :meth:`wait` awaits it."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(approval_id, []).append(future)
        return future

    async def wait(self, r: dict[str, Any], timeout: float,
                   future: asyncio.Future[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The approval once it is settled, or as it is after ``timeout`` seconds."""
        if future is None:
            if r["state"] != "pending" or timeout <= 0:
                return self.view(r)
            future = self.expect(r["id"])
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return self.view(await self.get(r["id"]))
        finally:
            left = [f for f in self.waiters.get(r["id"], []) if f is not future]
            if left:
                self.waiters[r["id"]] = left
            else:
                self.waiters.pop(r["id"], None)

    # -- timers -------------------------------------------------------------------------------
    def schedule(self, r: dict[str, Any]) -> None:
        """Arm the approval's next timer: its hold's end, else its expiry."""
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
            max(0.0, delay), lambda: self.hub.spawn(fire(r["id"])))

    async def _released(self, approval_id: str) -> None:
        self.timers.pop(approval_id, None)
        r = await self.row(approval_id)
        if r is None or r["state"] != "pending" or self.release is None:
            return
        await self.update(approval_id, held_until=None)
        r["held_until"] = None
        await self.release(r)
        self.schedule(r)

    async def _expired(self, approval_id: str) -> None:
        self.timers.pop(approval_id, None)
        await self.settle(approval_id, "expired", on="timer")

    async def load(self) -> None:
        """Arm the timers of every pending approval (the hub restarted)."""
        rows = await self.hub.store.transact(lambda conn: conn.execute(
            f"{_SELECT} WHERE state='pending' AND (expires_at IS NOT NULL OR "
            "held_until IS NOT NULL)").fetchall())
        for found in rows:
            self.schedule(dict(zip(COLUMNS, found, strict=True)))

    def stop(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()


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
