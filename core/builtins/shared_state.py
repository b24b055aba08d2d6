"""Shared state: a key-value store of the mesh, with every change pushed to whoever may see it.

Written exactly as a third-party plugin would be: one collection, ``state``, four actions
(``state_set``, ``state_get``, ``state_list``, ``state_delete``). A value is any JSON value; a
key is a short printable name. A key lives either in the mesh-wide scope (every peer reads and
writes it) or in a conversation's (``scope="#ops"``: its members only, and the hub's owner).

The collection keeps the change feed, so every change reaches the connected peers of its scope
as a ``record`` event (docs/protocol.md), whose ``value`` is the document in the shape the
actions return (without ``revision`` and ``updated_at``, which the event carries as
``revision`` and ``at``). ``hub mcp`` turns those events into channel notifications.

Compare-and-set is the record API's: ``revision`` is the revision the writer read, ``0`` means
"only if the key is absent". A stale one is refused with the record API's ``conflict``, whose
details carry the current value and revision, so the writer can merge without another read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from meshhub import codec, hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden, InvalidRequest, TooLarge
from meshhub.limits import account, owner_account
from meshhub.records import Change, Collection, Conflict, Range, Record

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Conversation

MAX_VALUE_BYTES = 64 * 1024
MAX_KEY = 128
MAX_LIST = 1000
CONFLICT_PREVIEW = 500  # characters of the current value a refused compare-and-set says
KEY_RULE = (f"1 to {MAX_KEY} characters: letters, digits and . _ - : / (no spaces), starting "
            f"with a letter or a digit, e.g. build/status")
KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
PREFIX_RE = re.compile(r"[A-Za-z0-9._:/-]*")
# every key character sorts below it, so "<prefix>" .. "<prefix>~" holds the keys that start
# with the prefix; a mesh-wide key starts with a letter or digit, a conversation's with "#"
AFTER_KEYS = "\x7f"
FIRST_KEY = "0"


def _record_key(scope: str | None, key: str) -> str:
    """The document's key: the key itself mesh-wide, ``#<conversation> <key>`` otherwise
    (a conversation name has no spaces, so scopes never share a key)."""
    return key if scope is None else f"{scope} {key}"


def _notify(hub: Hub, change: Change) -> Iterable[str]:
    """Every peer for a mesh-wide key, the conversation's members for a scoped one."""
    doc = change.value or change.previous or {}
    scope = doc.get("scope")
    if scope is None:
        return list(hub.directory.peers)
    conv = hub.directory.conversations.get(str(scope).lstrip("#"))
    return list(conv.members) if conv is not None else []


STATE = Collection("state", feed=True, notify=_notify)


def check_key(key: str) -> str:
    if len(key) > MAX_KEY or not KEY_RE.fullmatch(key):
        raise InvalidRequest(f"bad state key {key[:MAX_KEY]!r}: a key is {KEY_RULE}")
    return key


def _scope_of(ctx: ActionContext, scope: str | None) -> str | None:
    """``None`` (mesh-wide) or ``#<conversation>``, refused for whoever is not in it."""
    if scope is None or scope.strip() in ("", "*", "mesh"):
        return None
    conv: Conversation = ctx.hub.directory.conversation(scope.strip())
    if ctx.peer.key not in conv.members and not ctx.is_admin:
        raise Forbidden(f"the state of #{conv.name} is for its members; join it first")
    return "#" + conv.name


def _public(hub: Hub, record: Record) -> dict[str, Any]:
    doc = record.value
    author = hub.directory.peers.get(doc.get("author_key", ""))
    return {"key": doc["key"], "scope": doc["scope"], "value": doc["value"],
            "revision": record.revision,
            "author": author.name if author is not None else doc.get("author"),
            "updated_at": record.updated_at}


def _stale(hub: Hub, lost: Conflict, wanted: int, key: str) -> Conflict:
    """The record API's refusal, with the current value and revision in its details and its
    message (a model calling through MCP sees only the message), so the writer can merge
    without reading again."""
    current = lost.current
    if current is None:
        now = "it does not exist now (revision 0)"
        details: dict[str, Any] = {"key": key, "value": None}
    else:
        details = _public(hub, current)
        value = codec.dumps(details["value"])
        if len(value) > CONFLICT_PREVIEW:
            value = value[:CONFLICT_PREVIEW] + "... (cut; the details hold it whole)"
        now = f"it is at revision {current.revision} now, by {details['author']}: {value}"
    refusal = Conflict(f"state {key} is not at revision {wanted}: {now}; merge and retry "
                       f"with that revision", current=current)
    refusal.details.update(details)
    return refusal


@action()
async def state_set(
    ctx: ActionContext,
    key: Annotated[str, f"the key: {KEY_RULE}"],
    value: Annotated[Any, "any JSON value (at most 64 KiB as JSON)"],
    scope: Annotated[str | None, "a #conversation whose members share it; left out: the "
                                 "whole mesh"] = None,
    revision: Annotated[int | None, "compare-and-set: write only if the key is still at this "
                                    "revision (0: only if it does not exist)"] = None,
) -> dict[str, Any]:
    """Set a key of the mesh's shared state (or of a conversation's) to a JSON value.

    Everyone who shares it hears of the change. With ``revision``, a key that changed since
    you read it is refused (code ``conflict``) with its current value and revision."""
    check_key(key)
    where = _scope_of(ctx, scope)
    size = _value_bytes(value)
    if size > MAX_VALUE_BYTES:
        raise TooLarge(f"the value is {size} bytes as JSON; a state value is at most "
                       f"{MAX_VALUE_BYTES} bytes (64 KiB)", limit=MAX_VALUE_BYTES, size=size)
    if revision is not None and revision < 0:
        raise InvalidRequest("revision is 0 (only if absent) or a revision you read")
    doc = {"key": key, "scope": where, "value": value, "author": ctx.peer.name,
           "author_key": ctx.peer.key}
    try:
        record = await _write(ctx, _record_key(where, key), doc, revision)
    except Conflict as lost:
        raise _stale(ctx.hub, lost, revision or 0, key) from None
    return _public(ctx.hub, record)


