"""Mesh-wide institutional memory: ``remember``, ``recall``, ``forget``, ``restore`` and
``memory_get``, kept in the ``memories`` collection.

Written as a third-party plugin would be. Every peer may remember and recall; what one session
learned is there for every other. ``recall`` is the record API's full-text search over a
memory's content and tags: every word of the query must be in a memory for it to be found,
and the ones found come best first (BM25 on SQLite). Tag filters keep the memories that carry
every tag given.

Forgetting is a soft delete: the memory stays, hidden from recall, with who forgot it and
when, so a mistaken forget can be undone. Only the member who forgot it (from any of its
sessions) or the hub's owner may restore it.

A memory's tags are a list, and the record API indexes scalar fields only, so each tag is also
one small document in ``memory_tags`` (key ``"<tag> <memory id>"``, indexed by tag). Ids sort
by time, so both collections are read newest first in key order, straight from an index.
A recall with tags searches among the memories it names, unless even its rarest tag is on so
many that a plain search, filtered after, is cheaper and provably missed nothing (it did not
fill its largest page).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden, InvalidRequest, NotFound
from meshhub.fields import TooLong
from meshhub.ids import new_id
from meshhub.limits import account
from meshhub.records import Collection, Hit, In, Record, search_terms
from meshhub.sanitize import ENGINE_MARKS, shown_snippet

if TYPE_CHECKING:
    from meshhub.hub import Hub

MEMORIES = Collection("memories", indexes=("forgotten_at",), search=("content", "tags"))
MEMORY_TAGS = Collection("memory_tags", indexes=("tag",))

MAX_CONTENT_BYTES = 16 * 1024
MAX_TAGS = 20
MAX_TAG = 40
MAX_RECALL = 100
TAG = re.compile(r"[^\W_][\w-]*")
TAG_RULE = (f"tags are lower-case words (letters, digits, '-' and '_', starting with a letter "
            f"or digit, at most {MAX_TAG} characters), at most {MAX_TAGS} of them")
# where a snippet's matched words start and end: rare in text, readable in a terminal. A
# memory's own mark characters (and backslashes) are escaped with a backslash in a snippet, so
# these are the hub's only; the engine marks with control characters no memory may hold
MARKS = ("⟦", "⟧")
SEARCH_PAGE = 1000  # the most one search returns (the record API's limit)
# keys per ``In`` condition: a search narrowed to tagged memories matches its words in every
# memory each time, so it takes many keys at once
SEARCH_CHUNK = 5000


def _check_content(content: str) -> str:
    size = len(content.encode())
    if size > MAX_CONTENT_BYTES:
        raise TooLong("content", MAX_CONTENT_BYTES, "bytes of UTF-8")
    if not content.strip():
        raise InvalidRequest("content must hold some text (1 byte to 16 KiB)")
    if any(mark in content for mark in ENGINE_MARKS):
        raise InvalidRequest("content cannot hold the control characters U+0002 and U+0003 "
                             "(recall marks the words it found with them)")
    return content


def public_snippet(snippet: str) -> str:
    """The engine's snippet as a peer sees it: the memory's own ``⟦``, ``⟧`` and ``\\``
    escaped with a backslash, the matched words between :data:`MARKS`."""
    return shown_snippet(snippet, MARKS)


def _check_tags(tags: list[str] | None) -> list[str]:
    """The tags, lower-cased and without repeats; ``InvalidRequest`` stating the rule when one
    breaks it."""
    out = list(dict.fromkeys(tag.strip().lower() for tag in tags or []))
    for tag in out:
        if len(tag) > MAX_TAG or not TAG.fullmatch(tag):
            raise InvalidRequest(f"bad tag {tag[:MAX_TAG]!r}: {TAG_RULE}")
    if len(out) > MAX_TAGS:
        raise InvalidRequest(f"{len(out)} tags: {TAG_RULE}")
    return out


def _name(hub: Hub, key: str | None, fallback: str | None) -> str | None:
    peer = hub.directory.peers.get(key) if key else None
    return peer.name if peer is not None else fallback


def view(hub: Hub, record: Record, snippet: str | None = None) -> dict[str, Any]:
    """A memory's public shape; ``snippet`` (:func:`public_snippet`) when a query found it."""
    value = record.value
    out: dict[str, Any] = {
        "id": record.key, "content": value["content"], "tags": value["tags"],
        "author": _name(hub, value["author"], value["author_name"]),
        "created_at": record.created_at,
    }
    if value.get("forgotten_at") is not None:
        out["forgotten_by"] = _name(hub, value["forgotten_by"], value["forgotten_by_name"])
        out["forgotten_at"] = value["forgotten_at"]
    if snippet is not None:
        out["snippet"] = snippet
    return out


