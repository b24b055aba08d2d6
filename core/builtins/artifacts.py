"""Artifacts: versioned text documents of a #conversation (a plan, a doc, code) that its
members edit together, with optimistic concurrency.

Kept through the record API in three collections:

- ``artifacts``: one head document per artifact (keyed by its id): name, kind, title, the
  latest version number and the metadata of the kept versions. The head is what readers go
  by, and its changes are the feed: the conversation's members get a ``record`` event for
  each (without the content, which can be large).
- ``artifact_versions``: one document per version, keyed ``<id>:<n>:<write>``, holding the
  content. An update writes its version first, then sets the head against the revision it
  read (compare-and-set). Two updates from one base both write a version of their own, one
  head write wins, and the loser deletes its version and is told the current one: a reader
  never sees a head naming a version that is not written, nor a version overwritten.
- ``artifact_names``: ``#conversation name`` -> id, created only if absent, so a name is
  taken once per conversation even by two creates at the same moment.

The newest ``keep_versions`` versions are kept (``[artifacts]`` in the configuration, 50 by
default); older ones are deleted after a successful update. The content of each version
counts against its author's storage quota, like a shared-state value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.builtins.artifact_text import (
    MAX_KIND,
    MAX_NAME,
    MAX_NOTE,
    MAX_TITLE,
    check_kind,
    check_name,
    diff_hint,
)
from meshhub.errors import Forbidden, InvalidRequest, NotFound, TooLarge
from meshhub.ids import new_id
from meshhub.limits import account, owner_account
from meshhub.records import Change, Collection, Conflict, In, Range, Record
from meshhub.report import ReportSection, report_text

from .coordination import conversation_of, member_conversation, notify

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Conversation, Peer

KEEP_VERSIONS = 50
MAX_BYTES = 512 * 1024  # a version travels in one request: room for JSON escaping in 1 MiB
PAGE_CHARS = 64 * 1024
MAX_PAGE_CHARS = 1024 * 1024
MAX_LIST = 1000
MAX_ID = 64
MAX_CONVERSATION = 200
ABANDONED_NAME = 60.0  # seconds after which a name whose create never finished is free


def _members(hub: Hub, change: Change) -> Iterable[str]:
    """A head's change reaches the members of its conversation."""
    doc = change.value or change.previous or {}
    conv = conversation_of(hub, doc.get("conversation"))
    return list(conv.members) if conv is not None else []


HEADS = Collection("artifacts", indexes=("conversation", "name", "changed_at"), feed=True,
                   notify=_members)
VERSIONS = Collection("artifact_versions")
NAMES = Collection("artifact_names")


def settings(hub: Hub) -> tuple[int, int]:
    """``keep_versions`` and ``max_bytes`` of ``[artifacts]``, checked."""
    section = hub.config.section("artifacts")
    keep, size = section.get("keep_versions", KEEP_VERSIONS), section.get("max_bytes",
                                                                           MAX_BYTES)
    if not isinstance(keep, int) or keep < 1 or not isinstance(size, int) or size < 1:
        raise InvalidRequest("[artifacts] keep_versions and max_bytes are whole numbers of 1 "
                             "or more; fix the configuration")
    return keep, size


def _conversation(ctx: ActionContext, name: str) -> Conversation:
    """The #conversation, refused to whoever is neither a member nor the hub's owner."""
    return member_conversation(ctx, name, "artifacts")


async def _head(ctx: ActionContext, artifact_id: str | None, conversation: str | None = None,
                name: str | None = None) -> Record:
    """The head of an artifact named by its id, or by its conversation and name, checking
    that the caller may see it (an artifact of another conversation reads as absent)."""
    if artifact_id is None:
        if conversation is None or name is None:
            raise InvalidRequest("name the artifact: id, or conversation and name")
        conv = _conversation(ctx, conversation)
        named = await ctx.hub.records.get("artifact_names", f"#{conv.name} {name}")
        artifact_id = str(named.value["id"]) if named is not None else ""
        where = f"{name!r} in #{conv.name}"
    else:
        where = artifact_id
    head = await ctx.hub.records.get("artifacts", artifact_id) if artifact_id else None
    if head is None:
        raise NotFound(f"no artifact {where[:MAX_NAME + 100]}")
    home = conversation_of(ctx.hub, head.value["conversation"])
    if home is None or (ctx.peer.key not in home.members and not ctx.is_admin):
        raise NotFound(f"no artifact {where[:MAX_NAME + 100]}")
    return head


