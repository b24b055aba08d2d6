"""Posting to Slack: what the mesh delivers to a Slack person (in the app's DM with them) or a
linked channel, reactions mirrored from the mesh, approval cards updated once settled, and the
bridge's own answers. A mixin of
:class:`meshhub_slack.connector.SlackConnector`, which owns the clients and the state.

A delivery is acked only once Slack answered ``ok`` for every part; parts already posted are
remembered, and each post carries the mesh id in its metadata, so after a lost answer the next
attempt finds the post (``conversations.history``) instead of posting twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from meshhub.bridge.chat import buttons, describe, give_up, may_post
from meshhub.bridge.loops import LoopGuard
from meshhub.bridge.pairing import PairingBook
from meshhub.bridge.retry import ErrorKinds, GiveUp, RateLimiter, call_limited
from meshhub.errors import InvalidRequest, MeshError, NotFound

from . import adapter

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

    from meshhub.files import FileStore
    from meshhub.hub import Hub
    from meshhub.models import Message, Peer

    from .state import SlackState

log = logging.getLogger("meshhub_slack.connector")
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error",
                              "service_unavailable", "request_timeout"})


def retry_after(exc: BaseException) -> float | None:
    """The seconds a 429 asked to wait, or ``None``."""
    if not isinstance(exc, SlackApiError) or exc.response.status_code != 429:
        return None
    headers = {k.lower(): v for k, v in dict(exc.response.headers or {}).items()}
    value = headers.get("retry-after")
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else 1.0
    except ValueError:
        return 1.0


def transient(exc: BaseException) -> bool:
    """Whether trying again may help: the network, a 5xx, Slack saying it is busy."""
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return True
    if isinstance(exc, SlackApiError):
        return (exc.response.status_code >= 500
                or str(exc.response.get("error", "")) in TRANSIENT_ERRORS)
    return False


SLACK_ERRORS = ErrorKinds(retry_after=retry_after, transient=transient)
MEMBERS_TTL = 300.0


def error_of(exc: SlackApiError) -> str:
    return str(exc.response.get("error") or exc)


class SlackOutbound:
    """Posting half of :class:`~meshhub_slack.connector.SlackConnector` (which sets these)."""

    hub: Hub | None
    client: AsyncWebClient | None
    slack_state: SlackState | None
    files: FileStore | None
    guard: LoopGuard
    limiter: RateLimiter
    ready: asyncio.Event
    dms: dict[str, str]
    member_cache: dict[str, tuple[float, frozenset[str]]]  # channel -> (until, user ids)

    async def _say(self, channel: str, markdown: str, thread_ts: Any = None, *,
                   only_to: str | None = None) -> None:
        """The bridge's own answer (help, errors, pairing) in ``channel``; with ``only_to``
        shown to that person alone (``chat.postEphemeral``)."""
        assert self.client is not None
        client = self.client
        for text, blocks in adapter.render(markdown):
            if only_to:
                await self._call(channel, partial(
                    client.chat_postEphemeral, channel=channel, user=only_to, text=text,
                    blocks=blocks, thread_ts=thread_ts))
                continue
            sent = await self._call(channel, partial(
                client.chat_postMessage, channel=channel, text=text, blocks=blocks,
                thread_ts=thread_ts, unfurl_links=False))
            self.guard.posted(f"{channel}:{sent.get('ts')}")

    async def _call(self, key: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """One Web API call: rate-limited per channel, retried on 429 / network errors / 5xx."""
        assert self.hub is not None
        return await call_limited(fn, SLACK_ERRORS, self.limiter, key,
                                  lease_seconds=self.hub.config.lease_seconds)

    # -- delivering ----------------------------------------------------------------------------
    async def deliver(self, hub: Hub, peer: Peer, message: Message) -> bool:
        """Post ``message`` to ``peer``'s channel or DM; ``True`` only once Slack took every
        part."""
        book = PairingBook.of(hub)
        channel = adapter.channel_of(peer.identity)
        verdict = await may_post(hub, peer, message, connector=adapter.CONNECTOR,
                                 chat=channel or "", platform="Slack", place="channel")
        if verdict is not None:
            return verdict
        if not self.ready.is_set() or self.client is None or self.slack_state is None:
            return False  # not connected yet: the lease retries it
        try:
            if channel is None:
                person = adapter.split_identity(peer.identity)
                if person is None:
                    await give_up(hub, peer, message, "not a Slack person's identity")
                    return False
                if await self._shown_in_channel(book, person[1], message):
                    return True  # the person reads it in the linked channel they are in
                channel = await self._dm(person[1])
            if message.kind == "reaction" and await self._mirrored(message):
                return True  # the reaction itself is on the Slack message (reaction hook)
            await self._post_all(hub, message, channel, in_dm=adapter.channel_of(
                peer.identity) is None)
        except SlackApiError as exc:
            if transient(exc) or retry_after(exc) is not None:
                return False
            await give_up(hub, peer, message, f"Slack refused it: {error_of(exc)}")
            return False
        except (NotFound, InvalidRequest) as exc:  # an attachment the file store cannot give
            await give_up(hub, peer, message, f"an attachment cannot be sent: {exc.message}")
            return False
        except (TimeoutError, GiveUp, MeshError, aiohttp.ClientError) as exc:
            log.warning("slack: delivery of %s to %s postponed: %s", message.id, peer.name, exc)
            return False
        return True

    async def _post_all(self, hub: Hub, message: Message, channel: str, *, in_dm: bool) -> None:
        assert self.slack_state is not None
        done, unsure = await self.slack_state.parts(message.id, channel)
        thread_ts = None
        if message.reply_to is not None:
            thread_ts = await self.slack_state.ts_of(message.reply_to, channel)
        sender = hub.directory.peers.get(message.sender)
        style = adapter.sender_style(sender.name, sender.kind, sender.connector) if sender else {}
        context = describe(hub, message) if in_dm else None
        if sender is not None and context == sender.name:
            context = None  # a plain DM: the username already says who
        posts = adapter.render(message.body, context=context, buttons=buttons(message))
        if not message.body.strip() and message.attachments:
            posts = []  # only files: no empty text post
        for part, (text, blocks) in enumerate(posts):
            if part not in done:
                await self._post(channel, message.id, part, unsure.get(part), text=text,
                                 blocks=blocks, thread_ts=thread_ts, **style)
        for index, attachment in enumerate(message.attachments):
            part = len(posts) + index
            if part not in done and isinstance(attachment, dict):
                await self._upload(channel, message.id, part, unsure.get(part), attachment,
                                   thread_ts)

    async def _once(self, channel: str, mesh_id: str, part: int, since: float | None,
                    find: Callable[[float], Awaitable[str | None]],
                    attempt: Callable[[], Awaitable[str]]) -> str:
        """Put one part on Slack at most once (``attempt`` answers its Slack id), rate-limited
        and retried. A try whose answer was lost (a 5xx, the network: it may have gone through)
        is remembered, and every later try, in this call or a later delivery, first looks for
        it with ``find(since)``. A 429 or a refusal posted nothing and is not remembered."""
        assert self.slack_state is not None
        state = self.slack_state
        started = since if since is not None else time.time()
        unsure = since is not None

        async def once() -> str:
            nonlocal unsure
            if unsure:
                found = await find(started)
                if found is not None:
                    return found
            try:
                return await attempt()
            except Exception as exc:
                if not unsure and transient(exc) and retry_after(exc) is None:
                    unsure = True
                    await state.unsure(mesh_id, channel, part, started)
                raise

        result: str = await self._call(channel, once)
        return result

    async def _post(self, channel: str, mesh_id: str, part: int, since: float | None,
                    **fields: Any) -> str:
        """Post one part of a message (its metadata names it, so a lost answer is found)."""
        assert self.slack_state is not None and self.client is not None
        client = self.client

        async def post() -> str:
            sent = await client.chat_postMessage(
                channel=channel, metadata=adapter.metadata(mesh_id, part),
                unfurl_links=False, unfurl_media=False, **fields)
            return str(sent.get("ts"))

        ts = await self._once(channel, mesh_id, part, since, lambda started: self._find_post(
            channel, mesh_id, part, started, fields.get("thread_ts")), post)
        self.guard.posted(f"{channel}:{ts}")
        await self.slack_state.map_message(channel, ts, mesh_id, part=part, outgoing=True)
        return ts

    async def _find_post(self, channel: str, mesh_id: str, part: int, since: float,
                         thread_ts: str | None) -> str | None:
        return adapter.find_post(await self._recent(channel, since, thread_ts), mesh_id, part)

    async def _recent(self, channel: str, since: float, thread_ts: str | None
                      ) -> list[dict[str, Any]]:
        """The messages of ``channel`` (or of one thread) since ``since``, with metadata."""
        assert self.client is not None
        oldest = f"{since - 5:.6f}"
        if thread_ts:
            page = await self.client.conversations_replies(
                channel=channel, ts=thread_ts, oldest=oldest, include_all_metadata=True,
                limit=200)
        else:
            page = await self.client.conversations_history(
                channel=channel, oldest=oldest, include_all_metadata=True, limit=200)
        return list(page.get("messages") or [])

    async def _upload(self, channel: str, mesh_id: str, part: int, since: float | None,
                      attachment: dict[str, Any], thread_ts: str | None) -> None:
        """Share one attachment; after a lost answer, the app's recent shares of a file of that
        name (not already another part's) are looked at before uploading again."""
        assert self.files is not None and self.client is not None
        assert self.slack_state is not None
        data = await asyncio.to_thread(self.files.get, str(attachment.get("file", "")))
        name = str(attachment.get("name") or "file")
        client, state = self.client, self.slack_state
        kwargs: dict[str, Any] = {"channel": channel, "file": data, "filename": name,
                                  "title": name}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts

        async def find(started: float) -> str | None:
            for message in await self._recent(channel, started, thread_ts):
                for file in message.get("files") or [] if message.get("bot_id") else []:
                    known = await state.mesh_id(channel, f"file:{file.get('id')}")
                    if file.get("name") == name and known is None:
                        return str(file.get("id"))
            return None

        async def upload() -> str:
            result = await client.files_upload_v2(**kwargs)
            return str((result.get("file") or {}).get("id") or f"part{part}")

        file_id = await self._once(channel, mesh_id, part, since, find, upload)
        await state.map_message(channel, f"file:{file_id}", mesh_id, part=part, outgoing=True)

    async def _dm(self, user: str) -> str:
        if user not in self.dms:
            assert self.client is not None
            client = self.client
            opened = await self._call(adapter.CONNECTOR, lambda: client.conversations_open(
                users=user))
            self.dms[user] = str((opened.get("channel") or {}).get("id"))
        return self.dms[user]

    async def _shown_in_channel(self, book: PairingBook, user: str, message: Message) -> bool:
        """Whether ``user`` sees ``message`` in a linked channel, so a DM would show it twice:
        a conversation message (not a whisper) that a linked channel received too, in a channel
        ``user`` is a member of."""
        if message.whisper:
            return False
        conversation = message.conversation.lstrip("#")
        for identity, link in book.links.items():
            channel = adapter.channel_of(identity)
            if (channel is not None and link.conversation == conversation
                    and link.peer in message.recipients and user in await self._members(channel)):
                return True
        return False

    async def _members(self, channel: str) -> frozenset[str]:
        """The people in ``channel`` (``conversations.members``, kept five minutes; a join or a
        leave in it forgets them). Unknown (Slack failing) is nobody: then DMs go out."""
        cached = self.member_cache.get(channel)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        assert self.client is not None
        members: set[str] = set()
        cursor = None
        try:
            while True:
                page = await self.client.conversations_members(channel=channel, limit=1000,
                                                               cursor=cursor)
                members.update(str(m) for m in page.get("members") or [])
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack: cannot list the members of %s: %s", channel, exc)
            return frozenset()
        found = frozenset(members)
        self.member_cache[channel] = (time.monotonic() + MEMBERS_TTL, found)
        return found

    async def _mirrored(self, message: Message) -> bool:
        """Whether a ``reaction`` notice is about a message Slack shows (so the reaction hook
        put the emoji on it, and a DM saying so would be noise)."""
        assert self.slack_state is not None
        data = message.data if isinstance(message.data, dict) else {}
        target = data.get("message_id")
        if not target or adapter.emoji_to_slack(str(data.get("emoji") or "")) is None:
            return False  # no Slack name for that emoji: the notice says it instead
        return bool(await self.slack_state.posts_of(str(target)))

    async def mirror_reaction(self, message: Message, peer: Peer, emoji: str, added: bool,
                              by: list[str]) -> None:
        """A mesh peer's reaction on every Slack message showing ``message``."""
        assert self.hub is not None
        if peer.connector == adapter.CONNECTOR or not self.ready.is_set():
            return  # Slack's own people react in Slack; it shows already
        name = adapter.emoji_to_slack(emoji)
        if name is None or self.slack_state is None or self.client is None:
            return
        peers = self.hub.directory.peers
        if not added and any(k in peers and peers[k].connector != adapter.CONNECTOR for k in by):
            return  # someone else on the mesh still reacts with it: the app's emoji stays
        call = self.client.reactions_add if added else self.client.reactions_remove
        for channel, ts in await self.slack_state.posts_of(message.id):
            if ts.startswith("file:"):
                continue
            try:
                await self._call(channel, partial(call, channel=channel, timestamp=ts,
                                                  name=name))
            except SlackApiError as exc:
                if error_of(exc) not in ("already_reacted", "no_reaction"):
                    log.warning("slack: reaction %s on %s not mirrored: %s", name, ts,
                                error_of(exc))

    def card_settled(self, label: str, message: Message) -> None:
        """Every Slack card of a settled request or proposal shows how it was settled
        (``label``) where its buttons were; in the background, so whoever settled it never
        waits on Slack."""
        if self.hub is None or not self.ready.is_set():
            return
        self.hub.spawn(self._settle_cards(label, message))

    async def _settle_cards(self, label: str, message: Message) -> None:
        assert self.hub is not None and self.slack_state is not None
        last = len(adapter.render(message.body)) - 1
        posts = await self.slack_state.every_part(message.id)
        await asyncio.gather(*(self._update_card(channel, parts[last], label, message)
                               for channel, parts in posts.items()
                               if last in parts and not parts[last].startswith("file:")))

    async def _update_card(self, channel: str, ts: str, label: str, message: Message) -> None:
        assert self.hub is not None and self.client is not None
        client = self.client
        context = describe(self.hub, message) if channel.startswith("D") else None
        text, blocks = adapter.render(message.body, context=context, footer=label)[-1]
        try:
            await self._call(channel, partial(client.chat_update, channel=channel, ts=ts,
                                              text=text, blocks=blocks))
        except Exception as exc:
            log.warning("slack: the card of %s in %s was not updated: %s", message.id, channel,
                        exc)