async def _rarest(hub: Hub, tags: list[str]) -> tuple[str, int]:
    """The tag fewest memories carry, and how many do."""
    counts = [await hub.records.count("memory_tags", {"tag": tag}) for tag in tags]
    return tags[counts.index(min(counts))], min(counts)


async def _tagged(hub: Hub, tags: list[str], rarest: str,
                  size: int) -> AsyncIterator[list[str]]:
    """Ids of the memories carrying all ``tags``, newest first, a page of the ``rarest``
    tag's index at a time (pages may come out shorter, or empty)."""
    records = hub.records
    cursor: str | None = None
    while True:
        page = await records.find("memory_tags", {"tag": rarest}, order="-key", limit=size,
                                  after=cursor)
        ids = [r.value["memory"] for r in page.records]
        for tag in tags:
            if tag != rarest and ids:
                keys = In(tuple(f"{tag} {i}" for i in ids))
                having = {r.value["memory"] for r in (await records.find(
                    "memory_tags", {"key": keys}, limit=size)).records}
                ids = [i for i in ids if i in having]
        yield ids
        if page.cursor is None:
            return
        cursor = page.cursor


async def _search_tagged(hub: Hub, query: str, tags: list[str], rarest: str,
                         where: dict[str, Any], limit: int) -> list[Hit]:
    """The best ``limit`` matches of ``query`` among the memories with every tag, searched a
    page of the tag index at a time. The scores come from one search index over the whole
    collection, so those of several searches compare."""
    hits: list[Hit] = []
    async for ids in _tagged(hub, tags, rarest, SEARCH_CHUNK):
        if ids:
            hits += await hub.records.search("memories", query, limit=limit, marks=ENGINE_MARKS,
                                             where={**where, "key": In(tuple(ids))})
    hits.sort(key=lambda hit: (-hit.score, hit.record.key))
    return hits[:limit]


async def _ranked(hub: Hub, query: str, tags: list[str], where: dict[str, Any],
                  limit: int) -> list[Hit]:
    """With tags: few tagged memories are searched among at once; otherwise search, then keep
    the memories with every tag, unless the search filled its largest page and so may have
    left tagged matches out: then search among the tagged memories after all."""
    if not tags:
        return await hub.records.search("memories", query, where=where, limit=limit,
                                        marks=ENGINE_MARKS)
    rarest, tagged = await _rarest(hub, tags)
    if tagged > SEARCH_CHUNK:
        hits = await hub.records.search("memories", query, where=where, limit=SEARCH_PAGE,
                                        marks=ENGINE_MARKS)
        if len(hits) < SEARCH_PAGE:
            return [h for h in hits if set(tags) <= set(h.record.value["tags"])][:limit]
    return await _search_tagged(hub, query, tags, rarest, where, limit)


async def _newest(hub: Hub, tags: list[str], where: dict[str, Any],
                  limit: int) -> list[Record]:
    """The newest memories with every tag (every memory when none is given)."""
    if not tags:
        return (await hub.records.find("memories", where, order="-key", limit=limit)).records
    out: list[Record] = []
    async for ids in _tagged(hub, tags, (await _rarest(hub, tags))[0], MAX_RECALL):
        if ids:
            found = {r.key: r for r in (await hub.records.find(
                "memories", {**where, "key": In(tuple(ids))}, limit=len(ids))).records}
            out += [found[i] for i in ids if i in found]
        if len(out) >= limit:
            break
    return out[:limit]


def _missing(memory_id: str) -> NotFound:
    return NotFound(f"no memory {memory_id}; recall finds their ids")


