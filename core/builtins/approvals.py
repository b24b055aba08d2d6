"""Approvals and questions: a peer asks a person (or a group) and waits for the first answer,
from whichever surface it comes. Served on every surface like any action; chat connectors show
the options as buttons (see :func:`meshhub.bridge.chat.buttons`).

Three kinds:

* ``approval`` (``approval_request``): approve something, with options (default approve/deny);
* ``permission`` (``permission_request``): a Claude Code session's tool-permission prompt,
  relayed by ``hub mcp``; its approvers come from the member's policy
  (:mod:`.approval_policy`), which may also settle it at once; options allow/deny;
* ``question`` (``ask``): a question, with choices or free text, for a person or a group.

Who answers: a member named (or a group's members) answers from any of its human surfaces (its
terminal, its web page, the chat accounts it linked: :mod:`meshhub.reach`); a peer named that is
not a member's own name (a Telegram person, one agent session) answers itself. An agent session
never answers a tool permission. The first answer wins; every surface's card then shows who
answered where (:mod:`.approval_book`).

The request is a message of kind ``approval`` to every human surface of each approver,
``data`` = ``{"approval_id", "question", "options", "kind", "ref", "tool"}``. The answer reaches
the asker as its waiting call's result, or else as a message of kind ``approval_answer``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.config import ConfigError
from meshhub.errors import Forbidden, InvalidRequest, NotFound, TooLarge
from meshhub.fields import MAX_OPTION, MAX_OPTIONS, MAX_REASON, MAX_TOOL
from meshhub.ids import new_id
from meshhub.reach import human_sessions, surfaces_of
from meshhub.records import Collection, In, Where

from .approval_book import APPROVALS, PARTIES, SETTLED, ApprovalBook, check_ident
from .approval_policy import Policy, PolicyBook
from .sqlite_upgrade_approvals import migrations

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

    from meshhub.hub import Hub
    from meshhub.models import Peer

DEFAULT_OPTIONS = ["approve", "deny"]
PERMISSION_OPTIONS = ["allow", "deny"]
MAX_WAIT = 600.0
MAX_PREVIEW = 2000
MAX_ID = 64
SURFACE_NAMES = {"ws": None, "http": "web"}  # None: the peer's own connector (cli, mcp...)


def policies(hub: Hub) -> PolicyBook:
    """The hub's approval policy, read from its config once."""
    book = ApprovalBook.of(hub)
    if book.policies is None:
        book.policies = PolicyBook(hub.config.section("approvals"))
    return book.policies


def policy_of(hub: Hub, peer: Peer) -> tuple[str, Policy]:
    member = hub.directory.member(peer.member_key)
    name = member.name if member is not None else peer.name
    return name, policies(hub).for_member(name)


def surface_of(ctx: ActionContext) -> str:
    named = SURFACE_NAMES.get(ctx.surface, ctx.surface)
    return named or ctx.peer.connector


# -- who is asked --------------------------------------------------------------------------------
def approvers_for(hub: Hub, to: str, asker: Peer) -> dict[str, list[str]]:
    """``{"members": [...], "peers": [...]}`` for a member's name, a peer's name or key, or
    ``@group``; the asker is never its own approver."""
    directory = hub.directory
    text = to.strip()
    if text.startswith("@"):
        group = text.lstrip("@")
        found = [p for p in directory.peers.values() if p.in_group(group) and p.key != asker.key]
        if asker.kind != "agent":  # a person does not approve their own request
            found = [p for p in found if p.member_key is None or p.member_key != asker.member_key]
        if found:
            members = sorted({p.member_key for p in found if p.member_key is not None})
            peers = sorted(p.key for p in found if p.member_key is None)
            return {"members": members, "peers": peers}
        if group in directory.groups():
            raise NotFound(f"nobody else is in @{group} to answer")
        text = group  # not a group: "@name" names a person
    member = directory.member_named(text)
    if member is not None:
        if member.key == asker.member_key and asker.kind != "agent":
            raise InvalidRequest("ask someone else: you cannot approve your own request")
        return {"members": [member.key], "peers": []}
    peer = directory.find(text)
    if peer is None:
        close = ", ".join(directory.closest_names(text))
        raise NotFound(f"no peer named {to!r} to answer; closest known: {close or 'none'}")
    if peer.key == asker.key:
        raise InvalidRequest("ask someone else: you cannot approve your own request")
    return {"members": [], "peers": [peer.key]}


