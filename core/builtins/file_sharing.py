"""Files shared with the whole mesh: ``file_share``, ``file_list``, ``file_get``,
``file_status`` and ``file_delete``, over the grants of :mod:`meshhub.builtins.files_actions`.

A share (collection ``file_shares``, keyed by its own id) names a blob, with a name, tags and a
description; every peer may list and fetch it, and it stays until its sharer or the hub's owner
deletes it. Tags are also kept one small document per tag (``file_share_tags``) so a listing by
tag reads an index. Every fetch through a share by a peer other than its sharer or the file's
uploader is counted in ``file_fetches`` (one document per share and fetcher: first, last,
count), which only the sharer and the hub's owner may read. Files nobody shared expire with
their grants; a sweep removes a blob once no live grant and no share names it, and an expired
grant only with its blob (until then it refuses the file as expired). ``file_get`` carries at
most :data:`MAX_INLINE` bytes; larger files go through the download route.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import Forbidden, InvalidRequest, NotFound, TooLarge
from meshhub.files import StoredFile
from meshhub.ids import new_id
from meshhub.records import Change, Collection, Range, Record
from meshhub.report import ReportSection, report_text
from meshhub.routing import resolve_peers

from .files_actions import (
    FILES,
    adopt_blob,
    attachment_ttl,
    claim_blob,
    decode_content,
    file_key,
    hold_for,
    keep_upload,
    label_for,
    release_blob,
    store_for,
)
from .report_window import window_lines

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Peer

log = logging.getLogger(__name__)
MAX_TAGS = 20
MAX_TAG = 40
MAX_DESCRIPTION = 2000
MAX_FILE_NAME = 200
SWEEP_EVERY = 300.0
MAX_INLINE = 1024 * 1024  # bytes file_get carries in one response (base64 makes them 4/3)


def _everyone(hub: Hub, change: Change) -> list[str]:
    """A share is the mesh's: every peer hears of it."""
    return list(hub.directory.peers)


SHARES = Collection("file_shares", indexes=("file", "shared_by", "shared_at"),
                    search=("name", "description", "tags_text"), feed=True, notify=_everyone)
SHARE_TAGS = Collection("file_share_tags", indexes=("tag", "share", "shared_at"))
FETCHES = Collection("file_fetches", indexes=("file", "share", "last"))


class Expired(NotFound):
    """The file was an attachment nobody shared, and its lifetime is over."""

    code = "expired"
    http_status = 410


def share_view(hub: Hub, record: Record) -> dict[str, Any]:
    v = record.value
    sharer = hub.directory.peers.get(v["shared_by"])
    return {"id": record.key, "file": v["file"], "name": v["name"], "size": v["size"],
            "mime": v["mime"], "tags": v["tags"], "description": v["description"],
            "shared_by": sharer.name if sharer is not None else v["shared_by"],
            "shared_at": v["shared_at"]}


def clean_tags(tags: list[str]) -> list[str]:
    """Tags as they are kept: lower case, trimmed, once each; a bad one is refused."""
    out: list[str] = []
    for tag in tags:
        clean = tag.strip().lower().lstrip("#")
        if not clean or len(clean) > MAX_TAG or any(c.isspace() for c in clean):
            raise InvalidRequest(f"tags: {tag[:MAX_TAG]!r} is not a tag (1-{MAX_TAG} "
                                 "characters, no spaces)")
        if clean not in out:
            out.append(clean)
    if len(out) > MAX_TAGS:
        raise InvalidRequest(f"tags: at most {MAX_TAGS}")
    return out


async def share_of(hub: Hub, id: str) -> Record | None:
    """The share ``id`` names: a share id, or a file digest some share names (the oldest)."""
    if len(id) == 64:
        page = await hub.records.find(SHARES.name, {"file": id}, order="created_at", limit=1)
        return page.records[0] if page.records else None
    return await hub.records.get(SHARES.name, id) if id else None


