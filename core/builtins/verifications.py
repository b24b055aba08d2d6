"""Verifications: a peer asks another to check a claim (with the files to look at), and the
verifier answers ``verified`` or ``failed`` with its evidence, once.

The actions are ``verify_request``, ``verify_answer``, ``verifications`` and
``verification_get``; the data is the ``verifications`` collection. The request reaches the
verifier as a message of kind ``verification`` (``data``: ``verification_id``, ``claim``,
``files``), the answer reaches the asker as one of kind ``verification_result``. Only the asker
and the verifier (and the hub's owner) see a verification; both get its changes as ``record``
events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden, InvalidRequest, NotFound
from meshhub.fields import MAX_NAME
from meshhub.ids import new_id
from meshhub.kinds import LINE_BREAKS
from meshhub.records import Change, Collection, Conflict, Record
from meshhub.report import ReportSection, report_text
from meshhub.routing import resolve_peers

from .coordination import member_conversation, notify, peer_name
from .report_window import window_lines

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

MAX_CLAIM = 2000
MAX_EVIDENCE = 8000
MAX_FILES = 50
MAX_FILE_REF = 500
MAX_LIST = 200


def _parties(hub: Hub, change: Change) -> Iterable[str]:
    doc = change.value or change.previous or {}
    return [doc.get("asker", ""), doc.get("verifier", "")]


VERIFICATIONS = Collection("verifications", indexes=("state", "asker", "verifier", "asked_at",
                                                    "answered_at"),
                           feed=True, notify=_parties)


def view(hub: Hub, doc: dict[str, Any]) -> dict[str, Any]:
    return doc | {"asker": peer_name(hub, doc["asker"]),
                  "verifier": peer_name(hub, doc["verifier"])}


def _may_see(ctx: ActionContext, doc: dict[str, Any]) -> bool:
    return ctx.is_admin or ctx.peer.key in (doc["asker"], doc["verifier"])


async def _visible(ctx: ActionContext, verification_id: str) -> dict[str, Any]:
    found = await ctx.hub.records.get(VERIFICATIONS.name, verification_id)
    if found is None or not _may_see(ctx, found.value):
        raise NotFound(f"no verification {verification_id!r} that you asked for or were "
                       "asked; `verifications` lists yours")
    return found.value


def _check_files(files: list[str] | None) -> list[str]:
    """The files to look at, each on one line (a line break could fake the next entry of the
    request's list)."""
    for path in files or []:
        if not LINE_BREAKS.isdisjoint(path):
            raise InvalidRequest(f"files: {path[:80]!r} holds a line break; give one path "
                                 "or file id per entry")
    return list(files or [])


@action()
async def verify_request(
    ctx: ActionContext,
    to: Annotated[str, "the peer asked to verify", Field(max_length=MAX_NAME + 1)],
    claim: Annotated[str, "what is to be verified", Field(max_length=MAX_CLAIM)],
    files: Annotated[list[Annotated[str, Field(max_length=MAX_FILE_REF)]] | None,
                     "paths or file ids to check", Field(max_length=MAX_FILES)] = None,
    conversation: Annotated[str | None, "the #conversation it belongs to",
                            Field(max_length=100)] = None,
) -> dict[str, Any]:
    """Ask one peer to verify a claim. Anyone may ask anyone but themselves; a
    ``conversation`` only its members (or the hub's owner) may name. The verifier gets a
    message of kind ``verification`` and answers with ``verify_answer``."""
    if not claim.strip():
        raise InvalidRequest("claim: say what is to be verified")
    paths = _check_files(files)
    [verifier] = await resolve_peers(ctx.hub, [to], ctx.peer, "to")
    if verifier == ctx.peer.key:
        raise InvalidRequest("to: ask someone else to verify your claim")
    if conversation is not None:
        conversation = "#" + member_conversation(ctx, conversation, "verifications").name
    doc: dict[str, Any] = {
        "id": new_id(), "asker": ctx.peer.key, "verifier": verifier, "claim": claim,
        "files": paths, "conversation": conversation, "state": "pending",
        "evidence": None, "asked_at": time.time(), "answered_at": None,
        "message_id": new_id()}
    shown = "".join(f"\n- {f}" for f in doc["files"])
    body = (f"{ctx.peer.name} asks you to verify: {claim}{shown}\n"
            f"(answer: `verify_answer {doc['id']} verified|failed` with your evidence)")
    ctx.hub.limits.can_send(ctx.peer, len(body.encode()))
    await ctx.hub.records.create(VERIFICATIONS.name, doc["id"], doc)
    await notify(ctx.hub, ctx.peer, [verifier], body, kind="verification",
                 data={"verification_id": doc["id"], "claim": claim, "files": doc["files"]},
                 message_id=doc["message_id"])
    return view(ctx.hub, doc)


@action()
async def verify_answer(
    ctx: ActionContext,
    id: Annotated[str, "the verification's id", Field(max_length=64)],
    result: Annotated[Literal["verified", "failed"], "what you found"],
    evidence: Annotated[str, "how you checked, what you saw", Field(max_length=MAX_EVIDENCE)],
) -> dict[str, Any]:
    """Answer a verification you were asked for, once; the asker gets a message of kind
    ``verification_result``. A second answer is refused with ``conflict``."""
    doc = await _visible(ctx, id)
    if ctx.peer.key != doc["verifier"]:
        raise Forbidden(f"only {peer_name(ctx.hub, doc['verifier'])} may answer verification {id}")
    answered = False

    def answer(found: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal answered
        answered = found is not None and found["state"] == "pending"
        if not answered or found is None:
            return None
        return found | {"state": result, "evidence": evidence, "answered_at": time.time()}

    record = await ctx.hub.records.modify(VERIFICATIONS.name, id, answer)
    if record is None:
        raise NotFound(f"verification {id} is gone")
    if not answered:
        raise Conflict(f"verification {id} was answered already: {record.value['state']}",
                       current=record)
    doc = record.value
    await notify(ctx.hub, ctx.peer, [doc["asker"]],
                 f"{ctx.peer.name} answered your verification: {result}\nClaim: "
                 f"{doc['claim']}\nEvidence: {evidence}", kind="verification_result",
                 data={"verification_id": id, "result": result})
    return view(ctx.hub, doc)


@action(read_only=True)
async def verifications(
    ctx: ActionContext,
    state: Annotated[Literal["pending", "verified", "failed"] | None,
                     "only verifications in this state"] = None,
    mine: Annotated[bool, "only those you asked for"] = False,
) -> list[dict[str, Any]]:
    """The verifications you asked for or were asked (all of them for the hub's owner),
    newest first, at most 200."""
    where: dict[str, Any] = {"state": state} if state is not None else {}
    me = ctx.peer.key
    if mine:
        parts = [{**where, "asker": me}]
    elif ctx.is_admin:
        parts = [where]
    else:
        parts = [{**where, "asker": me}, {**where, "verifier": me}]
    found: dict[str, Record] = {}
    for part in parts:
        page = await ctx.hub.records.find(VERIFICATIONS.name, part, order="-asked_at",
                                          limit=MAX_LIST)
        found.update((r.key, r) for r in page.records)
    newest = sorted(found.values(), key=lambda r: (r.value["asked_at"], r.key), reverse=True)
    return [view(ctx.hub, r.value) for r in newest[:MAX_LIST]]


@action(read_only=True)
async def verification_get(
    ctx: ActionContext, id: Annotated[str, "the verification's id", Field(max_length=64)]
) -> dict[str, Any]:
    """A verification you asked for or were asked (any, for the hub's owner)."""
    return view(ctx.hub, await _visible(ctx, id))


async def report_section(hub: Hub, viewer: Peer, since: float,
                         until: float) -> ReportSection:
    """Verifications asked and answered in the window that ``viewer`` asked for (then those
    it was asked: a peer never verifies its own claim)."""

    def line(field: str) -> Callable[[Record], str]:
        def make(record: Record) -> str:
            doc = record.value
            claim = report_text(doc["claim"])
            verifier = report_text(peer_name(hub, doc["verifier"]))
            if field == "asked_at":
                return f"- {report_text(peer_name(hub, doc['asker']))} asked {verifier} to " \
                    f"verify: {claim}"
            return f"- {doc['state'].capitalize()} by {verifier}: {claim}"
        return make

    lines: list[str] = []
    for field in ("asked_at", "answered_at"):
        for party in ("asker", "verifier"):
            lines += await window_lines(hub, VERIFICATIONS.name, {party: viewer.key},
                                        since=since,
                                        until=until, line=line(field), field=field)
    return ReportSection("Verifications", lines, order=55)


@hookimpl
def meshhub_report_sections(hub: Hub, viewer: Peer, since: float, until: float) -> Any:
    return report_section(hub, viewer, since, until)


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(VERIFICATIONS)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in (verify_request, verify_answer, verifications, verification_get):
        register(item)