def recipients_for(hub: Hub, approvers: dict[str, list[str]], asker: Peer,
                   kind: str) -> list[str]:
    """The peers the request's card goes to: every human surface of each approving member
    (agent sessions only for a member that has nothing else, never for a tool permission),
    and each approving peer."""
    directory = hub.directory
    keys: list[str] = []
    for member_key in approvers["members"]:
        member = directory.member(member_key)
        if member is None:
            continue
        human = [p.key for p in (*human_sessions(hub, member), *surfaces_of(hub, member))]
        if not human and kind != "permission":
            human = [p.key for p in directory.peers_of(member_key)]
        keys += [k for k in human if k not in keys and k != asker.key]
    keys += [k for k in approvers["peers"] if k not in keys and k != asker.key]
    if not keys:
        raise NotFound("nobody who may answer can be reached: link a phone (`hub pair "
                       "telegram`) or open the web page (`hub web`)")
    return keys


def quiet_until(hub: Hub, approvers: dict[str, list[str]], now: float) -> float | None:
    """When the approvers' quiet hours end, if every one of them is in quiet hours now (the
    card waits for the first to wake up); ``None`` when someone may be disturbed now."""
    directory = hub.directory
    names = [directory.members[k].name for k in approvers["members"] if k in directory.members]
    names += [directory.peers[k].name for k in approvers["peers"] if k in directory.peers]
    ends = []
    for name in names:
        hours = policies(hub).for_member(name).quiet_hours
        end = hours.ends_after(now) if hours is not None else None
        if end is None:
            return None
        ends.append(end)
    return min(ends, default=None)


def check_options(options: list[str] | None, default: list[str] | None) -> list[str]:
    if options is None:
        return list(default or [])
    choices = [" ".join(o.split()) for o in options]
    if not 1 <= len(choices) <= MAX_OPTIONS or any(not o or len(o) > MAX_OPTION for o in choices):
        raise InvalidRequest(
            f"options are 1 to {MAX_OPTIONS} answers of 1 to {MAX_OPTION} characters")
    if len({o.lower() for o in choices}) != len(choices):
        raise InvalidRequest("options must differ from one another")
    return choices


def card_text(r: dict[str, Any], options: list[str], asker: Peer) -> str:
    """The card's text, as every surface shows it (chat surfaces add the options as
    buttons)."""
    choices = " / ".join(options) or "any text: reply to this message"
    if r["kind"] == "permission":
        preview = f"\n{r['input_preview']}" if r["input_preview"] else ""
        return (f"{asker.name} asks to run {r['tool']}: {r['question']}{preview}\n"
                f"(answer: {choices}; or `/approve {r['ref']}`, `/deny {r['ref']}`)")
    if r["kind"] == "question":
        return f"Question from {asker.name}: {r['question']}\n(answer: {choices})"
    return f"Approval requested: {r['question']}\n(answer: {choices})"


