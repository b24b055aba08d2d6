"""The decisions board: what the mesh (or a conversation) has decided, by key, with history.

Written as a third-party plugin would be: one document per decision key in the
``decisions`` collection, through ``hub.records``. Posting to a key that exists updates it:
the document's ``history`` keeps every version (value, rationale, category, who, when) and
every revocation, in the order they landed, because each post is a ``modify`` (a
compare-and-set on the revision read, again when another post won). A revoked decision stays
on the board, marked revoked, until a new value is posted to its key.

Scope: mesh-wide (every peer reads and posts) or a conversation's (its members, and the hub's
owner). A key belongs to whoever posted to it last: anyone who may post in its scope may post
over it (the history keeps who posted what), and becomes its author, the one peer besides the
hub's owner who may revoke it. Revoking is thus never anonymous: whoever revokes a value is on
the record as its author or as the owner.

Besides the ``record`` events of the collection's feed (to every peer of the scope), a
``decision_board`` notice goes to the conversation's members, or, mesh-wide, to the peers of
the ``group`` the post names; a mesh-wide decision without a group is not sent to anyone as a
message (it would reach every peer).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.directory import check_group
from meshhub.errors import Forbidden, InvalidRequest, NotFound
from meshhub.records import Change, Collection, Record
from meshhub.report import ReportSection, report_text

from .coordination import conversation_of, member_conversation, notify, peer_name

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

MAX_KEY = 128
MAX_VALUE = 4000
MAX_RATIONALE = 4000
MAX_CATEGORY = 64
MAX_HISTORY = 200  # versions and revocations a key keeps; the oldest go first
KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
KEY_RULE = (f"1 to {MAX_KEY} characters: letters, digits and . _ - : / (no spaces), starting "
            "with a letter or a digit, e.g. db/engine")
CATEGORY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _record_key(scope: str | None, key: str) -> str:
    """The key itself mesh-wide, ``#<conversation> <key>`` in a conversation (no clash)."""
    return key if scope is None else f"{scope} {key}"


def _audience(hub: Hub, change: Change) -> Iterable[str]:
    """Every peer for a mesh-wide decision, the conversation's members for a scoped one."""
    doc = change.value or change.previous or {}
    if doc.get("scope") is None:
        return list(hub.directory.peers)
    conv = conversation_of(hub, doc["scope"])
    return list(conv.members) if conv is not None else []


DECISIONS = Collection("decisions", indexes=("name", "scope", "category"), feed=True,
                       notify=_audience)


def _check_key(key: str) -> str:
    if len(key) > MAX_KEY or not KEY_RE.fullmatch(key):
        raise InvalidRequest(f"key: bad decision key {key[:MAX_KEY]!r}: a key is {KEY_RULE}")
    return key


def _check_category(category: str) -> str:
    if not CATEGORY_RE.fullmatch(category):
        raise InvalidRequest(f"category: {category[:MAX_CATEGORY]!r} is not a category: "
                             "letters, digits and . _ - (no spaces)")
    return category.lower()


def _scope_of(ctx: ActionContext, conversation: str | None) -> str | None:
    """``None`` (mesh-wide) or ``#<conversation>``, refused for whoever is not in it."""
    if conversation is None or not conversation.strip():
        return None
    return "#" + member_conversation(ctx, conversation, "decisions").name


def may_see(hub: Hub, peer: Peer, scope: str | None) -> bool:
    if scope is None:
        return True
    conv = conversation_of(hub, scope)
    return conv is not None and peer.key in conv.members


def _view(hub: Hub, record: Record, *, history: bool = False) -> dict[str, Any]:
    doc = record.value
    view = {"key": doc["name"], "scope": doc["scope"], "value": doc["value"],
            "rationale": doc["rationale"], "category": doc["category"],
            "group": doc.get("group"), "author": peer_name(hub, doc["author"]),
            "posted_at": doc["posted_at"], "revoked": doc["revoked"] is not None,
            "revision": record.revision}
    if doc["revoked"] is not None:
        view["revoked_by"] = peer_name(hub, doc["revoked"]["by"])
        view["revoked_at"] = doc["revoked"]["at"]
        view["revoke_reason"] = doc["revoked"]["reason"]
    if history:
        view["history"] = [dict(entry, by=peer_name(hub, entry["by"]))
                           for entry in doc["history"]]
    return view


