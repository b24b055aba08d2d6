"""Proposals and votes: a peer puts a question to an electorate (a #conversation's members, a
@group, or a list of peers), each elector votes approve or reject with a reason, and the
proposal resolves itself: ``approved`` when the approvals reach its threshold, ``rejected`` when
the rejections leave the threshold out of reach, ``expired`` at its deadline.

The actions are ``propose``, ``vote``, ``proposals`` and ``proposal_get``. The proposal reaches
the electorate as a message of kind ``proposal`` (``data``: ``proposal_id``, ``title``,
``threshold``, ``deadline``, ``options``), which chat surfaces show with Approve/Reject buttons
(:func:`meshhub.bridge.chat.buttons`); the result reaches the proposer and the electorate as a
message of kind ``proposal_result``, and the proposal's cards show it in place of their buttons.
The proposer is not an elector: proposing is its vote. Voting, resolving and the deadline are in
:mod:`.proposal_book`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden, InvalidRequest, NotFound
from meshhub.fields import MAX_NAMES, MAX_REASON
from meshhub.ids import new_id
from meshhub.records import Collection, Conflict, Record
from meshhub.report import ReportSection, report_text
from meshhub.routing import refuse_archived, resolve_token, split_targets

from .coordination import member_conversation, notify, peer_name
from .proposal_book import ELECTORS, PROPOSALS, VOTES, ProposalBook, outcome, tally
from .report_window import window_lines
from .search_actions import parse_when

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

MAX_TITLE = 200
MAX_DESCRIPTION = 4000
MAX_TARGET = 200
MAX_LIST = 200
MAX_AHEAD = 366 * 86400.0  # the furthest a deadline may be: a year from now


def deadline_of(text: str | float | None, now: float) -> float | None:
    """A deadline as epoch seconds: a duration from now (``2h``), epoch seconds or an ISO time
    (read as ``search``'s ``since`` is, where a duration means that long ago); in the future
    and at most a year ahead."""
    if text is None or text == "":
        return None
    try:
        deadline = parse_when(text, now, ahead=True)
    except InvalidRequest as unread:
        raise InvalidRequest(f"deadline: {unread}") from None
    if deadline <= now:
        raise InvalidRequest(f"deadline: {text!r} is not in the future")
    if deadline > now + MAX_AHEAD:
        raise InvalidRequest(f"deadline: {text!r} is more than a year ahead")
    return deadline


async def electorate_of(ctx: ActionContext, to: list[str]) -> list[str]:
    """The keys of everyone the targets reach (the proposer left out). A #conversation counts
    its members, and only a member (or the hub's owner) may put a proposal to them; nobody
    joins anything by proposing."""
    keys: list[str] = []
    for token in to:
        if token.startswith("#"):
            conv = member_conversation(ctx, token, "proposals")
            refuse_archived(ctx.hub, conv.name)
            found = sorted(conv.members)
        else:
            found, _ = await resolve_token(ctx.hub, token, ctx.peer)
        keys += [k for k in found if k != ctx.peer.key and k not in keys]
    if not keys:
        raise InvalidRequest("to: the electorate is empty; name peers, a @group or a "
                             "#conversation that has members besides you")
    return keys


def may_see(ctx: ActionContext, doc: dict[str, Any]) -> bool:
    key = ctx.peer.key
    return ctx.is_admin or key == doc["proposer"] or key in doc["electorate"]


def view(hub: Hub, doc: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a proposal: names for keys, the tallies, each vote with its
    reason."""
    votes = [{"voter": peer_name(hub, k), "vote": v["vote"], "reason": v["reason"],
              "at": v["at"]} for k, v in doc["votes"].items()]
    return {"id": doc["id"], "title": doc["title"], "description": doc["description"],
            "proposer": peer_name(hub, doc["proposer"]),
            "electorate": [peer_name(hub, k) for k in doc["electorate"]],
            "threshold": doc["threshold"], "deadline": doc["deadline"],
            "conversation": doc["conversation"], "state": doc["state"],
            "tally": tally(doc), "votes": votes, "opened_at": doc["opened_at"],
            "resolved_at": doc["resolved_at"], "message_id": doc["message_id"]}


async def _visible(ctx: ActionContext, proposal_id: str) -> dict[str, Any]:
    found = await ctx.hub.records.get(PROPOSALS.name, proposal_id)
    if found is None or not may_see(ctx, found.value):
        raise NotFound(f"no proposal {proposal_id!r} that you made or may vote on; "
                       "`proposals` lists yours")
    return found.value


@action()
async def propose(
    ctx: ActionContext,
    title: Annotated[str, "what is proposed, in one line", Field(max_length=MAX_TITLE)],
    to: Annotated[list[str], "the electorate: a #conversation, a @group or peers' names",
                  Field(min_length=1, max_length=MAX_NAMES)],
    threshold: Annotated[int, "approvals needed (1 to the electorate's size)"],
    description: Annotated[str, "details", Field(max_length=MAX_DESCRIPTION)] = "",
    deadline: Annotated[str | None, "when it expires: a duration from now like 2h, epoch "
                        "seconds or an ISO time", Field(max_length=64)] = None,
    conversation: Annotated[str | None, "the #conversation it belongs to (default: `to` when "
                            "that is one #conversation)", Field(max_length=MAX_TARGET)] = None,
) -> dict[str, Any]:
    """Put a proposal to a vote. Anyone may propose to peers and groups; to a #conversation
    (as ``to`` or ``conversation``), its members and the hub's owner may. The electorate
    (everyone ``to`` reaches, you left out) gets it as a message of kind ``proposal`` and
    votes with ``vote``. Nothing is saved, and nobody joins anything, when it is refused."""
    if not title.strip():
        raise InvalidRequest("title: say what is proposed")
    now = time.time()
    ends = deadline_of(deadline, now)
    targets = [t for item in to for t in split_targets(item)]
    electorate = await electorate_of(ctx, targets)
    if not 1 <= threshold <= len(electorate):
        raise InvalidRequest(f"threshold: 1 to {len(electorate)} (the electorate's size), "
                             f"not {threshold}")
    if conversation is None and len(targets) == 1 and targets[0].startswith("#"):
        conversation = targets[0]
    if conversation is not None:
        conversation = "#" + member_conversation(ctx, conversation, "proposals").name
    doc: dict[str, Any] = {
        "id": new_id(), "title": " ".join(title.split()), "description": description,
        "proposer": ctx.peer.key, "electorate": electorate, "threshold": threshold,
        "deadline": ends, "conversation": conversation, "state": "open", "votes": {},
        "opened_at": now, "resolved_at": None, "message_id": new_id()}
    body = (f"{ctx.peer.name} proposes: {doc['title']}\n{description}\n"
            f"({threshold} approval{'s' if threshold > 1 else ''} needed; vote approve or "
            f"reject: `vote {doc['id']} approve`)")
    ctx.hub.limits.can_send(ctx.peer, len(body.encode()))
    await ctx.hub.records.create(PROPOSALS.name, doc["id"], doc)
    for key in electorate:
        await ctx.hub.records.put(ELECTORS.name, f"{doc['id']}:{key}",
                                  {"elector": key, "proposal": doc["id"], "opened_at": now})
    ProposalBook.of(ctx.hub).arm(doc)
    data = {"proposal_id": doc["id"], "title": doc["title"], "threshold": threshold,
            "deadline": ends, "options": list(VOTES)}
    if await notify(ctx.hub, ctx.peer, electorate, body, kind="proposal", data=data,
                    message_id=doc["message_id"]) is None:
        doc = await _without_card(ctx.hub, doc["id"]) or doc
    return view(ctx.hub, doc)


async def _without_card(hub: Hub, proposal_id: str) -> dict[str, Any] | None:
    """Record that a proposal's card was not sent (the proposal stands; ``proposals`` lists
    it for its electorate), so its result is not sent as a reply to a missing card."""
    record = await hub.records.modify(PROPOSALS.name, proposal_id,
                                      lambda doc: None if doc is None
                                      else doc | {"message_id": None})
    return record.value if record is not None else None


@action()
async def vote(
    ctx: ActionContext,
    id: Annotated[str, "the proposal's id", Field(max_length=64)],
    vote: Annotated[Literal["approve", "reject"], "your vote"],
    reason: Annotated[str, "why", Field(max_length=MAX_REASON)] = "",
) -> dict[str, Any]:
    """Vote on an open proposal; only its electorate may. A second vote replaces your first
    while the proposal is open (``changed_from`` says what it was). The vote that reaches the
    threshold, or makes it unreachable, resolves the proposal for everyone. A proposal you
    may not see reads as absent (``not_found``), as in ``proposal_get``."""
    me = ctx.peer.key
    if me not in (await _visible(ctx, id))["electorate"]:
        raise Forbidden(f"only the electorate of proposal {id} may vote on it")
    previous: dict[str, Any] | None = None
    counted = closed_now = False

    def cast(found: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal previous, counted, closed_now  # of the last attempt: the one written
        counted = found is not None and found["state"] == "open"
        if not counted or found is None:
            return None
        previous = found["votes"].get(me)
        found["votes"][me] = {"vote": vote, "reason": reason, "at": time.time()}
        result = outcome(found)
        closed_now = result is not None
        if result is not None:
            found |= {"state": result, "resolved_at": time.time()}
        return found

    record = await ctx.hub.records.modify(PROPOSALS.name, id, cast)
    if record is None:
        raise NotFound(f"proposal {id} is gone")
    if not counted:
        raise Conflict(f"proposal {id} is already {record.value['state']}; votes are closed",
                       current=record)
    if closed_now:  # told and audited even if the voter's call is cancelled meanwhile
        await asyncio.shield(ctx.hub.spawn(ProposalBook.of(ctx.hub).resolved(record.value,
                                                                             ctx.peer)))
    out = view(ctx.hub, record.value)
    out["changed_from"] = previous["vote"] if previous is not None else None
    return out


@action(read_only=True)
async def proposals(
    ctx: ActionContext,
    state: Annotated[Literal["open", "approved", "rejected", "expired"] | None,
                     "only proposals in this state"] = None,
    mine: Annotated[bool, "only those you proposed"] = False,
) -> list[dict[str, Any]]:
    """The proposals you made or may vote on (all of them for the hub's owner), newest first,
    at most 200."""
    where: dict[str, Any] = {"state": state} if state is not None else {}
    if ctx.is_admin and not mine:
        found = (await ctx.hub.records.find(PROPOSALS.name, where, order="-opened_at",
                                            limit=MAX_LIST)).records
    else:
        found = (await ctx.hub.records.find(PROPOSALS.name, {**where, "proposer": ctx.peer.key},
                                            order="-opened_at", limit=MAX_LIST)).records
        if not mine:
            found += await _put_to(ctx.hub, ctx.peer.key, state)
    found.sort(key=lambda r: (r.value["opened_at"], r.key), reverse=True)
    return [view(ctx.hub, r.value) for r in found[:MAX_LIST]]


async def _put_to(hub: Hub, elector: str, state: str | None) -> list[Record]:
    """The newest proposals (at most 200) put to ``elector``, in ``state`` if given."""
    out: list[Record] = []
    cursor: str | None = None
    while len(out) < MAX_LIST:
        page = await hub.records.find(ELECTORS.name, {"elector": elector}, order="-opened_at",
                                      limit=MAX_LIST, after=cursor)
        for entry in page.records:
            found = await hub.records.get(PROPOSALS.name, entry.value["proposal"])
            if found is not None and state in (None, found.value["state"]):
                out.append(found)
        if page.cursor is None:
            return out
        cursor = page.cursor
    return out[:MAX_LIST]


@action(read_only=True)
async def proposal_get(
    ctx: ActionContext, id: Annotated[str, "the proposal's id", Field(max_length=64)]
) -> dict[str, Any]:
    """A proposal you made or may vote on (any, for the hub's owner): its tallies and every
    vote with the voter's name and reason."""
    return view(ctx.hub, await _visible(ctx, id))


async def report_section(hub: Hub, viewer: Peer, since: float,
                         until: float) -> ReportSection:
    """Proposals opened and resolved in the window, those ``viewer`` proposed or could vote
    on."""
    def seen(record: Record) -> bool:
        return viewer.key == record.value["proposer"] or viewer.key in record.value["electorate"]

    def opened(record: Record) -> str:
        doc = record.value
        return (f"- Opened by {report_text(peer_name(hub, doc['proposer']))}: "
                f"{report_text(doc['title'])} ({doc['threshold']} approvals needed)")

    def resolved(record: Record) -> str:
        doc, counts = record.value, tally(record.value)
        return (f"- {doc['state'].capitalize()}: {report_text(doc['title'])} "
                f"({counts['approve']} approve, {counts['reject']} reject)")

    lines = await window_lines(hub, PROPOSALS.name, {}, since=since, until=until, line=opened,
                               visible=seen, field="opened_at")
    lines += await window_lines(hub, PROPOSALS.name, {}, since=since, until=until,
                                line=resolved, visible=seen, field="resolved_at")
    return ReportSection("Proposals", lines, order=50)


@hookimpl
def meshhub_report_sections(hub: Hub, viewer: Peer, since: float,
                            until: float) -> Any:
    return report_section(hub, viewer, since, until)


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(PROPOSALS)
    register(ELECTORS)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in (propose, vote, proposals, proposal_get):
        register(item)


@hookimpl
async def meshhub_startup(hub: Hub) -> None:
    await ProposalBook.of(hub).load()


@hookimpl
def meshhub_shutdown(hub: Hub) -> None:
    ProposalBook.of(hub).stop()
