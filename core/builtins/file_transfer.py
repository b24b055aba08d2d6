"""Streaming HTTP routes for files too large for one action frame.

``POST /api/files/upload?name=...`` takes the raw body, streamed to a temporary file and hashed
as it comes; it is refused with 413 naming ``[files] max_bytes`` as soon as it passes it, and
nothing is kept. ``share=1`` (with ``tags``, comma-separated, and ``description``) shares it at
once. ``GET /api/files/<id>`` streams a file the caller may fetch (a share id or a digest),
always as an attachment with ``X-Content-Type-Options: nosniff``, so a browser never runs an
uploaded page. Both take ``Authorization: Bearer`` with a token, as ``/api/*`` does (the Host
and Origin checks are the server's, before any route), or with a one-use ticket from the
``token_file_transfer`` action: how a peer connected over WebSocket (the client library) uses
them. Like every credential it is no MCP tool.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from meshhub import hookimpl
from meshhub.actions import CAPS, Action, ActionContext, action
from meshhub.errors import Forbidden, InvalidRequest, MeshError, Unauthorized
from meshhub.limits import account
from meshhub.members import token_peer
from meshhub.records import Collection
from meshhub.server import HUB_KEY, json_error

from .file_sharing import (
    MAX_DESCRIPTION,
    MAX_FILE_NAME,
    Expired,
    clean_tags,
    create_share,
    readable,
    record_fetch,
)
from .files_actions import grant, reserve, settle_blob, store_for

if TYPE_CHECKING:
    from meshhub.files import StoredFile
    from meshhub.hub import Hub
    from meshhub.models import Peer

TICKETS = Collection("file_tickets")
TICKET_PREFIX = "mft_"
TICKET_SECONDS = 300
CHUNK = 256 * 1024
UPLOAD_PATH = "/api/files/upload"


def _ticket_key(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


@action(read_only=True)
async def token_file_transfer(ctx: ActionContext) -> dict[str, Any]:
    """A one-use credential, good for five minutes, for one upload to or download from the
    file routes (``Authorization: Bearer <ticket>``), with your own rights: how a client
    connected over WebSocket moves files larger than one frame."""
    ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
    await ctx.hub.records.create(TICKETS.name, _ticket_key(ticket),
                                 {"peer": ctx.peer.key, "cap": ctx.cap}, ttl=TICKET_SECONDS)
    return {"ticket": ticket, "upload": UPLOAD_PATH, "download": "/api/files/{id}",
            "expires_in": TICKET_SECONDS}


async def _caller(hub: Hub, request: web.Request, need: str) -> tuple[Peer, bool]:
    """The peer a request comes from (a token or a ticket, used up) and whether it has the
    owner's powers; refused when its cap is below ``need``."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Unauthorized("send 'Authorization: Bearer <token>' (create one: hub token "
                           "create), or a ticket from token_file_transfer")
    secret = header[7:].strip()
    if secret.startswith(TICKET_PREFIX):
        key = _ticket_key(secret)
        found = await hub.records.get(TICKETS.name, key)
        peer = hub.directory.peers.get(found.value["peer"]) if found is not None else None
        if found is None or peer is None or not await hub.records.delete(TICKETS.name, key):
            raise Unauthorized("unknown, used or expired ticket (token_file_transfer gives "
                               "another)")
        cap = str(found.value["cap"])
    else:
        peer, cap, _ = await token_peer(hub, secret)
    if CAPS.index(cap) < CAPS.index(need):
        raise Forbidden(f"this needs a token with cap {need!r}; this one has {cap!r}")
    return peer, ActionContext(hub=hub, peer=peer, surface="http", cap=cap).is_admin


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


async def _receive(hub: Hub, peer: Peer, request: web.Request, name: str) -> StoredFile:
    """Stream the body into the store, holding the uploader's quota for it before each byte
    is kept (the stated length at once, then as more arrives), so neither a body without a
    length nor uploads side by side pass the quota; the bytes held are kept only when the
    uploader becomes the blob's owner."""
    files, quota, whose = store_for(hub), hub.limits.storage, account(peer)
    length = request.content_length
    if length is not None:
        files.check_size(length)
    held = 0

    def hold(size: int) -> None:
        nonlocal held
        if size > held:
            reserve(hub, peer, size - held)
            held = size

    try:
        hold(length or 0)
        stored = await files.receive(_body(request), name, reserve=hold)
        await settle_blob(hub, peer, stored, held)
    except BaseException:
        quota.add(whose, -held)
        raise
    return stored


async def upload(request: web.Request) -> web.Response:
    """Store the raw body as a file (see the module's docstring)."""
    hub: Hub = request.app[HUB_KEY]
    try:
        peer, _ = await _caller(hub, request, "send")
        query = request.query
        name = query.get("name", "")
        if not name or len(name) > MAX_FILE_NAME:
            raise InvalidRequest(f"name: give the file's name (1-{MAX_FILE_NAME} characters) "
                                 "as ?name=")
        tags = clean_tags([t for t in query.get("tags", "").split(",") if t.strip()])
        description = query.get("description", "")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidRequest(f"description: at most {MAX_DESCRIPTION} characters")
        stored = await _receive(hub, peer, request, name)
        await grant(hub, stored.attachment(), [peer.key], peer.key)
        result: dict[str, Any] = stored.attachment()
        if query.get("share") in ("1", "true", "yes"):
            result["share"] = await create_share(hub, peer, stored, tags, description)
    except MeshError as exc:
        if exc.code == "too_large":
            exc.details.setdefault("limit", store_for(hub).max_bytes)
        response = json_error(exc)
        response.force_close()  # the rest of a refused body is not read
        return response
    return web.json_response({"result": result})


def _disposition(name: str) -> str:
    """``attachment`` with the name as plain ASCII and as RFC 5987 UTF-8."""
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


async def download(request: web.Request) -> web.StreamResponse:
    """Stream a file the caller may fetch (see the module's docstring)."""
    hub: Hub = request.app[HUB_KEY]
    try:
        peer, is_admin = await _caller(hub, request, "read")
        digest, name, mime, share = await readable(hub, peer, request.match_info["id"],
                                                   is_admin=is_admin)
        try:  # opened before anything else: the sweep may remove the path, not an open file
            handle = store_for(hub).path_of(digest).open("rb")
        except FileNotFoundError:
            raise Expired(f"file {digest} is no longer stored") from None
    except MeshError as exc:
        return json_error(exc)
    with handle:
        await record_fetch(hub, peer, share)
        response = web.StreamResponse(headers={
            "Content-Type": mime, "Content-Disposition": _disposition(name),
            "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, no-store"})
        response.content_length = os.fstat(handle.fileno()).st_size
        await response.prepare(request)
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            await response.write(chunk)
        await response.write_eof()
    return response


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    register(TICKETS)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    register(token_file_transfer)


@hookimpl
def meshhub_register_routes(register: Callable[..., None]) -> None:
    register("POST", UPLOAD_PATH, upload)
    register("GET", "/api/files/{id}", download)
