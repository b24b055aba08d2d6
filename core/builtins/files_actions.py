"""Files on the mesh: ``file_put`` (base64 content, optionally sent at once), ``file_get`` and
``files``. Blobs live in :class:`meshhub.files.FileStore`; this plugin keeps who uploaded what and
who may read it (migration set ``meshhub.files``).

A peer may read a file it uploaded or that came to it as an attachment of a message it sent or
received; the hub's owner may read any. The same bytes are one blob, but a name is per reader:
each peer gets the name it uploaded the file under, or the one its message carried, never
another uploader's. Requests travel as one WebSocket frame or HTTP body, so
``file_put`` through them is bounded by the frame limit too; connectors inside the hub use the
store directly.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from meshhub import hookimpl
from meshhub.actions import Action, ActionContext, action
from meshhub.errors import InvalidRequest, NotFound
from meshhub.fields import MAX_MIME
from meshhub.files import FileStore
from meshhub.limits import account

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Message

migrations = Migrations("meshhub.files")


@migrations()
def m001_create_files(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE files (
            file TEXT NOT NULL,
            peer TEXT NOT NULL,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            mime TEXT NOT NULL,
            uploaded INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            PRIMARY KEY (file, peer)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX files_peer ON files (peer, created_at)")


def store_for(hub: Hub) -> FileStore:
    return FileStore.for_config(hub.config)


async def grant(hub: Hub, file: dict[str, Any], peers: list[str], uploader: str | None) -> None:
    """Record that ``peers`` may read ``file`` (an attachment dict)."""
    now = time.time()

    def run(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO files (file, peer, name, size, mime, uploaded, created_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT(file, peer) DO UPDATE SET "
            "uploaded = MAX(uploaded, excluded.uploaded)",
            [(file["file"], p, file.get("name", "file"), int(file.get("size", 0)),
              file.get("mime", "application/octet-stream"), int(p == uploader), now)
             for p in peers],
        )

    await hub.store.transact(run)


async def label_for(hub: Hub, peer_key: str, sha256: str, *,
                    any_peer: bool = False) -> tuple[str, str] | None:
    """(name, mime) of a file as ``peer_key`` was given it, or ``None`` when it may not read
    it; ``any_peer`` (the owner): some uploader's label when it was given none itself."""
    def run(conn: sqlite3.Connection) -> tuple[str, str] | None:
        row = conn.execute("SELECT name, mime FROM files WHERE file=? AND peer=?",
                           (sha256, peer_key)).fetchone()
        if row is None:
            # the grant of a just-sent attachment may not be written yet: ask the messages this
            # peer sent or received, matching the attachment's ``file`` field exactly (a file
            # name that happens to be a digest must not open the file)
            row = conn.execute(
                "SELECT json_extract(a.value, '$.name'), json_extract(a.value, '$.mime') "
                "FROM messages m, json_each(m.attachments_json) a "
                "WHERE m.attachments_json != '[]' AND (m.sender=? OR EXISTS (SELECT 1 FROM "
                "deliveries d WHERE d.message_id=m.id AND d.recipient=?)) "
                "AND json_extract(a.value, '$.file') = ? LIMIT 1",
                (peer_key, peer_key, sha256)).fetchone()
        if row is None and any_peer:
            row = conn.execute("SELECT name, mime FROM files WHERE file=? "
                               "ORDER BY uploaded DESC, created_at LIMIT 1", (sha256,)).fetchone()
        return None if row is None else (str(row[0] or "file"),
                                         str(row[1] or "application/octet-stream"))

    return await hub.store.transact(run)