def _version_key(artifact_id: str, n: int, write: str) -> str:
    return f"{artifact_id}:{n:010d}:{write}"


def public(head: Record) -> dict[str, Any]:
    """What the actions say of an artifact (no content)."""
    doc = head.value
    latest = doc["versions"][-1]
    return {"id": doc["id"], "conversation": doc["conversation"], "name": doc["name"],
            "kind": doc["kind"], "title": doc["title"], "version": doc["version"],
            "created_by": doc["created_by"], "created_at": doc["created_at"],
            "updated_by": latest["author"], "updated_at": latest["at"],
            "size": latest["size"], "note": latest["note"], "revision": head.revision}


def _entry(ctx: ActionContext, n: int, key: str, size: int, note: str) -> dict[str, Any]:
    return {"n": n, "key": key, "author": ctx.peer.name, "author_key": ctx.peer.key,
            "at": time.time(), "size": size, "note": note}


def _check_size(ctx: ActionContext, content: str) -> int:
    """The content's bytes, refused past the size limit or the author's quota."""
    _, limit = settings(ctx.hub)
    size = len(content.encode())
    if size > limit:
        raise TooLarge(f"the content is {size} bytes; a version of an artifact is at most "
                       f"{limit} bytes ([artifacts] max_bytes)", limit=limit, size=size)
    ctx.hub.limits.storage.check(account(ctx.peer), size)
    return size


async def _write_version(ctx: ActionContext, artifact_id: str, n: int, content: str,
                         note: str) -> dict[str, Any]:
    """Store version ``n``'s content under a key of its own write and return its entry for
    the head."""
    size = _check_size(ctx, content)
    entry = _entry(ctx, n, _version_key(artifact_id, n, new_id()), size, note)
    await ctx.hub.records.create("artifact_versions", entry["key"], {
        "artifact": artifact_id, "n": n, "content": content, "author_key": ctx.peer.key,
        "size": size})
    return entry


async def _notify(ctx: ActionContext, conv: Conversation, head: dict[str, Any],
                  what: str) -> None:
    """An ``artifact`` notice to the members other than the author."""
    title = head["title"] or head["name"]
    await notify(
        ctx.hub, ctx.peer, [k for k in conv.members if k != ctx.peer.key],
        f"{ctx.peer.name} {what} {head['kind']} {title!r} in #{conv.name} (version "
        f"{head['version']})", kind="artifact",
        data={"id": head["id"], "version": head["version"], "conversation": "#" + conv.name,
              "name": head["name"]})


@action()
async def artifact_create(
    ctx: ActionContext,
    conversation: Annotated[str, "the #conversation whose members share it",
                            Field(max_length=MAX_CONVERSATION)],
    name: Annotated[str, "a name unique in the conversation, e.g. plan.md",
                    Field(max_length=MAX_NAME)],
    content: Annotated[str, "the text of version 1"],
    kind: Annotated[str, "what it is: plan, doc, code, or another short word",
                    Field(max_length=MAX_KIND)] = "doc",
    title: Annotated[str, "a title to show", Field(max_length=MAX_TITLE)] = "",
) -> dict[str, Any]:
    """Create a versioned text document in a #conversation (its members and the hub's owner
    may). Its members hear of it. A name already taken there is refused (code ``conflict``)
    with the id of the artifact that has it."""
    conv = _conversation(ctx, conversation)
    check_name(name)
    check_kind(kind)
    _check_size(ctx, content)
    artifact_id = new_id()
    name_key = f"#{conv.name} {name}"
    try:
        named = await _claim_name(ctx.hub, name_key, artifact_id)
    except Conflict as taken:
        refusal = Conflict(f"#{conv.name} already has an artifact named {name!r}: update it, "
                           f"or choose another name", current=taken.current)
        if taken.current is not None:
            refusal.details["id"] = taken.current.value["id"]
        raise refusal from None
    entry: dict[str, Any] | None = None
    try:
        entry = await _write_version(ctx, artifact_id, 1, content, "")
        now = entry["at"]
        doc = {"id": artifact_id, "conversation": "#" + conv.name, "name": name, "kind": kind,
               "title": title, "version": 1, "created_by": ctx.peer.name,
               "created_by_key": ctx.peer.key, "created_at": now, "changed_at": now,
               "versions": [entry]}
        head = await ctx.hub.records.create("artifacts", artifact_id, doc)
    except BaseException:
        if entry is not None:
            await ctx.hub.records.delete("artifact_versions", entry["key"])
        await ctx.hub.records.delete("artifact_names", name_key, revision=named.revision)
        raise
    ctx.hub.limits.storage.add(account(ctx.peer), entry["size"])
    await _notify(ctx, conv, doc, "created")
    return public(head)