async def open_request(ctx: ActionContext, *, kind: str, question: str, options: list[str],
                       approvers: dict[str, list[str]], expire_after: float,
                       urgent: bool, tool: str | None = None,
                       ref: str | None = None, preview: str | None = None,
                       waiting: bool = False) -> dict[str, Any]:
    """Store a request and send its card (at once, or when quiet hours end). ``waiting``: the
    asker waits for the answer (a waiter is registered before the card goes out, and the view
    carries it as ``_waiter``)."""
    hub, asker = ctx.hub, ctx.peer
    if not question.strip():
        raise InvalidRequest("the question is empty")
    recipients = recipients_for(hub, approvers, asker, kind)
    now = time.time()
    quiet_end = None if urgent else quiet_until(hub, approvers, now)
    r: dict[str, Any] = {
        "id": new_id(), "message_id": None, "asker": asker.key, "approver": recipients[0],
        "question": question, "options": options, "state": "pending",
        "created_at": now, "kind": kind, "ref": ref, "approvers": approvers,
        "tool": tool, "input_preview": preview,
        "expires_at": max(now, quiet_end or now) + expire_after, "held_until": quiet_end,
        "recipients": recipients,
    }
    body = card_text(r, options, asker)
    if len(body.encode()) > hub.config.max_body_bytes:  # checked before anything is stored
        raise TooLarge(f"the question is too long; the limit is {hub.config.max_body_bytes} "
                       "bytes")
    hub.limits.can_send(asker, len(body.encode()))  # no row for a send refused
    book = ApprovalBook.of(hub)
    waiter = book.expect(r["id"], asker.key) if waiting else None
    if quiet_end is None:
        # the row and its card are queued in the same loop turn: one commit, then the push
        r["message_id"] = new_id()
        # shielded: a caller that goes away meanwhile leaves both written, or neither
        stored, sent = await asyncio.shield(asyncio.gather(
            book.insert(r), send_card(hub, r), return_exceptions=True))
        failed = sent if isinstance(sent, BaseException) else stored
        if isinstance(failed, BaseException):
            book.waiters.pop(r["id"], None)
            if not isinstance(stored, BaseException):
                await book.delete(r)  # no card went out: no request either
            raise failed
    else:
        await book.insert(r)
    book.schedule(r)
    view = book.view(r)
    if waiter is not None:
        view["_waiter"] = waiter
    return view


async def send_card(hub: Hub, r: dict[str, Any]) -> None:
    """Send the request's card to its recipients, as ``r["message_id"]`` when it has one
    (else a new id, recorded with the card)."""
    asker = hub.directory.peers.get(r["asker"])
    if asker is None:
        return
    options = r["options"]
    recipients = [k for k in r["recipients"] if k in hub.directory.peers]
    data: dict[str, Any] = {"approval_id": r["id"], "question": r["question"],
                            "options": options, "kind": r["kind"]}
    if r["ref"]:
        data["ref"] = r["ref"]
    if r["tool"]:
        data["tool"] = r["tool"]
    body = card_text(r, options, asker)

    def send(chosen: str) -> Awaitable[dict[str, Any]]:
        return hub.send(asker, recipients, body, kind="approval", priority="now", data=data,
                        message_id=chosen)

    if r["message_id"] is not None:
        await send(r["message_id"])
        return
    sent = await ApprovalBook.of(hub).send_recorded(r["id"], "message_id", send)
    r["message_id"] = sent["id"]


def _ttl(expires_in: float | None, policy: Policy) -> float:
    if expires_in is None:
        return policy.expire_after
    if not 0 < expires_in <= 30 * 86400:
        raise InvalidRequest("expires_in is 1 second to 30 days")
    return float(expires_in)


# -- actions -------------------------------------------------------------------------------------
@action()
async def approval_request(
    ctx: ActionContext,
    to: Annotated[str, "who must approve: a person's name, a peer, or @group"],
    question: Annotated[str, "what to approve, e.g. 'deploy 1.4 to production?'"],
    options: Annotated[list[str] | None, "the possible answers (default: approve, deny)"] = None,
    expires_in: Annotated[float | None, "seconds it waits for an answer (default: the "
                          "policy's, 1 h)"] = None,
) -> dict[str, Any]:
    """Ask someone to approve something; the first answer from any of their surfaces comes
    back to you as a message of kind ``approval_answer`` (and in ``approvals``)."""
    _name, policy = policy_of(ctx.hub, ctx.peer)
    return await open_request(
        ctx, kind="approval", question=question,
        options=check_options(options, DEFAULT_OPTIONS),
        approvers=approvers_for(ctx.hub, to, ctx.peer),
        expire_after=_ttl(expires_in, policy), urgent=True)