@action()
async def file_put(
    ctx: ActionContext,
    content: Annotated[str, "the file's bytes, base64-encoded"],
    name: Annotated[str, "the file name to show (made safe, cut to 120 characters)"],
    mime: Annotated[str | None, "media type; guessed from the name when left out",
                    Field(max_length=MAX_MIME)] = None,
    to: Annotated[str | list[str] | None, "also send it at once to these targets"] = None,
    text: Annotated[str, "the message to send with it (with ``to``)"] = "",
    reply_to: Annotated[str | None, "send it as a reply in this thread"] = None,
) -> dict[str, Any]:
    """Store a file on the hub; with ``to`` (or ``reply_to``) also send it as an attachment.

    A send that is refused (an unknown target, a thread you cannot see) stores nothing."""
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("content must be base64") from None
    ctx.hub.limits.storage.check(account(ctx.peer), len(data))
    files_store = store_for(ctx.hub)
    stored = files_store.describe(data, name, mime)
    attachment = stored.attachment()
    pending = None
    if to is not None or reply_to is not None:
        pending = await ctx.hub.prepare_send(ctx.peer, to, text, reply_to=reply_to,
                                             attachments=[attachment])
    # written before the message just queued can commit (no await in between), so the
    # attachment's blob is there when the message is accepted
    files_store.write(stored, data)
    ctx.hub.limits.storage.add(account(ctx.peer), len(data))
    await grant(ctx.hub, attachment, [ctx.peer.key], ctx.peer.key)
    result: dict[str, Any] = dict(attachment)
    if pending is not None:
        result["sent"] = await pending.wait()
    return result


@action(read_only=True)
async def file_get(
    ctx: ActionContext, id: Annotated[str, "the file's id (its sha256)"]
) -> dict[str, Any]:
    """A file you uploaded or received: its name, size, type and base64 content.

    The name is the one you uploaded it under, or the one the message that brought it gave."""
    label = await label_for(ctx.hub, ctx.peer.key, id, any_peer=ctx.is_admin)
    if label is None and not ctx.is_admin:
        raise NotFound(f"no file {id} that you uploaded or received")
    data = store_for(ctx.hub).get(id)
    name, mime = label or ("file", "application/octet-stream")
    return {"file": id, "name": name, "size": len(data), "mime": mime,
            "content": base64.b64encode(data).decode()}


@action(read_only=True)
async def files(
    ctx: ActionContext,
    limit: Annotated[int, "at most this many (1-500), newest first"] = 50,
) -> list[dict[str, Any]]:
    """Files you uploaded or received."""
    if not 1 <= limit <= 500:
        raise InvalidRequest("limit must be between 1 and 500")
    rows = await ctx.hub.store.transact(lambda conn: conn.execute(
        "SELECT file, name, size, mime, uploaded, created_at FROM files WHERE peer=? "
        "ORDER BY created_at DESC LIMIT ?", (ctx.peer.key, limit)).fetchall())
    return [{"file": r[0], "name": r[1], "size": r[2], "mime": r[3], "uploaded": bool(r[4]),
             "created_at": r[5]} for r in rows]


ALL: list[Action] = [file_put, file_get, files]


@hookimpl
def meshhub_register_migrations(register: Callable[[Migrations], None]) -> None:
    register(migrations)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    for item in ALL:
        register(item)


@hookimpl
async def meshhub_startup(hub: Hub) -> None:
    """The files each peer uploaded count against its storage quota (:mod:`meshhub.limits`)."""
    rows = await hub.store.transact(lambda conn: conn.execute(
        "SELECT peer, SUM(size) FROM files WHERE uploaded = 1 GROUP BY peer").fetchall())
    for key, size in rows:
        peer = hub.directory.peers.get(key)
        hub.limits.storage.add(account(peer) if peer is not None else key, int(size))


@hookimpl
async def meshhub_message_accepted(hub: Hub, message: Message) -> None:
    """Whoever sent or received an attachment may read it."""
    for attachment in message.attachments:
        if isinstance(attachment, dict) and isinstance(attachment.get("file"), str):
            if not store_for(hub).exists(attachment["file"]):
                raise NotFound(f"message {message.id} names a file the store does not have")
            await grant(hub, attachment, [message.sender, *message.recipients], None)