async def _tell(ctx: ActionContext, doc: dict[str, Any], text: str) -> None:
    """A ``decision_board`` notice to the conversation's members, or the group's peers,
    never the actor."""
    if doc["scope"] is not None:
        conv = conversation_of(ctx.hub, doc["scope"])
        keys = set(conv.members) if conv is not None else set()
    elif doc.get("group"):
        keys = {p.key for p in ctx.hub.directory.peers.values() if p.in_group(doc["group"])}
    else:
        return
    await notify(ctx.hub, ctx.peer, sorted(keys - {ctx.peer.key}), text,
                 kind="decision_board", data={"key": doc["name"], "scope": doc["scope"],
                                              "revoked": doc["revoked"] is not None})


def _kept(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return history[-MAX_HISTORY:]


@action()
async def decision_post(
    ctx: ActionContext,
    key: Annotated[str, f"what is decided: {KEY_RULE}", Field(max_length=MAX_KEY)],
    value: Annotated[str, "the decision", Field(min_length=1, max_length=MAX_VALUE)],
    rationale: Annotated[str, "why", Field(max_length=MAX_RATIONALE)] = "",
    category: Annotated[str, "a label to group decisions by (architecture, process...)",
                        Field(min_length=1, max_length=MAX_CATEGORY)] = "general",
    conversation: Annotated[str | None, "a #conversation whose members share it; left out: "
                                        "the whole mesh", Field(max_length=200)] = None,
    group: Annotated[str | None, "mesh-wide only: a @group whose peers are told by message",
                     Field(max_length=200)] = None,
) -> dict[str, Any]:
    """Post a decision. Posting to a key that exists updates it and keeps every earlier
    version in its history (``decision_get``); a revoked key is live again. Anyone who may
    post in the scope may post over a key, and becomes its author (who may revoke it). The
    conversation's members (or, mesh-wide, the ``group``'s peers) get a ``decision_board``
    notice."""
    _check_key(key)
    cat = _check_category(category)
    scope = _scope_of(ctx, conversation)
    team = check_group(group.strip().lstrip("@"), "group") if group and group.strip() else None
    if team is not None and scope is not None:
        raise InvalidRequest("group: a conversation's decision is told to its members; give "
                             "a group only for a mesh-wide decision")
    now = time.time()
    entry = {"event": "posted", "value": value, "rationale": rationale, "category": cat,
             "by": ctx.peer.key, "at": now}

    def post(doc: dict[str, Any] | None) -> dict[str, Any]:
        history = (doc or {}).get("history", [])
        return {"name": key, "scope": scope, "value": value, "rationale": rationale,
                "category": cat, "group": team, "author": ctx.peer.key, "posted_at": now,
                "revoked": None, "history": _kept([*history, entry])}

    record = await ctx.hub.records.modify(DECISIONS.name, _record_key(scope, key), post)
    assert record is not None
    await ctx.hub.audit.append("decision_posted", ctx.peer, subject=key, scope=scope,
                               category=cat)
    where = f" in {scope}" if scope else ""
    await _tell(ctx, record.value, f"{ctx.peer.name} decided {key}{where}: {value}")
    return _view(ctx.hub, record)


@action()
async def decision_revoke(
    ctx: ActionContext,
    key: Annotated[str, "the decision's key", Field(max_length=MAX_KEY)],
    reason: Annotated[str, "why it no longer holds", Field(min_length=1,
                                                          max_length=MAX_RATIONALE)],
    conversation: Annotated[str | None, "the #conversation it is in; left out: mesh-wide",
                            Field(max_length=200)] = None,
) -> dict[str, Any]:
    """Revoke a decision (its author, who posted it last, or the hub's owner): it stays on
    the board and in its history, marked revoked, with the reason."""
    _check_key(key)
    scope = _scope_of(ctx, conversation)
    now = time.time()

    def revoke(doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is None:
            raise NotFound(f"no decision {key}" + (f" in {scope}" if scope else ""))
        if doc["author"] != ctx.peer.key and not ctx.is_admin:
            raise Forbidden(f"only {peer_name(ctx.hub, doc['author'])}, who posted {key} last, "
                            "or the hub's owner may revoke it")
        if doc["revoked"] is not None:
            raise InvalidRequest(f"decision {key} is revoked already", code="invalid_move")
        doc["revoked"] = {"by": ctx.peer.key, "at": now, "reason": reason}
        doc["history"] = _kept([*doc["history"], {"event": "revoked", "reason": reason,
                                                  "by": ctx.peer.key, "at": now}])
        return doc

    record = await ctx.hub.records.modify(DECISIONS.name, _record_key(scope, key), revoke)
    assert record is not None
    await ctx.hub.audit.append("decision_revoked", ctx.peer, subject=key, scope=scope)
    await _tell(ctx, record.value, f"{ctx.peer.name} revoked the decision {key}: {reason}")
    return _view(ctx.hub, record)


@action(read_only=True)
async def decision_get(
    ctx: ActionContext,
    key: Annotated[str, "the decision's key", Field(max_length=MAX_KEY)],
    conversation: Annotated[str | None, "the #conversation it is in; left out: mesh-wide",
                            Field(max_length=200)] = None,
) -> dict[str, Any]:
    """One decision with its history: every value it had, who posted it, when and why,
    and every revocation."""
    _check_key(key)
    scope = _scope_of(ctx, conversation)
    record = await ctx.hub.records.get(DECISIONS.name, _record_key(scope, key))
    if record is None:
        raise NotFound(f"no decision {key}" + (f" in {scope}" if scope else ""))
    return _view(ctx.hub, record, history=True)


@action(read_only=True)
async def decisions(
    ctx: ActionContext,
    key: Annotated[str | None, "only this key", Field(max_length=MAX_KEY)] = None,
    category: Annotated[str | None, "only this category", Field(max_length=MAX_CATEGORY)] = None,
    conversation: Annotated[str | None, "only this #conversation's; left out: the mesh-wide "
                                        "ones and those of your conversations",
                            Field(max_length=200)] = None,
    include_revoked: Annotated[bool, "list revoked decisions too"] = False,
) -> list[dict[str, Any]]:
    """The decisions you can see, by category then key (at most 1000)."""
    where: dict[str, Any] = {}
    if key:
        where["name"] = _check_key(key)
    if category:
        where["category"] = _check_category(category)
    if conversation and conversation.strip():
        where["scope"] = _scope_of(ctx, conversation)
    page = await ctx.hub.records.find(DECISIONS.name, where, order="category", limit=1000)
    out = [_view(ctx.hub, r) for r in page.records
           if (include_revoked or r.value["revoked"] is None)
           and (ctx.is_admin or may_see(ctx.hub, ctx.peer, r.value["scope"]))]
    return sorted(out, key=lambda d: (d["category"], d["key"], d["scope"] or ""))


async def _report(hub: Hub, viewer: Peer, since: float, until: float) -> ReportSection | None:
    """The decisions posted and revoked in ``[since, until)`` that ``viewer`` can see, in
    time order (the keys changed since ``since``, newest first, hold them all)."""
    lines: list[tuple[float, str]] = []
    cursor: str | None = None
    while True:
        page = await hub.records.find(DECISIONS.name, order="-updated_at", limit=200,
                                      after=cursor)
        for record in page.records:
            if record.updated_at < since:
                return _section(lines)
            if may_see(hub, viewer, record.value["scope"]):
                lines += _report_lines(hub, record.value, since, until)
        if page.cursor is None:
            return _section(lines)
        cursor = page.cursor


def _section(lines: list[tuple[float, str]]) -> ReportSection | None:
    if not lines:
        return None
    lines.sort(key=lambda item: item[0])
    return ReportSection("Decisions", [line for _, line in lines], order=40)


def _report_lines(hub: Hub, doc: dict[str, Any], since: float,
                  until: float) -> list[tuple[float, str]]:
    out = []
    where = f" ({report_text(doc['scope'], 100)})" if doc["scope"] else ""
    for entry in doc["history"]:
        if not since <= entry["at"] < until:
            continue
        who = report_text(peer_name(hub, entry["by"]), 60)
        if entry["event"] == "posted":
            text = f"{report_text(doc['name'], 128)}{where} = {report_text(entry['value'])}"
            out.append((entry["at"], f"- {who} decided {text}"))
        else:
            text = f"{report_text(doc['name'], 128)}{where}: {report_text(entry['reason'])}"
            out.append((entry["at"], f"- {who} revoked {text}"))
    return out


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(DECISIONS)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in (decision_post, decision_revoke, decision_get, decisions):
        register(item)


@hookimpl
async def meshhub_report_sections(hub: Hub, viewer: Peer, since: float,
                                  until: float) -> ReportSection | None:
    return await _report(hub, viewer, since, until)