def _measure(record: Record) -> tuple[str, int]:
    """Whose storage quota a key's value counts against (its last writer's), and its bytes
    (the value as JSON)."""
    return record.value.get("author_key", ""), _value_bytes(record.value["value"])


def _value_bytes(value: Any) -> int:
    return len(codec.dumps(value).encode())


async def _write(ctx: ActionContext, record_key: str, doc: dict[str, Any],
                 revision: int | None) -> Record:
    """Put ``doc`` against the revision read, so the value it replaces is known exactly: the
    writer's quota is charged its bytes (refused past it), whoever wrote the old value gets
    its bytes back. Without ``revision``, read and try again while another writer wins."""
    hub, quota = ctx.hub, ctx.hub.limits.storage
    mine = account(ctx.peer)
    size = _value_bytes(doc["value"])
    while True:
        old = await hub.records.get("state", record_key)
        expected = revision if revision is not None else (old.revision if old else 0)
        if (old.revision if old else 0) == expected:  # else the put is refused: a conflict
            owner, freed = _measure(old) if old else ("", 0)
            quota.check(mine, size - (freed if owner_account(hub, owner) == mine else 0))
        try:
            record = await hub.records.put("state", record_key, doc, revision=expected)
        except Conflict:
            if revision is not None:
                raise
            continue
        if old is not None:
            owner, freed = _measure(old)
            quota.add(owner_account(hub, owner), -freed)
        quota.add(mine, size)
        return record


@action(read_only=True)
async def state_get(
    ctx: ActionContext,
    key: Annotated[str, "the key"],
    scope: Annotated[str | None, "a #conversation; left out: the whole mesh"] = None,
) -> dict[str, Any]:
    """Read one key of the shared state: its value, revision, author and time.

    A key never set (or deleted) reads as value null at revision 0."""
    check_key(key)
    where = _scope_of(ctx, scope)
    record = await ctx.hub.records.get("state", _record_key(where, key))
    if record is None:
        return {"key": key, "scope": where, "value": None, "revision": 0, "author": None,
                "updated_at": None}
    return _public(ctx.hub, record)


@action(read_only=True)
async def state_list(
    ctx: ActionContext,
    scope: Annotated[str | None, "a #conversation; left out: the whole mesh"] = None,
    prefix: Annotated[str | None, "only keys that start with this"] = None,
    after: Annotated[str | None, "the last key of the previous page: the keys after it"] = None,
) -> dict[str, Any]:
    """The keys of the shared state (of the mesh, or of a conversation), in key order, with
    their values, at most 1000; ``prefix`` narrows them (``build/``). ``more`` is true when
    there are others: ask again with ``after`` set to the last key of this page."""
    where = _scope_of(ctx, scope)
    prefix = prefix or ""
    if len(prefix) > MAX_KEY or not PREFIX_RE.fullmatch(prefix):
        raise InvalidRequest(f"bad prefix {prefix[:MAX_KEY]!r}: keys are {KEY_RULE}")
    start = _record_key(where, prefix)
    low = max(start, FIRST_KEY) if where is None else start
    keys = Range(ge=low, lt=start + AFTER_KEYS)
    if after is not None and _record_key(where, check_key(after)) >= low:
        keys = Range(gt=_record_key(where, after), lt=start + AFTER_KEYS)
    page = await ctx.hub.records.find("state", {"key": keys}, limit=MAX_LIST)
    return {"scope": where, "entries": [_public(ctx.hub, r) for r in page.records],
            "more": page.cursor is not None}


@action()
async def state_delete(
    ctx: ActionContext,
    key: Annotated[str, "the key"],
    scope: Annotated[str | None, "a #conversation; left out: the whole mesh"] = None,
    revision: Annotated[int | None, "compare-and-set: delete only if the key is still at "
                                    "this revision"] = None,
) -> dict[str, Any]:
    """Delete a key of the shared state; everyone who shares it hears of it.

    ``deleted`` is false when there was no such key."""
    check_key(key)
    where = _scope_of(ctx, scope)
    if revision is not None and revision < 1:
        raise InvalidRequest("revision is one you read (1 or more); leave it out to delete "
                             "whatever is there")
    try:
        deleted = await _remove(ctx.hub, _record_key(where, key), revision)
    except Conflict as lost:
        raise _stale(ctx.hub, lost, revision or 0, key) from None
    return {"key": key, "scope": where, "deleted": deleted}


async def _remove(hub: Hub, record_key: str, revision: int | None) -> bool:
    """Delete against the revision read, giving the value's bytes back to whoever wrote it;
    without ``revision``, again while another writer wins."""
    while True:
        old = await hub.records.get("state", record_key)
        if old is None and revision is None:
            return False
        expected = revision if revision is not None else old.revision if old else None
        try:
            deleted = await hub.records.delete("state", record_key, revision=expected)
        except Conflict:
            if revision is not None:
                raise
            continue
        if deleted and old is not None:
            owner, freed = _measure(old)
            hub.limits.storage.add(owner_account(hub, owner), -freed)
        return deleted


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(STATE)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in (state_set, state_get, state_list, state_delete):
        register(item)


@hookimpl
def meshhub_startup(hub: Hub) -> None:
    # in the background, as the message bodies are counted: a start does not wait for it
    hub.spawn(hub.limits.storage.load_records(hub, "state", _measure, time.time()))