async def _claim_name(hub: Hub, name_key: str, artifact_id: str) -> Record:
    """Take the name for ``artifact_id``; a name left by a create that never finished (the
    hub stopped before its head was written) is taken over."""
    named = await hub.records.get("artifact_names", name_key)
    if named is not None and await hub.records.get("artifacts", named.value["id"]) is None \
            and time.time() - named.updated_at > ABANDONED_NAME:
        return await hub.records.put("artifact_names", name_key, {"id": artifact_id},
                                     revision=named.revision)
    return await hub.records.create("artifact_names", name_key, {"id": artifact_id})


@action()
async def artifact_update(
    ctx: ActionContext,
    content: Annotated[str, "the whole new text"],
    base_version: Annotated[int, "the version your change starts from (the one you read)"],
    id: Annotated[str | None, "the artifact's id (or give conversation and name)",
                  Field(max_length=MAX_ID)] = None,
    conversation: Annotated[str | None, "its #conversation, with name",
                            Field(max_length=MAX_CONVERSATION)] = None,
    name: Annotated[str | None, "its name, with conversation",
                    Field(max_length=MAX_NAME)] = None,
    note: Annotated[str, "what changed, in a few words", Field(max_length=MAX_NOTE)] = "",
) -> dict[str, Any]:
    """Write a new version of an artifact (members of its conversation and the hub's owner
    may). ``base_version`` must be the latest: if someone else wrote one meanwhile, the update
    is refused (code ``conflict``) naming the current version, its author and time, with a
    short diff from your base to it; merge and retry with that version."""
    head = await _head(ctx, id, conversation, name)
    if base_version != head.value["version"]:
        raise await _stale(ctx.hub, head, base_version)
    artifact_id = head.value["id"]
    entry = await _write_version(ctx, artifact_id, base_version + 1, content, note)
    keep, _ = settings(ctx.hub)
    versions = [*head.value["versions"], entry]
    dropped, kept = versions[:-keep], versions[-keep:]
    doc = dict(head.value, version=entry["n"], changed_at=entry["at"], versions=kept)
    try:
        written = await ctx.hub.records.put("artifacts", artifact_id, doc,
                                            revision=head.revision)
    except Conflict as lost:
        await ctx.hub.records.delete("artifact_versions", entry["key"])
        if lost.current is None:
            raise NotFound(f"artifact {artifact_id} was deleted meanwhile") from None
        raise await _stale(ctx.hub, lost.current, base_version) from None
    ctx.hub.limits.storage.add(account(ctx.peer), entry["size"])
    await _drop(ctx.hub, dropped)
    conv = conversation_of(ctx.hub, doc["conversation"])
    if conv is not None:
        await _notify(ctx, conv, doc, "updated")
    return public(written)


async def _drop(hub: Hub, entries: list[dict[str, Any]]) -> None:
    """Delete these versions, giving their bytes back to their authors."""
    for entry in entries:
        if await hub.records.delete("artifact_versions", entry["key"]):
            hub.limits.storage.add(owner_account(hub, entry["author_key"]), -entry["size"])