async def readable(hub: Hub, peer: Peer, id: str, *,
                   is_admin: bool) -> tuple[str, str, str, Record | None]:
    """``(digest, name, mime, share)`` of the file ``id`` (a share id or a digest) if ``peer``
    may fetch it: it is shared (``share``: the share it is fetched through), or ``peer``
    uploaded or received it and its grant is live (``share`` is ``None``: a private fetch,
    counted on no share), or ``peer`` is the owner. An attachment past its lifetime is
    :class:`Expired`."""
    share = await share_of(hub, id)
    if len(id) != 64:
        if share is None:
            raise NotFound(f"no shared file {id}")
        return share.value["file"], share.value["name"], share.value["mime"], share
    grant_record = await hub.records.get(FILES.name, file_key(id, peer.key))
    expires = grant_record.value.get("expires") if grant_record is not None else None
    live = grant_record is not None and (expires is None or expires > time.time())
    if share is not None and not live:
        return share.value["file"], share.value["name"], share.value["mime"], share
    if expires is not None and expires <= time.time() and not is_admin:
        raise Expired(f"file {id} expired: attachments are kept "
                      f"until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(expires))} "
                      "unless someone shares them (file_share)")
    if not store_for(hub).exists(id):
        if grant_record is not None or await hub.store.attachment_for(peer.key, id):
            raise Expired(f"file {id} expired: attachments are kept a limited time unless "
                          "someone shares them (file_share)")
        raise NotFound(f"no file {id} that you uploaded or received")
    label = await label_for(hub, peer.key, id, any_peer=is_admin)
    if label is None and not is_admin:
        raise NotFound(f"no file {id} that you uploaded or received")
    name, mime = label or ("file", "application/octet-stream")
    return id, name, mime, None


async def record_fetch(hub: Hub, peer: Peer, share: Record | None) -> None:
    """Count a fetch through ``share`` by ``peer`` unless it shared it or uploaded the file
    (a private fetch, ``share`` ``None``, is counted on no share)."""
    if share is None or share.value["shared_by"] == peer.key:
        return
    digest = share.value["file"]
    found = await hub.records.get(FILES.name, file_key(digest, peer.key))
    if found is not None and found.value["uploaded"]:
        return
    now = time.time()

    def count(found: dict[str, Any] | None) -> dict[str, Any]:
        if found is None:
            return {"file": digest, "share": share.key, "peer": peer.key, "first": now,
                    "last": now, "count": 1}
        return found | {"last": now, "count": int(found["count"]) + 1}

    await hub.records.modify(FETCHES.name, f"{share.key} {peer.key}", count)


async def _keep(ctx: ActionContext, content: str, name: str) -> StoredFile:
    """Store base64 ``content`` as ``file_put`` does."""
    data = decode_content(content)
    stored = store_for(ctx.hub).describe(data, name)
    await keep_upload(ctx.hub, ctx.peer, stored, data, await hold_for(ctx.hub, ctx.peer, stored))
    return stored


async def create_share(hub: Hub, peer: Peer, stored: StoredFile, tags: list[str],
                       description: str) -> dict[str, Any]:
    """Write a share of ``stored`` by ``peer``, and one document per tag in the same turn."""
    share_id, now = new_id(), time.time()
    value = {"file": stored.file, "name": stored.name, "size": stored.size,
             "mime": stored.mime, "tags": tags, "tags_text": " ".join(tags),
             "description": description, "shared_by": peer.key, "shared_at": now}
    writes = [hub.records.create(SHARES.name, share_id, value)]
    writes += [hub.records.create(SHARE_TAGS.name, f"{share_id} {tag}",
                                  {"tag": tag, "share": share_id, "shared_at": now})
               for tag in tags]
    record, *_ = await asyncio.gather(*writes)
    return share_view(hub, record)


@action()
async def file_share(
    ctx: ActionContext,
    id: Annotated[str | None, "a file you uploaded or received (its id); or give content"] = None,
    content: Annotated[str | None, "the file's bytes, base64-encoded (instead of id)"] = None,
    name: Annotated[str | None, "the name to show (made safe); default: the file's",
                    Field(max_length=MAX_FILE_NAME)] = None,
    tags: Annotated[list[str] | None, "tags to find it by (at most 20)"] = None,
    description: Annotated[str, "what it is", Field(max_length=MAX_DESCRIPTION)] = "",
) -> dict[str, Any]:
    """Share a file with the whole mesh, to keep: every peer may list and fetch it until you
    (or the hub's owner) delete it. Give ``id`` of a file you may fetch, or ``content``."""
    if (id is None) == (content is None):
        raise InvalidRequest("give either id or content")
    clean = clean_tags(tags or [])
    if content is not None:
        stored = await _keep(ctx, content, name or "file")
    else:
        assert id is not None
        digest, label, _, _ = await readable(ctx.hub, ctx.peer, id, is_admin=ctx.is_admin)
        stored = store_for(ctx.hub).describe_blob(digest, name or label)
        await claim_blob(ctx.hub, ctx.peer, stored)
    return await create_share(ctx.hub, ctx.peer, stored, clean, description)


