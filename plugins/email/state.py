"""The gateway's own data, in record collections (``hub.records``):

- ``email_tokens``: reply addresses (``reply+<token>@domain``): each token stands for one thread
  and the one person it was mailed to, for clients that drop ``In-Reply-To``;
  ``email_threads`` names the one token of each (person, thread), so two mails of a thread
  racing for their first token agree on it;
- ``email_confirmations``: pairings waiting for the person to answer the confirmation mail (the
  code was right; the answer proves the mailbox is theirs); they expire after an hour;
- ``email_digest``: messages waiting for a person's next digest mail;
- ``email_secret``: the gateway's secret, which signs the Message-ID of each mail out, so a
  delivery report is believed only about a mail the gateway really sent to that person.

Hubs from before the record API kept these in tables of their own; :mod:`.sqlite_upgrade` moves
them here.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING

from meshhub.records import Collection, Conflict

if TYPE_CHECKING:
    from meshhub.records import Records

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # case-insensitive, as local parts may be
TOKEN_LENGTH = 26  # 130 bits
CONFIRM_TTL = 3600.0
SECRET_KEY = "gateway"

TOKENS = Collection("email_tokens")
THREADS = Collection("email_threads")
CONFIRMATIONS = Collection("email_confirmations")
DIGEST = Collection("email_digest", indexes=("queued_at",))
SECRET = Collection("email_secret")
COLLECTIONS = (TOKENS, THREADS, CONFIRMATIONS, DIGEST, SECRET)


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def thread_key(peer: str, root: str) -> str:
    return f"{peer}\x1f{root}"


def digest_key(peer: str, mesh_id: str) -> str:
    return f"{peer}\x1f{mesh_id}"


class EmailState:
    """The gateway's collections, through the hub's record API."""

    def __init__(self, records: Records) -> None:
        self.records = records

    async def secret(self) -> bytes:
        """The gateway's secret, made on first use (two starts at once agree on one)."""
        found = await self.records.get(SECRET.name, SECRET_KEY)
        if found is None:
            try:
                found = await self.records.create(SECRET.name, SECRET_KEY,
                                                  {"secret": secrets.token_hex(32)})
            except Conflict as lost:
                if lost.current is None:
                    raise
                found = lost.current
        return bytes.fromhex(found.value["secret"])

    # -- reply addresses -------------------------------------------------------------------------
    async def token_for(self, peer: str, root: str) -> str:
        """The reply token of thread ``root`` for ``peer`` (made on first use). The token is
        stored before the thread names it, so a token mailed out always resolves; one that lost
        the race for its thread goes again."""
        key = thread_key(peer, root)
        found = await self.records.get(THREADS.name, key)
        if found is not None:
            return str(found.value["token"])
        token = new_token()
        await self.records.create(TOKENS.name, token, {"peer": peer, "root": root})
        try:
            await self.records.create(THREADS.name, key, {"token": token})
        except Conflict as lost:
            await self.records.delete(TOKENS.name, token)
            if lost.current is None:
                raise
            return str(lost.current.value["token"])
        return token

    async def thread_of(self, token: str) -> tuple[str, str] | None:
        """(peer, thread root) of a reply token."""
        found = await self.records.get(TOKENS.name, token.lower())
        return (found.value["peer"], found.value["root"]) if found else None

    # -- pairing confirmations -------------------------------------------------------------------
    async def confirmation(self, address: str, name: str) -> str:
        """A new confirmation token for ``address`` (valid an hour)."""
        token = new_token()
        await self.records.create(CONFIRMATIONS.name, token, {"address": address, "name": name},
                                  ttl=CONFIRM_TTL)
        return token

    async def pending_confirmation(self, token: str) -> tuple[str, str] | None:
        """(address, name) a live confirmation token is for."""
        found = await self.records.get(CONFIRMATIONS.name, token.lower())
        return (found.value["address"], found.value["name"]) if found else None

    async def confirmed(self, token: str) -> None:
        await self.records.delete(CONFIRMATIONS.name, token.lower())

    # -- digests ---------------------------------------------------------------------------------
    async def queue_digest(self, peer: str, mesh_id: str) -> None:
        """Queue a message for ``peer``'s next digest (once: queued again, it keeps its place)."""
        value = {"peer": peer, "mesh_id": mesh_id, "queued_at": time.time()}
        try:
            await self.records.create(DIGEST.name, digest_key(peer, mesh_id), value)
        except Conflict:
            pass

    async def digests_due(self, before: float) -> dict[str, list[str]]:
        """Per person, the messages waiting for a digest, for those whose oldest waiting
        message was queued before ``before``; oldest first."""
        queued: dict[str, list[str]] = {}  # one read of the queue, oldest first
        late: set[str] = set()
        for record in await self.records.all(DIGEST.name, order="queued_at"):
            peer = record.value["peer"]
            if peer not in queued and record.value["queued_at"] < before:
                late.add(peer)  # its oldest waiting message is this one
            queued.setdefault(peer, []).append(record.value["mesh_id"])
        return {peer: queued[peer] for peer in sorted(late)}

    async def digest_sent(self, peer: str, mesh_ids: list[str]) -> None:
        await asyncio.gather(*(self.records.delete(DIGEST.name, digest_key(peer, mesh_id))
                               for mesh_id in mesh_ids))