async def _change(hub: Hub, memory_id: str,
                  change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> Record:
    """Apply ``change`` to a memory (``None``: leave it) and return it as it is then."""
    def checked(found: dict[str, Any] | None) -> dict[str, Any] | None:
        if found is None:
            raise _missing(memory_id)
        return change(found)

    stored = await hub.records.modify("memories", memory_id, checked)
    if stored is None:
        raise _missing(memory_id)
    return stored


async def _get(hub: Hub, memory_id: str) -> Record:
    found = await hub.records.get("memories", memory_id)
    if found is None:
        raise _missing(memory_id)
    return found


@action()
async def remember(
    ctx: ActionContext,
    content: Annotated[str, "what to remember: a fact, a decision, how something works "
                            "(1 byte to 16 KiB)"],
    tags: Annotated[list[str] | None, f"lower-case words to file it under (at most "
                                      f"{MAX_TAGS})"] = None,
) -> dict[str, Any]:
    """Remember something for the whole mesh: every peer can recall it later.

    Returns the memory with its id (forget and restore take it)."""
    content, tag_list = _check_content(content), _check_tags(tags)
    memory_id = new_id()
    value = {"content": content, "tags": tag_list, "author": ctx.peer.key,
             "author_name": ctx.peer.name, "forgotten_at": None}
    quota, size = ctx.hub.limits.storage, _measure_value(value)[1]
    quota.check(account(ctx.peer), size)
    quota.add(account(ctx.peer), size)  # now, so rememberings in flight count too
    records = ctx.hub.records
    try:
        # queued in one loop turn: one commit for the memory and its tags
        stored, *_ = await asyncio.gather(
            records.create("memories", memory_id, value),
            *(records.create("memory_tags", f"{tag} {memory_id}",
                             {"tag": tag, "memory": memory_id}) for tag in tag_list))
    except Exception:
        quota.add(account(ctx.peer), -size)
        raise
    return view(ctx.hub, stored)


def _measure_value(value: dict[str, Any]) -> tuple[str, int]:
    """Whose storage quota a memory counts against (its author's; forgetting keeps it), and
    its bytes: its content and tags as UTF-8."""
    return value["author"], len(value["content"].encode()) + sum(
        len(tag.encode()) for tag in value["tags"])


@action(read_only=True)
async def recall(
    ctx: ActionContext,
    query: Annotated[str | None, "words to look for; a memory must hold every one (in its "
                                 "text or tags); best matches first"] = None,
    tags: Annotated[list[str] | None, "only memories carrying every one of these tags"] = None,
    limit: Annotated[int, f"at most this many (1-{MAX_RECALL})"] = 10,
    include_forgotten: Annotated[bool, "also memories someone forgot"] = False,
) -> list[dict[str, Any]]:
    """Recall what the mesh remembered: full-text search, ranked, with a snippet marking the
    words found; or, without a query, the newest memories (with those tags)."""
    if not 1 <= limit <= MAX_RECALL:
        raise InvalidRequest(f"limit must be between 1 and {MAX_RECALL}")
    tag_list = _check_tags(tags)
    where: dict[str, Any] = {} if include_forgotten else {"forgotten_at": None}
    if query is not None and search_terms(query):
        hits = await _ranked(ctx.hub, query, tag_list, where, limit)
        return [view(ctx.hub, hit.record, public_snippet(hit.snippet)) for hit in hits]
    return [view(ctx.hub, r) for r in await _newest(ctx.hub, tag_list, where, limit)]


@action(read_only=True)
async def memory_get(
    ctx: ActionContext, id: Annotated[str, "the memory's id"]
) -> dict[str, Any]:
    """One memory by its id, forgotten or not."""
    return view(ctx.hub, await _get(ctx.hub, id))


@action()
async def forget(
    ctx: ActionContext, id: Annotated[str, "the memory's id"]
) -> dict[str, Any]:
    """Forget a memory: recall stops finding it. It is kept, with who forgot it and when, and
    whoever forgot it (or the hub's owner) can restore it."""
    stamp = {"forgotten_at": time.time(), "forgotten_by": ctx.peer.key,
             "forgotten_by_name": ctx.peer.name, "forgotten_account": account(ctx.peer)}

    def change(found: dict[str, Any]) -> dict[str, Any] | None:
        return None if found["forgotten_at"] is not None else found | stamp  # first one stands

    return view(ctx.hub, await _change(ctx.hub, id, change))


@action()
async def restore(
    ctx: ActionContext, id: Annotated[str, "the memory's id"]
) -> dict[str, Any]:
    """Bring a forgotten memory back to recall. Only the member who forgot it (from any of its
    sessions), or the hub's owner, may."""
    def change(found: dict[str, Any]) -> dict[str, Any] | None:
        if found["forgotten_at"] is None:
            return None
        if found["forgotten_account"] != account(ctx.peer) and not ctx.is_admin:
            who = _name(ctx.hub, found["forgotten_by"], found["forgotten_by_name"])
            raise Forbidden(f"only {who}, who forgot memory {id}, or the hub's owner may "
                            f"restore it")
        return {k: v for k, v in found.items() if not k.startswith("forgotten_")} | {
            "forgotten_at": None}

    return view(ctx.hub, await _change(ctx.hub, id, change))


ALL: list[Action] = [remember, recall, memory_get, forget, restore]


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(MEMORIES)
    register(MEMORY_TAGS)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)


@hookimpl
def meshhub_startup(hub: Hub) -> None:
    # in the background, as the message bodies are counted: a start does not wait for it
    hub.spawn(hub.limits.storage.load_records(
        hub, "memories", lambda record: _measure_value(record.value), time.time()))