@action(read_only=True)
async def file_list(
    ctx: ActionContext,
    query: Annotated[str | None, "words to find in the name, tags or description",
                     Field(max_length=500)] = None,
    tags: Annotated[list[str] | None, "only files with every one of these tags"] = None,
    shared_by: Annotated[str | None, "only files this peer shared", Field(max_length=100)] = None,
    limit: Annotated[int, "at most this many (1-200)"] = 50,
    after: Annotated[str | None, "the cursor of the previous page", Field(max_length=200)] = None,
) -> dict[str, Any]:
    """The files shared with the mesh, newest first (with ``query``: best match first): each
    with its id, name, size, type, tags, who shared it and when. ``cursor`` is set when there
    are more: ask again with ``after`` (not with ``query``)."""
    if not 1 <= limit <= 200:
        raise InvalidRequest("limit must be between 1 and 200")
    wanted = clean_tags(tags or [])
    where: dict[str, Any] = {}
    if shared_by is not None:
        where["shared_by"] = (await resolve_peers(ctx.hub, [shared_by], ctx.peer, "shared_by"))[0]
    records = ctx.hub.records
    if query:
        hits = await records.search(SHARES.name, query, where=where, limit=limit)
        found, cursor = [h.record for h in hits], None
    elif wanted:
        page = await records.find(SHARE_TAGS.name, {"tag": wanted[0]}, order="-shared_at",
                                  limit=limit, after=after)
        shares = await asyncio.gather(*(records.get(SHARES.name, r.value["share"])
                                        for r in page.records))
        found, cursor = [s for s in shares if s is not None], page.cursor
    else:
        page = await records.find(SHARES.name, where, order="-shared_at", limit=limit,
                                  after=after)
        found, cursor = page.records, page.cursor
    found = [r for r in found if set(wanted) <= set(r.value["tags"])
             and all(r.value[k] == v for k, v in where.items())]
    return {"files": [share_view(ctx.hub, r) for r in found], "cursor": cursor}


@action(read_only=True)
async def file_get(
    ctx: ActionContext, id: Annotated[str, "a shared file's id, or a file's digest",
                                      Field(max_length=100)]
) -> dict[str, Any]:
    """A file you may fetch (shared with the mesh, or one you uploaded or received and that has
    not expired): its name, size, sniffed type and base64 content. A file over 1 MiB is
    refused (``too_large``): fetch it with ``GET /api/files/<id>`` (a token, or a ticket from
    ``token_file_transfer``), which streams it."""
    digest, name, mime, share = await readable(ctx.hub, ctx.peer, id, is_admin=ctx.is_admin)
    files = store_for(ctx.hub)
    size = files.size_of(digest)
    if size > MAX_INLINE:
        raise TooLarge(f"file {id} is {size} bytes, more than file_get carries ({MAX_INLINE}):"
                       f" fetch it with GET /api/files/{id} (a token, or a ticket from "
                       "token_file_transfer)", limit=MAX_INLINE, size=size)
    data = files.get(digest)
    await record_fetch(ctx.hub, ctx.peer, share)
    return {"file": digest, "name": name, "size": len(data), "mime": mime,
            "content": base64.b64encode(data).decode()}


async def _owned_share(ctx: ActionContext, id: str) -> Record:
    """The share ``id`` if the caller shared it or owns the hub."""
    share = await share_of(ctx.hub, id)
    if share is None:
        raise NotFound(f"no shared file {id}")
    if share.value["shared_by"] != ctx.peer.key and not ctx.is_admin:
        raise Forbidden("only the peer who shared this file, or the hub's owner, may do this")
    return share


@action(read_only=True)
async def file_status(
    ctx: ActionContext, id: Annotated[str, "a shared file's id", Field(max_length=100)]
) -> dict[str, Any]:
    """Who fetched a file you shared, and when (first and last time, how often). Only its
    sharer and the hub's owner may see it."""
    share = await _owned_share(ctx, id)
    fetches = await ctx.hub.records.all(FETCHES.name, {"share": share.key}, order="-last")
    peers = ctx.hub.directory.peers
    return dict(share_view(ctx.hub, share), fetched_by=[
        {"peer": peers[v["peer"]].name if v["peer"] in peers else v["peer"],
         "first": v["first"], "last": v["last"], "count": v["count"]}
        for v in (r.value for r in fetches)])


@action()
async def file_delete(
    ctx: ActionContext, id: Annotated[str, "a shared file's id", Field(max_length=100)]
) -> dict[str, Any]:
    """Delete a shared file: by its sharer or the hub's owner. The share goes, and the bytes
    too unless another share or a live attachment still names them."""
    share = await _owned_share(ctx, id)
    hub, value = ctx.hub, share.value
    await asyncio.gather(hub.records.delete(SHARES.name, share.key, revision=share.revision),
                         *(hub.records.delete(SHARE_TAGS.name, f"{share.key} {tag}")
                           for tag in value["tags"]))
    await _drop_upload_grant(hub, value["file"], value["shared_by"])
    removed = await drop_blob_if_unnamed(hub, value["file"])
    await hub.audit.append("file_deleted", ctx.peer, subject=share.key, file=value["file"],
                           name=value["name"], size=value["size"])
    return {"id": share.key, "deleted": True, "blob_removed": removed}