async def _drop_all(hub: Hub, artifact_id: str) -> None:
    """Delete every version of a deleted artifact, those its head named and any an update
    interrupted by a stop left behind, giving their bytes back."""
    keys = Range(gt=f"{artifact_id}:", lt=f"{artifact_id};")
    while True:
        page = await hub.records.find("artifact_versions", {"key": keys}, limit=50)
        for record in page.records:
            if await hub.records.delete("artifact_versions", record.key):
                owner, size = _measure(record)
                hub.limits.storage.add(owner_account(hub, owner), -size)
        if page.cursor is None:
            return


async def _stale(hub: Hub, head: Record, base: int) -> Conflict:
    """The refusal of an update from ``base``: the current version, its author and time in
    the message (a model calling through MCP sees only that) and in the details, with a
    diff hint from the base to the current content when the base is still kept."""
    latest = head.value["versions"][-1]
    by_n = {e["n"]: e for e in head.value["versions"]}
    old = await _content(hub, by_n[base]) if base in by_n else None
    hint = diff_hint(old, await _content(hub, latest) or "", base, latest["n"])
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(latest["at"]))
    refusal = Conflict(
        f"artifact {head.value['name']!r} is at version {latest['n']} now (by "
        f"{latest['author']}, {when}), not {base}; merge and retry with base_version "
        f"{latest['n']}.\n{hint}", current=head)
    refusal.details.update(id=head.value["id"], version=latest["n"], author=latest["author"],
                           at=latest["at"], base_version=base, diff=hint)
    return refusal


async def _content(hub: Hub, entry: dict[str, Any]) -> str | None:
    """A version's content; ``None`` when it was dropped (an update pruned it, or the
    artifact was deleted, after the head was read)."""
    record = await hub.records.get("artifact_versions", entry["key"])
    return str(record.value["content"]) if record is not None else None


@action(read_only=True)
async def artifact_get(
    ctx: ActionContext,
    id: Annotated[str | None, "the artifact's id (or give conversation and name)",
                  Field(max_length=MAX_ID)] = None,
    version: Annotated[int | None, "a kept version; left out: the latest"] = None,
    offset: Annotated[int, "the first character to return", Field(ge=0)] = 0,
    limit: Annotated[int, "how many characters at most",
                     Field(ge=1, le=MAX_PAGE_CHARS)] = PAGE_CHARS,
    conversation: Annotated[str | None, "its #conversation, with name",
                            Field(max_length=MAX_CONVERSATION)] = None,
    name: Annotated[str | None, "its name, with conversation",
                    Field(max_length=MAX_NAME)] = None,
) -> dict[str, Any]:
    """Read a version of an artifact (members of its conversation and the hub's owner may), a
    page at a time: ``content`` holds characters ``[offset, offset + limit)`` of ``total``;
    ``next_offset`` is where the next page starts (null after the last one)."""
    head = await _head(ctx, id, conversation, name)
    wanted = head.value["version"] if version is None else version
    entry = next((e for e in head.value["versions"] if e["n"] == wanted), None)
    if entry is None:
        raise NotFound(f"artifact {head.value['name']!r} has no version {wanted} (it keeps "
                       f"versions {head.value['versions'][0]['n']} to {head.value['version']})")
    text = await _content(ctx.hub, entry)
    if text is None:
        raise NotFound(f"version {wanted} of artifact {head.value['name']!r} was dropped "
                       "while you read it; `artifact_history` lists the versions kept")
    end = min(offset + limit, len(text))
    return dict(public(head), version=wanted, latest_version=head.value["version"],
                author=entry["author"], at=entry["at"], note=entry["note"],
                content=text[offset:end], offset=offset, total=len(text),
                next_offset=end if end < len(text) else None)