@action()
async def permission_request(
    ctx: ActionContext,
    tool: Annotated[str, "the tool asking for permission, e.g. Bash",
                    Field(max_length=MAX_TOOL)],
    description: Annotated[str, "what the tool call does", Field(max_length=MAX_PREVIEW)] = "",
    input_preview: Annotated[str, "the start of the tool's input",
                             Field(max_length=MAX_PREVIEW)] = "",
    request_id: Annotated[str | None, "the agent's own id of the prompt (Claude Code's five "
                          "letters)", Field(max_length=16)] = None,
) -> dict[str, Any]:
    """Relay an agent session's tool-permission prompt to its approvers (``hub mcp`` calls
    this); the policy may settle it at once (auto-allow, auto-deny)."""
    hub = ctx.hub
    member, policy = policy_of(hub, ctx.peer)
    ref = request_id.strip().lower() if request_id and request_id.strip() else None
    automatic = policy.automatic(tool)
    if automatic is not None:  # settled without asking anyone
        book = ApprovalBook.of(hub)
        now = time.time()
        r: dict[str, Any] = {
            "id": new_id(), "asker": ctx.peer.key, "approver": ctx.peer.key,
            "question": description or tool, "options": list(PERMISSION_OPTIONS),
            "state": "answered", "answer": automatic, "created_at": now, "answered_at": now,
            "kind": "permission", "ref": ref, "answered_on": "policy", "tool": tool,
            "input_preview": input_preview}
        await book.insert(r)
        await hub.audit.append("approval_answered", None, subject=r["id"], kind="permission",
                               option=PERMISSION_OPTIONS.index(automatic), answer=automatic,
                               on="policy", tool=tool, asker=ctx.peer.name)
        return book.view(r)
    who = policy.approver_for(tool, ctx.peer.name)
    if who is not None:
        approvers = approvers_for(hub, who, ctx.peer)
    elif ctx.peer.member_key is not None:
        approvers = {"members": [ctx.peer.member_key], "peers": []}
    else:
        raise Forbidden("only a member's session relays tool permissions")
    return await open_request(
        ctx, kind="permission", question=description or f"use {tool}",
        options=list(PERMISSION_OPTIONS), approvers=approvers,
        expire_after=policy.expire_after, urgent=policy.is_urgent(tool),
        tool=tool, ref=ref, preview=input_preview or None)


@action(concurrent=True)
async def ask(
    ctx: ActionContext,
    to: Annotated[str, "who answers: a person's name, a peer, or @group (first answer wins)"],
    question: Annotated[str, "the question"],
    choices: Annotated[list[str] | None, "the possible answers; none: any text answers"] = None,
    expires_in: Annotated[float | None, "seconds the question stays open (default: the "
                          "policy's, 1 h)"] = None,
    wait: Annotated[float, "seconds to wait here for the answer (0-600); then it returns "
                    "state pending and its id, to poll with approval_wait"] = 0.0,
    urgent: Annotated[bool, "deliver even during the person's quiet hours"] = False,
) -> dict[str, Any]:
    """Ask a person or a group a question and (with ``wait``) wait for the answer; a later
    answer reaches you as a message of kind ``approval_answer``."""
    if not 0 <= wait <= MAX_WAIT:
        raise InvalidRequest(f"wait is 0 to {MAX_WAIT:.0f} seconds")
    _name, policy = policy_of(ctx.hub, ctx.peer)
    opened = await open_request(
        ctx, kind="question", question=question, options=check_options(choices, None),
        approvers=approvers_for(ctx.hub, to, ctx.peer), expire_after=_ttl(expires_in, policy),
        urgent=urgent, waiting=wait > 0)
    waiter = opened.pop("_waiter", None)
    if waiter is None:
        return opened
    return await ApprovalBook.of(ctx.hub).wait(opened, wait, ctx.peer.key, waiter)