async def _drop_upload_grant(hub: Hub, digest: str, sharer: str) -> None:
    """Remove the grant that uploading a shared file gave its sharer, so the deleted share's
    bytes can go; a grant from a message the sharer sent or received stays (it may still read
    that attachment)."""
    found = await hub.records.get(FILES.name, file_key(digest, sharer))
    if found is None or not found.value["uploaded"]:
        return
    if await hub.store.attachment_for(sharer, digest):
        return
    await hub.records.delete(FILES.name, found.key, revision=found.revision)


def _mtime(path: Any) -> float | None:
    try:
        return float(path.stat().st_mtime)
    except FileNotFoundError:
        return None


async def drop_blob_if_unnamed(hub: Hub, digest: str, *, older_than: float | None = None
                               ) -> bool:
    """Remove the blob ``digest`` when no share and no live grant names it, it was not
    stored again while that was looked up (an upload touches it before its grant is written)
    and, for the sweep, not in the last ``older_than`` seconds; its bytes are then given back
    to its owner's quota."""
    records, now = hub.records, time.time()
    files = store_for(hub)
    path = files.path_of(digest)
    seen = _mtime(path)
    if seen is None or (older_than is not None and seen > now - older_than):
        return False
    if await records.count(SHARES.name, {"file": digest}):
        return False
    if await records.count(FILES.name, {"file": digest, "expires": Range(gt=now)}):
        return False
    if await records.count(FILES.name, {"file": digest, "expires": None}):
        return False  # a grant from before attachments expired: kept
    if _mtime(path) != seen or not files.delete(digest):  # no await since the stat
        return False
    await release_blob(hub, digest)
    return True


async def sweep_expired(hub: Hub) -> int:
    """Remove the blobs nobody names any more, the expired grants of blobs that are gone (one
    of a blob still kept refuses it as expired) and uploads a crash left half written; how
    many blobs went."""
    expired = await hub.records.all(FILES.name, {"expires": Range(le=time.time())})
    files, gone = store_for(hub), 0
    for digest in dict.fromkeys(r.value["file"] for r in expired):
        if await drop_blob_if_unnamed(hub, digest, older_than=attachment_ttl(hub)):
            gone += 1
    for record in expired:
        if not files.exists(record.value["file"]):
            await hub.records.delete(FILES.name, record.key, revision=record.revision)
    files.sweep_incoming()
    return gone


async def count_shared_blobs(hub: Hub) -> None:
    """A shared blob with no owner record (shared before blobs had one) counts against its
    sharer."""
    for found in await hub.records.all(SHARES.name, order="created_at"):
        await adopt_blob(hub, found.value["file"], found.value["shared_by"],
                         int(found.value["size"]))


async def _sweep_forever(hub: Hub) -> None:
    """Sweep now and then; a failed sweep is logged and the next one tries again."""
    while True:
        try:
            await sweep_expired(hub)
        except Exception:
            log.exception("the sweep of expired files failed")
        await asyncio.sleep(SWEEP_EVERY)


ALL: list[Action] = [file_share, file_list, file_get, file_status, file_delete]


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    for collection in (SHARES, SHARE_TAGS, FETCHES):
        register(collection)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)


@hookimpl
def meshhub_startup(hub: Hub) -> None:
    hub.spawn(_sweep_forever(hub))
    hub.spawn(count_shared_blobs(hub))


@hookimpl
async def meshhub_report_sections(hub: Hub, viewer: Peer, since: float, until: float
                                  ) -> ReportSection | None:
    """Files shared and deleted in the window: every peer may see the mesh's shares."""
    lines = await window_lines(hub, SHARES.name, {}, since=since, until=until,
                               field="shared_at", line=lambda r: _shared_line(hub, r))
    lines += await _deleted(hub, since, until)
    return ReportSection("Files", lines, order=80) if lines else None


def _shared_line(hub: Hub, record: Record) -> str:
    return (f"- shared: {report_text(record.value['name'])} ({record.value['size']} bytes) "
            f"by {report_text(share_view(hub, record)['shared_by'])}")


async def _deleted(hub: Hub, since: float, until: float) -> list[str]:
    """The deletions the audit log holds for ``[since, until)``, oldest first, read a page
    at a time (``until`` in the query, so later deletions never crowd them out)."""
    lines: list[str] = []
    after: int | None = 0
    while after is not None:
        page = await hub.audit.entries(since=since, until=until, event="file_deleted",
                                       after_seq=after, limit=500)
        lines += [f"- deleted: {report_text(str(e['details'].get('name', '')))} by "
                  f"{report_text(e['actor_name'])}" for e in page]
        after = page[-1]["seq"] if len(page) == 500 else None
    return lines