@action(read_only=True)
async def artifacts(
    ctx: ActionContext,
    conversation: Annotated[str, "the #conversation", Field(max_length=MAX_CONVERSATION)],
    after: Annotated[str | None, "the cursor of the previous page", Field(max_length=400)] = None,
) -> dict[str, Any]:
    """The artifacts of a #conversation (its members and the hub's owner may list them), by
    name: kind, latest version, who updated it last and when; ``more`` is true when there
    are others: ask again with ``after`` set to ``cursor``."""
    conv = _conversation(ctx, conversation)
    page = await ctx.hub.records.find("artifacts", {"conversation": "#" + conv.name},
                                      order="name", limit=MAX_LIST, after=after)
    return {"conversation": "#" + conv.name, "artifacts": [public(r) for r in page.records],
            "more": page.cursor is not None, "cursor": page.cursor}


@action(read_only=True)
async def artifact_history(
    ctx: ActionContext,
    id: Annotated[str, "the artifact's id", Field(max_length=MAX_ID)],
) -> dict[str, Any]:
    """The kept versions of an artifact, newest first: number, author, time, size in bytes
    and note (members of its conversation and the hub's owner may read it)."""
    head = await _head(ctx, id)
    versions = [{k: e[k] for k in ("n", "author", "at", "size", "note")}
                for e in reversed(head.value["versions"])]
    return dict(public(head), versions=versions)


@action()
async def artifact_delete(
    ctx: ActionContext,
    id: Annotated[str, "the artifact's id", Field(max_length=MAX_ID)],
) -> dict[str, Any]:
    """Delete an artifact with every version (its creator or the hub's owner may). Its
    conversation's members hear of it."""
    head = await _head(ctx, id)
    doc = head.value
    if doc["created_by_key"] != ctx.peer.key and not ctx.is_admin:
        raise Forbidden(f"only {doc['created_by']} (who created it) or the hub's owner may "
                        f"delete artifact {doc['name']!r}")
    try:
        await ctx.hub.records.delete("artifacts", id, revision=head.revision)
    except Conflict:
        raise Conflict(f"artifact {doc['name']!r} changed while you deleted it; read it and "
                       f"try again", current=await ctx.hub.records.get("artifacts", id)) from None
    await _drop_all(ctx.hub, id)
    name_key = f"{doc['conversation']} {doc['name']}"
    named = await ctx.hub.records.get("artifact_names", name_key)
    if named is not None and named.value["id"] == id:
        await ctx.hub.records.delete("artifact_names", name_key, revision=named.revision)
    await ctx.hub.audit.append("artifact_deleted", ctx.peer, subject=id,
                               conversation=doc["conversation"], versions=doc["version"])
    return {"id": id, "deleted": True}


def _measure(record: Record) -> tuple[str, int]:
    return str(record.value.get("author_key", "")), int(record.value.get("size", 0))


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    for collection in (HEADS, VERSIONS, NAMES):
        register(collection)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in (artifact_create, artifact_update, artifact_get, artifacts, artifact_history,
                 artifact_delete):
        register(item)


@hookimpl
def meshhub_startup(hub: Hub) -> None:
    hub.spawn(hub.limits.storage.load_records(hub, "artifact_versions", _measure, time.time()))


@hookimpl
async def meshhub_report_sections(hub: Hub, viewer: Peer, since: float,
                                  until: float) -> ReportSection | None:
    """Artifacts created or updated in the window, in the viewer's conversations."""
    convs = tuple("#" + c.name for c in hub.directory.conversations.values()
                  if viewer.key in c.members)
    if not convs:
        return None
    page = await hub.records.find("artifacts", {"conversation": In(convs),
                                                "changed_at": Range(ge=since)},
                                  order="changed_at", limit=MAX_LIST)
    lines = [line for r in page.records if (line := _report_line(r.value, since, until))]
    return ReportSection("Artifacts", lines, 60)


def _report_line(doc: dict[str, Any], since: float, until: float) -> str:
    inside = [e for e in doc["versions"] if since <= e["at"] < until]
    if not inside:
        return ""
    authors = ", ".join(report_text(a) for a in dict.fromkeys(e["author"] for e in inside))
    created = " (created)" if since <= doc["created_at"] < until else ""
    return (f"- {report_text(doc['conversation'])}: {report_text(doc['kind'])} "
            f"{report_text(doc['title'] or doc['name'])}{created}, {len(inside)} "
            f"version(s) by {authors}, now version {doc['version']}")
