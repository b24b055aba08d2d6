"""Files on the mesh: ``file_put`` (base64 content, optionally sent at once) and ``files``.
Blobs live in :class:`meshhub.files.FileStore`; this plugin keeps who uploaded what and who may
read it (collection ``files``: one document per file and peer, a *grant*).
:mod:`meshhub.builtins.file_sharing` adds shares, fetching, status and deletion.

A peer may read a file it uploaded or that came to it as an attachment of a message it sent or
received; the hub's owner may read any. The same bytes are one blob, but a name is per reader:
each peer gets the name it uploaded the file under, or the one its message carried, never
another uploader's. A grant lasts ``[files] attachment_ttl`` seconds (a day by default) from
the upload or the message that made it: a file nobody shared is gone after that. A blob's bytes
count once against one member's storage quota (collection ``file_blobs``: its first uploader or
sharer), until the blob is removed. Requests travel
as one WebSocket frame or HTTP body, so ``file_put`` through them is bounded by the frame limit
too; larger files go through the streaming routes of :mod:`meshhub.builtins.file_transfer`, and
connectors inside the hub use the store directly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import InvalidRequest, NotFound
from meshhub.fields import MAX_MIME
from meshhub.files import FileStore, StoredFile
from meshhub.limits import account, owner_account
from meshhub.records import Collection, Conflict

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

    from meshhub.hub import Hub
    from meshhub.models import Message, Peer

FILES = Collection("files", indexes=("file", "peer", "uploaded", "expires"))
BLOBS = Collection("file_blobs", indexes=("owner",))
DEFAULT_ATTACHMENT_TTL = 86400.0


def file_key(sha256: str, peer: str) -> str:
    """One document per file and peer that may read it."""
    return f"{sha256} {peer}"


def store_for(hub: Hub) -> FileStore:
    return FileStore.for_config(hub.config)


def attachment_ttl(hub: Hub) -> float:
    """Seconds a grant lasts (``[files] attachment_ttl``): how long an unshared file is kept."""
    value = hub.config.section("files").get("attachment_ttl", DEFAULT_ATTACHMENT_TTL)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidRequest("[files] attachment_ttl must be a positive number of seconds")
    return float(value)


async def grant(hub: Hub, file: dict[str, Any], peers: list[str], uploader: str | None) -> None:
    """Record that ``peers`` may read ``file`` (an attachment dict) until the attachment
    lifetime from now. A peer keeps the name it was first given; an upload marks it as the
    uploader whenever it comes; a later grant only ever moves the expiry later."""
    expires = time.time() + attachment_ttl(hub)

    def change(peer: str) -> Callable[[dict[str, Any] | None], dict[str, Any] | None]:
        uploaded = peer == uploader

        def merge(found: dict[str, Any] | None) -> dict[str, Any] | None:
            if found is None:
                return {"file": file["file"], "peer": peer, "name": file.get("name", "file"),
                        "size": int(file.get("size", 0)),
                        "mime": file.get("mime", "application/octet-stream"),
                        "uploaded": uploaded, "expires": expires}
            if (found["uploaded"] or not uploaded) and found.get("expires", 0) >= expires:
                return None
            return found | {"uploaded": found["uploaded"] or uploaded,
                            "expires": max(found.get("expires", 0), expires)}

        return merge

    # queued in one loop turn: one commit for every reader. A reader told of the message as
    # soon as it is stored may list its files at once: its read waits for these writes.
    await asyncio.gather(*(hub.records.modify("files", file_key(file["file"], p), change(p))
                           for p in dict.fromkeys(peers)))


async def label_for(hub: Hub, peer_key: str, sha256: str, *,
                    any_peer: bool = False) -> tuple[str, str] | None:
    """(name, mime) of a file as ``peer_key`` was given it, or ``None`` when it may not read
    it; ``any_peer`` (the owner): some uploader's label when it was given none itself."""
    records = hub.records
    found = await records.get("files", file_key(sha256, peer_key))
    label = found.value if found is not None else None
    if label is None and not store_for(hub).exists(sha256):
        return None  # no such file: nothing to look for (a made-up id reads no history)
    if label is None:
        # the grant of a just-sent attachment may not be written yet: ask the messages this
        # peer sent or received, matching the attachment's ``file`` field exactly (a file
        # name that happens to be a digest must not open the file)
        label = await hub.store.attachment_for(peer_key, sha256)
    if label is None and any_peer:
        first = (await records.find("files", {"file": sha256, "uploaded": True},
                                    order="created_at", limit=1)).records
        first = first or (await records.find("files", {"file": sha256}, order="created_at",
                                             limit=1)).records
        label = first[0].value if first else None
    return None if label is None else (str(label.get("name") or "file"),
                                       str(label.get("mime") or "application/octet-stream"))


