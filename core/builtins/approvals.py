"""Approval requests: a peer asks one named peer to approve something; the answer (with an
optional reason) comes back to the asker. Served on every surface like any action; chat
connectors show the options as buttons (see :func:`meshhub.bridge.chat.buttons`).

A request is a message of kind ``approval`` to the approver, ``data`` =
``{"approval_id", "question", "options"}``. The answer is a message of kind ``approval_answer``
from the approver to the asker, replying to the request, ``data`` =
``{"approval_id", "question", "answer", "reason"}``. The state lives in this plugin's own
tables (migration set ``meshhub.approvals``); an approval is answered once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import InvalidRequest, NotFound, TooLarge
from meshhub.fields import MAX_OPTION, MAX_OPTIONS, MAX_REASON
from meshhub.ids import new_id

DEFAULT_OPTIONS = ["approve", "deny"]

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


_COLUMNS = ("id, message_id, asker, approver, question, options_json, state, answer, reason, "
            "answer_message_id, created_at, answered_at")


def _row(ctx: ActionContext, row: tuple[Any, ...]) -> dict[str, Any]:
    peers = ctx.hub.directory.peers

    def name(key: str) -> str:
        return peers[key].name if key in peers else key

    return {
        "id": row[0], "message_id": row[1], "asker": name(row[2]), "asker_key": row[2],
        "approver": name(row[3]), "approver_key": row[3], "question": row[4],
        "options": json.loads(row[5]), "state": row[6], "answer": row[7], "reason": row[8],
        "answer_message_id": row[9], "created_at": row[10], "answered_at": row[11],
    }


async def _load(ctx: ActionContext, approval_id: str) -> dict[str, Any]:
    row = await ctx.hub.store.transact(lambda conn: conn.execute(
        f"SELECT {_COLUMNS} FROM approvals WHERE id=?", (approval_id,)).fetchone())
    if row is None or ctx.peer.key not in (row[2], row[3]) and not ctx.is_admin:
        raise NotFound(f"no approval {approval_id} that you asked or must answer")
    return _row(ctx, row)


@action()
async def approval_request(
    ctx: ActionContext,
    to: Annotated[str, "the one peer (name or key) who must approve"],
    question: Annotated[str, "what to approve, e.g. 'deploy 1.4 to production?'"],
    options: Annotated[list[str] | None, "the possible answers (default: approve, deny)"] = None,
) -> dict[str, Any]:
    """Ask a peer to approve something; their answer comes back to you as a message of kind
    ``approval_answer`` (and in ``approvals``)."""
    approver = ctx.hub.directory.find(to.lstrip("@"))
    if approver is None:
        close = ", ".join(ctx.hub.directory.closest_names(to.lstrip("@")))
        raise NotFound(f"no peer named {to!r} to approve; closest known: {close or 'none'}")
    if approver.key == ctx.peer.key:
        raise InvalidRequest("ask someone else: you cannot approve your own request")
    if not question.strip():
        raise InvalidRequest("the question is empty")
    choices = [" ".join(o.split()) for o in (options or DEFAULT_OPTIONS)]
    if not 1 <= len(choices) <= MAX_OPTIONS or any(
            not o or len(o) > MAX_OPTION for o in choices):
        raise InvalidRequest(
            f"options are 1 to {MAX_OPTIONS} answers of 1 to {MAX_OPTION} characters")
    if len({o.lower() for o in choices}) != len(choices):
        raise InvalidRequest("options must differ from one another")
    body = f"Approval requested: {question}\n(answer: {' / '.join(choices)})"
    if len(body.encode()) > ctx.hub.config.max_body_bytes:  # checked before anything is stored
        raise TooLarge(f"the question is too long; the limit is "
                       f"{ctx.hub.config.max_body_bytes} bytes")
    ctx.hub.limits.can_send(ctx.peer, len(body.encode()))  # no row for a send refused
    approval_id = new_id()
    now = time.time()
    await ctx.hub.store.transact(lambda conn: conn.execute(
        "INSERT INTO approvals (id, asker, approver, question, options_json, created_at) "
        "VALUES (?,?,?,?,?,?)",
        (approval_id, ctx.peer.key, approver.key, question, json.dumps(choices), now)))
    sent = await ctx.hub.send(
        ctx.peer, approver.key, body, kind="approval", priority="now",
        data={"approval_id": approval_id, "question": question, "options": choices},
    )
    await ctx.hub.store.transact(lambda conn: conn.execute(
        "UPDATE approvals SET message_id=? WHERE id=?", (sent["id"], approval_id)))
    return {"id": approval_id, "message_id": sent["id"], "approver": approver.name,
            "options": choices, "state": "pending"}


@action()
async def approval_answer(
    ctx: ActionContext,
    id: Annotated[str, "the approval's id"],
    answer: Annotated[str, "one of the request's options (e.g. approve or deny)"],
    reason: Annotated[str | None, "why, shown to the asker", Field(max_length=MAX_REASON)]
    = None,
) -> dict[str, Any]:
    """Answer an approval request addressed to you; the asker is told at once."""
    current = await _load(ctx, id)
    if current["approver_key"] != ctx.peer.key:
        raise InvalidRequest(f"approval {id} is for {current['approver']} to answer, not you")
    if current["state"] != "pending":
        raise InvalidRequest(
            f"approval {id} was already answered: {current['answer']}", code="exists")
    chosen = next((o for o in current["options"] if o.lower() == answer.strip().lower()), None)
    if chosen is None:
        raise InvalidRequest(f"answer one of: {', '.join(current['options'])}")
    because = f"\nReason: {reason}" if reason else ""
    body = f"{ctx.peer.name} answered **{chosen}** to: {current['question']}{because}"
    ctx.hub.limits.can_send(ctx.peer, len(body.encode()))  # not answered by a refused send
    now = time.time()

    def claim(conn: sqlite3.Connection) -> bool:
        cur = conn.execute(
            "UPDATE approvals SET state='answered', answer=?, reason=?, answered_at=? "
            "WHERE id=? AND state='pending'", (chosen, reason, now, id))
        return cur.rowcount > 0

    if not await ctx.hub.store.transact(claim):
        raise InvalidRequest(f"approval {id} was already answered", code="exists")
    asker = ctx.hub.directory.peers.get(current["asker_key"])
    answer_id = None
    if asker is not None:
        sent = await ctx.hub.send(
            ctx.peer, asker.key, body, kind="approval_answer", priority="now",
            reply_to=current["message_id"],
            data={"approval_id": id, "question": current["question"], "answer": chosen,
                  "reason": reason},
        )
        answer_id = sent["id"]
        await ctx.hub.store.transact(lambda conn: conn.execute(
            "UPDATE approvals SET answer_message_id=? WHERE id=?", (answer_id, id)))
    current.update(state="answered", answer=chosen, reason=reason, answered_at=now,
                   answer_message_id=answer_id)
    return current


@action(read_only=True)
async def approval_get(
    ctx: ActionContext, id: Annotated[str, "the approval's id"]
) -> dict[str, Any]:
    """One approval you asked or must answer: question, options, state, answer, reason."""
    return await _load(ctx, id)


@action(read_only=True)
async def approvals(
    ctx: ActionContext,
    role: Annotated[Literal["any", "asker", "approver"],
                    "approvals you asked, must answer, or both"] = "any",
    state: Annotated[Literal["pending", "answered", "all"], "which ones"] = "pending",
    limit: Annotated[int, "at most this many (1-500), newest first"] = 50,
) -> list[dict[str, Any]]:
    """Approval requests you asked or must answer."""
    if not 1 <= limit <= 500:
        raise InvalidRequest("limit must be between 1 and 500")
    me = ctx.peer.key
    where = {"any": "(asker=? OR approver=?)", "asker": "asker=?", "approver": "approver=?"}[role]
    args: list[Any] = [me, me] if role == "any" else [me]
    if state != "all":
        where += " AND state=?"
        args.append(state)
    rows = await ctx.hub.store.transact(lambda conn: conn.execute(
        f"SELECT {_COLUMNS} FROM approvals WHERE {where} ORDER BY id DESC LIMIT ?",
        (*args, limit)).fetchall())
    return [_row(ctx, r) for r in rows]


ALL: list[Action] = [approval_request, approval_answer, approval_get, approvals]


@hookimpl
def meshhub_register_migrations(register: Callable[[Migrations], None]) -> None:
    register(migrations)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)
