"""The decisions board: what the mesh (or a conversation) has decided, by key, with history.

Written as a third-party plugin would be: one document per decision key in the
``decisions`` collection, through ``hub.records``. Posting to a key that exists updates it:
each post is a ``modify`` (a compare-and-set on the revision read, again when another post
won) that counts the change, and the change itself (value, rationale, category, who, when,
or a revocation's reason) is a small document of its own in ``decision_history``, numbered
by that count, so the versions stay in the order they landed while the board's document
(sent in every ``record`` event) stays the size of one version. A revoked decision stays on
the board, marked revoked, until a new value is posted to its key.

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
from meshhub.records import Change, Collection, In, Record
from meshhub.report import ReportSection, report_text

from .coordination import conversation_of, member_conversation, notify, peer_name
from .histories import History
from .report_window import window_lines

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

MAX_KEY = 128
MAX_VALUE = 4000
MAX_RATIONALE = 4000
MAX_CATEGORY = 64
MAX_HISTORY = 200  # versions and revocations a key keeps; the oldest go first
HISTORY_PAGE = 100
PAGE = 100
MESH_WIDE = "*"  # the audience of a mesh-wide decision, stored so a query can name it
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


DECISIONS = Collection("decisions", indexes=("name", "audience", "category", "live"),
                       feed=True, notify=_audience)
HISTORY = History("decision_history", keep=MAX_HISTORY, indexes=("audience",))


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


def _audience_of(scope: str | None) -> str:
    return MESH_WIDE if scope is None else scope


def audiences(hub: Hub, peer: Peer) -> In:
    """The audiences whose decisions ``peer`` sees: the mesh's and its conversations'."""
    mine = sorted("#" + c.name for c in hub.directory.conversations.values()
                  if peer.key in c.members)
    return In((MESH_WIDE, *mine))


def _view(hub: Hub, record: Record) -> dict[str, Any]:
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
    view["changes"] = doc["changes"]
    return view


def _entry_view(hub: Hub, entry: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in entry.items() if k not in ("parent", "audience", "name", "scope")}
    return dict(shown, by=peer_name(hub, entry["by"]))


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
        return {"name": key, "scope": scope, "audience": _audience_of(scope), "value": value,
                "rationale": rationale, "category": cat, "group": team,
                "author": ctx.peer.key, "posted_at": now, "revoked": None, "live": True,
                "changes": (doc or {}).get("changes", 0) + 1}

    record = await ctx.hub.records.modify(DECISIONS.name, _record_key(scope, key), post)
    assert record is not None
    await _remember(ctx.hub, record, entry)
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
        doc["live"] = False
        doc["changes"] += 1
        return doc

    record = await ctx.hub.records.modify(DECISIONS.name, _record_key(scope, key), revoke)
    assert record is not None
    await _remember(ctx.hub, record,
                    {"event": "revoked", "reason": reason, "by": ctx.peer.key, "at": now})
    await ctx.hub.audit.append("decision_revoked", ctx.peer, subject=key, scope=scope)
    await _tell(ctx, record.value, f"{ctx.peer.name} revoked the decision {key}: {reason}")
    return _view(ctx.hub, record)


async def _remember(hub: Hub, record: Record, entry: dict[str, Any]) -> None:
    """Keep ``entry`` as change number ``changes`` of the decision just written."""
    doc = record.value
    await HISTORY.add(hub, record.key, doc["changes"],
                      dict(entry, name=doc["name"], scope=doc["scope"],
                           audience=doc["audience"]))


@action(read_only=True)
async def decision_get(
    ctx: ActionContext,
    key: Annotated[str, "the decision's key", Field(max_length=MAX_KEY)],
    conversation: Annotated[str | None, "the #conversation it is in; left out: mesh-wide",
                            Field(max_length=200)] = None,
    after: Annotated[int | None, "history: only the changes after this one (its seq)",
                     Field(ge=0)] = None,
) -> dict[str, Any]:
    """One decision with its history: every value it had, who posted it, when and why,
    and every revocation, oldest first, numbered (``seq``), 100 at a time (the newest 200
    are kept); ``history_more`` is true when there are later ones: ask again with ``after``
    set to the last ``seq``."""
    _check_key(key)
    scope = _scope_of(ctx, conversation)
    record = await ctx.hub.records.get(DECISIONS.name, _record_key(scope, key))
    if record is None:
        raise NotFound(f"no decision {key}" + (f" in {scope}" if scope else ""))
    entries, more = await HISTORY.page(ctx.hub, record.key, after, HISTORY_PAGE)
    return dict(_view(ctx.hub, record), history=[_entry_view(ctx.hub, e) for e in entries],
                history_more=more)


@action(read_only=True)
async def decisions(
    ctx: ActionContext,
    key: Annotated[str | None, "only this key", Field(max_length=MAX_KEY)] = None,
    category: Annotated[str | None, "only this category", Field(max_length=MAX_CATEGORY)] = None,
    conversation: Annotated[str | None, "only this #conversation's; left out: the mesh-wide "
                                        "ones and those of your conversations",
                            Field(max_length=200)] = None,
    include_revoked: Annotated[bool, "list revoked decisions too"] = False,
    after: Annotated[str | None, "the cursor of the previous page", Field(max_length=400)] = None,
) -> dict[str, Any]:
    """The decisions you can see, by category, 100 at a time: ``more`` is true when there
    are others: ask again with ``after`` set to ``cursor``."""
    where: dict[str, Any] = {}
    if key:
        where["name"] = _check_key(key)
    if category:
        where["category"] = _check_category(category)
    if conversation and conversation.strip():
        where["audience"] = _scope_of(ctx, conversation)
    elif not ctx.is_admin:
        where["audience"] = audiences(ctx.hub, ctx.peer)
    if not include_revoked:
        where["live"] = True
    page = await ctx.hub.records.find(DECISIONS.name, where, order="category", limit=PAGE,
                                      after=after)
    return {"decisions": [_view(ctx.hub, r) for r in page.records],
            "more": page.cursor is not None, "cursor": page.cursor}


async def _report(hub: Hub, viewer: Peer, since: float, until: float) -> ReportSection | None:
    """The decisions posted and revoked in ``[since, until)`` that ``viewer`` can see, in
    time order."""
    lines = await window_lines(hub, HISTORY.name, {"audience": audiences(hub, viewer)},
                               since=since, until=until, line=lambda r: _line(hub, r.value))
    return ReportSection("Decisions", lines, order=40) if lines else None


def _line(hub: Hub, entry: dict[str, Any]) -> str:
    where = f" ({report_text(entry['scope'], 100)})" if entry["scope"] else ""
    who = report_text(peer_name(hub, entry["by"]), 60)
    if entry["event"] == "posted":
        return f"- {who} decided {report_text(entry['name'], 128)}{where} = " \
            f"{report_text(entry['value'])}"
    return f"- {who} revoked {report_text(entry['name'], 128)}{where}: " \
        f"{report_text(entry['reason'])}"


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(DECISIONS)
    register(HISTORY.collection)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in (decision_post, decision_revoke, decision_get, decisions):
        register(item)


@hookimpl
async def meshhub_report_sections(hub: Hub, viewer: Peer, since: float,
                                  until: float) -> ReportSection | None:
    return await _report(hub, viewer, since, until)