def decode_content(content: str) -> bytes:
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("content must be base64") from None


def reserve(hub: Hub, peer: Peer, size: int) -> None:
    """Hold ``size`` bytes of ``peer``'s storage quota (:class:`QuotaExceeded` when they do not
    fit); :func:`settle_blob` keeps them or gives them back."""
    hub.limits.storage.check(account(peer), size)
    hub.limits.storage.add(account(peer), size)


async def hold_for(hub: Hub, peer: Peer, stored: StoredFile) -> int:
    """Hold ``peer``'s quota for an upload of ``stored`` unless its blob has an owner already
    (the same bytes count once); the bytes held."""
    if await hub.records.get(BLOBS.name, stored.file) is not None:
        return 0
    reserve(hub, peer, stored.size)
    return stored.size


async def settle_blob(hub: Hub, peer: Peer, stored: StoredFile, reserved: int) -> None:
    """Charge ``stored``'s blob to ``peer`` if it has no owner yet (``reserved`` bytes were
    held for it), else give the held bytes back: the same bytes count once."""
    try:
        await hub.records.create(BLOBS.name, stored.file,
                                 {"owner": peer.key, "size": stored.size})
    except Conflict:
        hub.limits.storage.add(account(peer), -reserved)
    else:
        hub.limits.storage.add(account(peer), stored.size - reserved)


async def claim_blob(hub: Hub, peer: Peer, stored: StoredFile) -> None:
    """Charge an already stored blob that nobody owns (one that came from a connector) to
    ``peer``, who is about to keep it (a share)."""
    held = await hold_for(hub, peer, stored)
    if held:
        await settle_blob(hub, peer, stored, held)


async def release_blob(hub: Hub, digest: str) -> None:
    """The blob ``digest`` was removed: its bytes no longer count against its owner."""
    found = await hub.records.get(BLOBS.name, digest)
    if found is not None and await hub.records.delete(BLOBS.name, digest,
                                                      revision=found.revision):
        hub.limits.storage.add(owner_account(hub, found.value["owner"]),
                               -int(found.value["size"]))


async def keep_upload(hub: Hub, peer: Peer, stored: StoredFile, data: bytes,
                      held: int) -> None:
    """Write an upload's blob at once (``held`` bytes of the quota held for it by
    :func:`hold_for`), charge it to its owner and grant it to the uploader."""
    try:
        store_for(hub).write(stored, data)
    except BaseException:
        hub.limits.storage.add(account(peer), -held)
        raise
    await settle_blob(hub, peer, stored, held)
    await grant(hub, stored.attachment(), [peer.key], peer.key)