@action()
async def approval_answer(
    ctx: ActionContext,
    id: Annotated[str, "the approval's id, or its short reference (any case)",
                  Field(max_length=MAX_ID)],
    answer: Annotated[str, "one of the request's options (e.g. approve or deny), or any "
                      "text for a question without choices", Field(max_length=MAX_REASON)],
    reason: Annotated[str | None, "why, shown to the asker", Field(max_length=MAX_REASON)]
    = None,
) -> dict[str, Any]:
    """Answer a request addressed to you (or to your group); the first answer wins and every
    surface showing the request is told."""
    book = ApprovalBook.of(ctx.hub)
    r = await book.get(check_ident(id), ctx.peer)
    if not book.may_answer(r, ctx.peer):
        if ctx.peer.kind == "agent" and r["kind"] == "permission":
            raise Forbidden("an agent session cannot answer a tool permission; a person does")
        if book.involved(r, ctx.peer):
            raise Forbidden(f"only {book.view(r)['approver']} may answer this request")
        raise Forbidden("you are not one of the people asked to answer this request")
    if r["state"] != "pending":
        raise InvalidRequest(f"already answered: {book.view(r)['label']}", code="exists")
    options = r["options"]
    text = " ".join(answer.split())
    chosen = next((o for o in options if o.lower() == text.lower()), None) if options else text
    if not chosen:
        raise InvalidRequest(f"answer one of: {', '.join(options)}" if options
                             else "the answer is empty")
    ctx.hub.limits.can_send(ctx.peer, len(r["question"]) + len(chosen) + len(reason or ""))
    view = await book.settle(r["id"], "answered", answer=chosen, reason=reason,
                             by=ctx.peer.key, on=surface_of(ctx))
    if view is None:
        raise InvalidRequest(f"already answered: {book.view(await book.get(r['id']))['label']}",
                             code="exists")
    # options are the asker's words (a tool permission's allow/deny are the hub's): the row
    # names the chosen one by its place; a free-text answer is content, never logged
    permission = r["kind"] == "permission"
    await ctx.hub.audit.append("approval_answered", ctx.peer, subject=r["id"], kind=r["kind"],
                               option=options.index(chosen) if options else None,
                               answer=chosen if permission else None, on=surface_of(ctx))
    return view


@action()
async def approval_close(
    ctx: ActionContext,
    id: Annotated[str, "the approval's id or short reference", Field(max_length=MAX_ID)],
    why: Annotated[Literal["terminal", "cancelled"], "terminal: the prompt was answered where "
                   "it was asked; cancelled: it is no longer needed"] = "terminal",
) -> dict[str, Any]:
    """Close a request you asked without an answer (its cards then say so)."""
    book = ApprovalBook.of(ctx.hub)
    r = await book.get(check_ident(id), ctx.peer)
    if r["asker"] != ctx.peer.key:
        raise NotFound(f"no approval {id!r} that you asked")
    view = await book.settle(r["id"], "closed", on=why)
    return view if view is not None else book.view(await book.get(r["id"]))


@action(read_only=True, concurrent=True)
async def approval_wait(
    ctx: ActionContext,
    id: Annotated[str, "the approval's id or short reference", Field(max_length=MAX_ID)],
    timeout: Annotated[float, "seconds to wait at most (0-600)"] = 30.0,
) -> dict[str, Any]:
    """Wait until a request you asked or must answer is settled (or ``timeout`` passes)."""
    if not 0 <= timeout <= MAX_WAIT:
        raise InvalidRequest(f"timeout is 0 to {MAX_WAIT:.0f} seconds")
    book = ApprovalBook.of(ctx.hub)
    r = await _visible(ctx, id)
    return await book.wait(r, timeout, ctx.peer.key)


async def _visible(ctx: ActionContext, ident: str) -> dict[str, Any]:
    book = ApprovalBook.of(ctx.hub)
    r = await book.row(check_ident(ident), ctx.peer)
    # the owner reads any request, from its terminal or web page: not from an agent session
    owner = ctx.is_admin and ctx.peer.kind != "agent"
    if r is None or not (book.involved(r, ctx.peer) or owner):
        raise NotFound(f"no approval {ident!r} that you asked or must answer")
    return r


@action(read_only=True)
async def approval_get(
    ctx: ActionContext,
    id: Annotated[str, "the approval's id or short reference", Field(max_length=MAX_ID)],
) -> dict[str, Any]:
    """One request you asked or may answer: question, options, state, answer, who and where."""
    return ApprovalBook.of(ctx.hub).view(await _visible(ctx, id))