@action()
async def file_put(
    ctx: ActionContext,
    content: Annotated[str, "the file's bytes, base64-encoded"],
    name: Annotated[str, "the file name to show (made safe, cut to 120 characters)"],
    mime: Annotated[str | None, "media type claimed; what the bytes show wins (sniffed)",
                    Field(max_length=MAX_MIME)] = None,
    to: Annotated[str | list[str] | None, "also send it at once to these targets"] = None,
    text: Annotated[str, "the message to send with it (with ``to``)"] = "",
    reply_to: Annotated[str | None, "send it as a reply in this thread"] = None,
) -> dict[str, Any]:
    """Store a file on the hub; with ``to`` (or ``reply_to``) also send it as an attachment.

    A send that is refused (an unknown target, a thread you cannot see) stores nothing."""
    data = decode_content(content)
    stored = store_for(ctx.hub).describe(data, name, mime)
    attachment = stored.attachment()
    pending = None
    held = await hold_for(ctx.hub, ctx.peer, stored)
    try:
        if to is not None or reply_to is not None:
            pending = await ctx.hub.prepare_send(ctx.peer, to, text, reply_to=reply_to,
                                                 attachments=[attachment])
    except BaseException:
        ctx.hub.limits.storage.add(account(ctx.peer), -held)
        raise
    # written before the message just queued can commit (no await in between), so the
    # attachment's blob is there when the message is accepted
    await keep_upload(ctx.hub, ctx.peer, stored, data, held)
    result: dict[str, Any] = dict(attachment)
    if pending is not None:
        result["sent"] = await pending.wait()
    return result


@action(read_only=True)
async def files(
    ctx: ActionContext,
    limit: Annotated[int, "at most this many (1-500), newest first"] = 50,
) -> list[dict[str, Any]]:
    """Files you uploaded or received and may still fetch (attachments expire; see
    ``file_share`` to keep one)."""
    if not 1 <= limit <= 500:
        raise InvalidRequest("limit must be between 1 and 500")
    page = await ctx.hub.records.find("files", {"peer": ctx.peer.key}, order="-created_at",
                                      limit=limit)
    now = time.time()
    return [{"file": v["file"], "name": v["name"], "size": v["size"], "mime": v["mime"],
             "uploaded": bool(v["uploaded"]), "created_at": r.created_at,
             "expires": v.get("expires")}
            for r, v in ((r, r.value) for r in page.records)
            if v.get("expires") is None or v["expires"] > now]  # an expired one is a tombstone


ALL: list[Action] = [file_put, files]


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(FILES)
    register(BLOBS)


@hookimpl
def meshhub_register_migrations(register: Callable[[Migrations], None]) -> None:
    from .sqlite_upgrade_files import migrations  # it names FILES

    register(migrations)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)


async def adopt_blob(hub: Hub, digest: str, owner: str, size: int) -> None:
    """Give a stored blob with no owner record (kept before blobs had one) the owner
    ``owner``, charged at once."""
    if not store_for(hub).exists(digest):
        return
    try:
        await hub.records.create(BLOBS.name, digest, {"owner": owner, "size": size})
    except Conflict:
        return
    hub.limits.storage.add(owner_account(hub, owner), size)


async def count_blobs(hub: Hub, before: float) -> None:
    """Count each blob against its owner's storage quota (:mod:`meshhub.limits`); a blob
    uploaded before owners were recorded is given its uploader."""
    await hub.limits.storage.load_records(
        hub, BLOBS.name, lambda r: (r.value["owner"], int(r.value["size"])), before)
    for found in await hub.records.all(FILES.name, {"uploaded": True}):
        await adopt_blob(hub, found.value["file"], found.value["peer"],
                         int(found.value["size"]))


@hookimpl
def meshhub_startup(hub: Hub) -> None:
    # in the background, as the message bodies are counted: a start does not wait for it
    hub.spawn(count_blobs(hub, time.time()))


@hookimpl
async def meshhub_message_accepted(hub: Hub, message: Message) -> None:
    """Whoever sent or received an attachment may read it."""
    for attachment in message.attachments:
        if isinstance(attachment, dict) and isinstance(attachment.get("file"), str):
            if not store_for(hub).exists(attachment["file"]):
                raise NotFound(f"message {message.id} names a file the store does not have")
            await grant(hub, attachment, [message.sender, *message.recipients], None)