@action(read_only=True)
async def approvals(
    ctx: ActionContext,
    role: Annotated[Literal["any", "asker", "approver"],
                    "requests you asked, may answer, or both"] = "any",
    state: Annotated[Literal["pending", "answered", "settled", "all"],
                     "which ones (settled: answered, closed or expired)"] = "pending",
    limit: Annotated[int, "at most this many (1-500), newest first"] = 50,
) -> list[dict[str, Any]]:
    """Requests you asked or may answer (from any of your surfaces)."""
    if not 1 <= limit <= 500:
        raise InvalidRequest("limit must be between 1 and 500")
    me = ctx.peer
    book = ApprovalBook.of(ctx.hub)
    where: Where = {"settled": {"state": In(SETTLED)}, "all": {}}.get(state, {"state": state})
    if role == "asker":
        page = await ctx.hub.records.find("approvals", where | {"asker": me.key}, order="-key",
                                          limit=limit)
        return [book.view(r.value) for r in page.records]
    # the requests naming me or my member; may_answer() then decides, as it does for an answer
    # (agent sessions, old requests with one approver)
    keep = {"any": lambda r: r["asker"] == me.key or book.may_answer(r, me),
            "approver": lambda r: book.may_answer(r, me)}[role]
    found = await _naming(ctx.hub, me, where, mine=role == "any", enough=limit * 4)
    return [book.view(r) for r in found if keep(r)][:limit]


async def _naming(hub: Hub, me: Peer, where: Where, *, mine: bool,
                  enough: int) -> list[dict[str, Any]]:
    """The newest ``enough`` approvals matching ``where`` that name ``me`` (or its member) as
    an approver, or (``mine``) as the asker: read from ``approval_parties``, newest first."""
    parties = [f"peer:{me.key}", *([f"member:{me.member_key}"] if me.member_key else []),
               *([f"asker:{me.key}"] if mine else [])]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    cursor: str | None = None
    while len(out) < enough:
        page = await hub.records.find("approval_parties", {"party": In(tuple(parties))},
                                      order="-approval", limit=500, after=cursor)
        ids = tuple(dict.fromkeys(r.value["approval"] for r in page.records
                                  if r.value["approval"] not in seen))
        seen.update(ids)
        if ids:
            found = await hub.records.find("approvals", where | {"key": In(ids)},
                                           order="-key", limit=len(ids))
            out += [r.value for r in found.records]
        if page.cursor is None:
            break
        cursor = page.cursor
    return out[:enough]


@action("approvals_policy", read_only=True)
async def approvals_policy(
    ctx: ActionContext,
    member: Annotated[str | None, "whose policy (the hub's owner only; default: yours)"] = None,
) -> dict[str, Any]:
    """The approval policy in force for you: approvers, auto-allowed and auto-denied tools,
    quiet hours, expiry (from ``[approvals]`` in the hub's config)."""
    hub = ctx.hub
    if member is not None and not ctx.is_admin:
        raise Forbidden("only the hub's owner reads another member's policy")
    if member is not None:
        found = hub.directory.member_named(member)
        if found is None:
            raise NotFound(f"no member named {member!r}")
        return policies(hub).for_member(found.name).public(found.name)
    name, policy = policy_of(hub, ctx.peer)
    return policy.public(name)


ALL: list[Action] = [approval_request, permission_request, ask, approval_answer,
                     approval_close, approval_wait, approval_get, approvals, approvals_policy]


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(APPROVALS)
    register(PARTIES)


@hookimpl
def meshhub_register_migrations(register: Callable[[Migrations], None]) -> None:
    register(migrations)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)


@hookimpl
async def meshhub_startup(hub: Hub) -> None:
    try:
        policies(hub)
    except ConfigError as exc:
        raise ConfigError(f"the approval policy cannot be used: {exc}") from None
    book = ApprovalBook.of(hub)

    async def release(r: dict[str, Any]) -> None:
        await send_card(hub, r)

    book.release = release
    await book.load()


@hookimpl
def meshhub_shutdown(hub: Hub) -> None:
    ApprovalBook.of(hub).stop()
