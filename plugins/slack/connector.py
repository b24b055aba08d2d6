"""The Slack connector: owns a slack-bolt ``AsyncApp`` and slack-sdk's ``AsyncWebClient``, takes
events (the Events API on the hub's own aiohttp server, through bolt's aiohttp adapter, or Socket
Mode) and posts what the mesh delivers to Slack peers.

Reliability:

- bolt verifies every HTTP request's signature and timestamp (bad or older than five minutes:
  401, nothing processed). An event is handled before Slack is acked (within two seconds; one
  that takes longer is stored, acked, and handled after), so an ack means the mesh has it; a
  retry is recognised by its ``event_id`` even after a restart (``slack_events``), and an event
  acked but not yet handled when the hub stopped is handled at the next start. Every mesh send
  carries the Slack message as its ``client_id``, so handling an event twice stores nothing
  twice.
- a delivery is acked only once Slack answered ``ok`` for every part; parts already posted are
  remembered, and each post carries the mesh id in its metadata, so after a lost answer the next
  attempt finds the post (``conversations.history``) instead of posting twice;
- ``429 Retry-After`` is waited out (and pauses that channel), network errors and 5xx are
  retried with backoff, Slack's refusals (``channel_not_found``, ``not_in_channel``...) make the
  delivery ``dead`` with Slack's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from yarl import URL

from meshhub.bridge.chat import ChatEvent, ChatHandler, parse_command
from meshhub.bridge.loops import LoopGuard
from meshhub.bridge.pairing import PairingBook
from meshhub.bridge.retry import GiveUp, RateLimiter, every
from meshhub.bridge.slot import Lifecycle, cancel_all
from meshhub.errors import InvalidRequest, MeshError, TooLarge
from meshhub.files import FileStore
from meshhub.render import to_mrkdwn

from . import adapter
from .outbound import SlackOutbound, error_of, retry_after, transient
from .settings import IDLE_REASON, SlackSettings
from .state import SlackState

if TYPE_CHECKING:
    from meshhub.hub import Hub

log = logging.getLogger(__name__)
ACK_WITHIN = 2.0  # seconds; Slack wants its answer within 3
SLACK_FILE_HOSTS = frozenset({"files.slack.com"})
KEPT_RETRY = 60.0  # seconds between tries of events whose handling failed
MAX_ATTEMPTS = 5  # failed tries (each logged); then an event is left in the store, untried
SEEN_EVENTS = 50_000  # ids of recent events kept in memory (all of a day's are in the store)
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
class SlackConnector(SlackOutbound, Lifecycle):
    """Registered as connector ``slack``; idle until a bot token is configured."""

    name = adapter.CONNECTOR

    def __init__(self) -> None:
        super().__init__()
        self.settings = SlackSettings()
        self.client: AsyncWebClient | None = None
        self.app: AsyncApp | None = None
        self.socket: Any = None
        self.session: aiohttp.ClientSession | None = None
        self.slack_state: SlackState | None = None
        self.chat: ChatHandler | None = None
        self.files: FileStore | None = None
        self.guard = LoopGuard()
        self.limiter = RateLimiter(rate=1.0, burst=5.0, global_rate=20.0, global_burst=40.0)
        self.ready = asyncio.Event()
        self.bot_user: str | None = None
        self.team: str = ""
        self.people: dict[str, adapter.Person] = {}  # user id -> account
        self.channel_names: dict[str, str] = {}
        self.dms: dict[str, str] = {}  # user id -> the app's DM channel with them
        self.member_cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._order: dict[str, asyncio.Lock] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()  # ids of events taken
        self._handling: set[str] = set()  # ids of events being handled now
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, hub: Hub) -> None:
        self.hub = hub
        self.settings = settings = SlackSettings.load(hub.config)
        if not settings.enabled:
            self._enter("idle", IDLE_REASON)
            return
        self._enter("starting", f"connecting to the Slack Web API ({settings.mode})")
        self.slack_state = SlackState(hub.records)
        self.chat = ChatHandler(hub)
        max_bytes = min(settings.max_file_bytes, FileStore.for_config(hub.config).max_bytes)
        self.files = FileStore(hub.config.home / "files", max_bytes)
        self.session = aiohttp.ClientSession(trust_env=False)
        self.client = AsyncWebClient(token=settings.bot_token, base_url=settings.api_url,
                                     session=self.session, timeout=20)
        self.app = self._build_app(self.client)
        if settings.public_url:  # Slack posts with the Request URL's Host
            host = URL(settings.public_url).host
            if host:
                hub.extra_hosts.add(host.lower())
        self._tasks.append(asyncio.create_task(self._watch(self._connect, "stopped"),
                                               name="slack"))

    def _build_app(self, client: AsyncWebClient) -> AsyncApp:
        secret = self.settings.signing_secret
        app = AsyncApp(client=client, signing_secret=secret or "",
                       request_verification_enabled=bool(secret),
                       process_before_response=False,
                       logger=logging.getLogger("meshhub_slack.bolt"))
        app.use(self._inbox)
        app.action(re.compile(f"^{adapter.BUTTON_ACTION}_"))(self._on_button)
        app.command(self.settings.command)(self._on_command)
        return app

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close_async()
        if self.session is not None:
            await self.session.close()
        if self.state != "idle":
            self._enter("stopped")

    async def _connect(self) -> None:
        assert self.client is not None and self.app is not None
        delay = 0.2
        while True:
            try:
                me = await self.client.auth_test()
                break
            except SlackApiError as exc:
                if not transient(exc) and retry_after(exc) is None:
                    self._enter("failed", f"Slack refused the bot token ({error_of(exc)}); check "
                                          "MESHHUB_SLACK_BOT_TOKEN and restart the hub")
                    log.error("slack: %s", self.error)
                    return
                wait = retry_after(exc) or delay
            except Exception as exc:
                wait = delay
                log.warning("slack: cannot reach the Web API (%s); retrying in %.1f s", exc, wait)
            self._enter("starting", f"cannot reach the Slack Web API; retrying in {wait:.1f} s")
            await asyncio.sleep(wait)
            delay = min(delay * 2, 30.0)
        self.bot_user, self.team = me.get("user_id"), str(me.get("team_id") or "")
        assert self.slack_state is not None
        for event_id in reversed(await self.slack_state.known_events(SEEN_EVENTS)):
            self._saw(event_id)  # a retry of what the hub took before a restart
        await self._link_configured()
        await self._handle_kept()  # acked before a restart, not handled yet: first, in order
        if self.settings.mode == "socket":
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self.socket = AsyncSocketModeHandler(self.app, self.settings.app_token,
                                                 web_client=self.client)
            await self.socket.connect_async()
        self.ready.set()
        self._enter("running", f"{self.settings.mode}, bot {me.get('user') or self.bot_user} "
                               f"in {me.get('team') or self.team}")
        # what failed for want of Slack or the store, tried again
        await every(KEPT_RETRY, self._handle_kept, log,
                    "slack: cannot read the events kept for another try")

    async def _handle_kept(self) -> None:
        assert self.slack_state is not None
        for body in await self.slack_state.pending_events(MAX_ATTEMPTS):
            if str(body.get("event_id")) not in self._handling:
                await self._take(body)

    async def _link_configured(self) -> None:
        assert self.hub is not None
        book = PairingBook.of(self.hub)
        for channel, conversation in self.settings.links.items():
            name = await self._channel_name(channel)
            try:
                await book.link(adapter.CONNECTOR, channel, f"slack-{name}", conversation, None)
            except MeshError as exc:
                log.error("slack: cannot link %s to %s: %s", channel, conversation, exc.message)

    # -- HTTP (Events API, interactivity, the slash command) -----------------------------------
    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        if self.settings.mode != "events" or request.path not in self.settings.paths:
            raise web.HTTPNotFound()
        if self.app is None or not self.ready.is_set():
            raise web.HTTPServiceUnavailable(text="the Slack connector is starting")  # retried
        try:
            bolt_request = await to_bolt_request(request)
        except ValueError:  # not UTF-8, not JSON, not a form: nothing Slack sends
            raise web.HTTPBadRequest(text="not a Slack request: the body cannot be read") from None
        response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(response)

    async def _inbox(self, body: dict[str, Any],
                     next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        """Bolt middleware, after the signature check and after the app's own events were
        dropped: takes Events API events (interactivity and the slash command go on to their
        listeners).

        An event is handled before Slack is acked when that takes less than ``ACK_WITHIN``
        seconds, the usual case, so an ack means its message is stored. One that takes longer is
        kept (its body stored), acked, and handled after. A retry of an event already taken is
        acked and changes nothing."""
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if not event_id:
            await next()
            return None
        assert self.hub is not None and self.slack_state is not None
        event_id = str(event_id)
        if event_id in self.seen:
            return BoltResponse(status=200, body="")
        self._saw(event_id)
        handling = self.hub.spawn(self._take(body))
        try:
            await asyncio.wait_for(asyncio.shield(handling), ACK_WITHIN)
        except TimeoutError:
            await self.slack_state.keep_event(event_id, body)
        return BoltResponse(status=200, body="")

    def _saw(self, event_id: str) -> None:
        self.seen[event_id] = None
        while len(self.seen) > SEEN_EVENTS:
            self.seen.popitem(last=False)

    # -- events --------------------------------------------------------------------------------
    async def _take(self, body: dict[str, Any]) -> None:
        """Handle one event, whichever way it came; then remember its id. An event that failed
        for want of Slack or the store (not the person's mistake, not the mesh's refusal) is
        kept and tried again every ``KEPT_RETRY`` seconds, and at the next start."""
        assert self.slack_state is not None
        event = body.get("event") or {}
        event_id = str(body.get("event_id") or "")
        channel = str(event.get("channel") or (event.get("item") or {}).get("channel") or "")
        lock = self._order.setdefault(channel, asyncio.Lock())
        self._handling.add(event_id)
        try:
            async with lock:  # one channel's events in the order Slack sent them
                await self._dispatch(body, event)
        except MeshError as exc:  # the person's mistake or the mesh's refusal: said, done
            log.warning("slack: event %s not relayed: %s", event_id, exc.message)
        except Exception as exc:  # Slack or the store failed us: try again later
            log.warning("slack: event %s failed (%s: %s); it is tried again in %.0f s",
                        event_id, type(exc).__name__, exc, KEPT_RETRY)
            if event_id:
                await self.slack_state.keep_event(event_id, body, failed=True)
            return
        finally:
            self._handling.discard(event_id)
        if event_id:
            await self.slack_state.event_handled(event_id)

    async def _dispatch(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message":
            await self._on_message(body, event)
        elif kind == "app_mention":
            await self._on_mention(body, event)
        elif kind in ("reaction_added", "reaction_removed"):
            await self._on_reaction(body, event, added=kind == "reaction_added")
        elif kind in ("member_joined_channel", "member_left_channel"):
            self.member_cache.pop(str(event.get("channel")), None)
        elif kind == "user_change":
            found = adapter.person_of(event.get("user") or {}, str(body.get("team_id") or ""))
            if found.user:
                self.people[found.user] = found

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        assert self.slack_state is not None
        subtype = event.get("subtype")
        channel = str(event.get("channel", ""))
        edited = False
        reply_to: str | None = None
        if subtype == "message_changed":
            inner = event.get("message") or {}
            if adapter.from_a_bot(inner, self.bot_user) or inner.get("subtype"):
                return
            reply_to = await self.slack_state.mesh_id(channel, str(inner.get("ts")))
            if (inner.get("text") == (event.get("previous_message") or {}).get("text")
                    or reply_to is None):
                return  # an unfurl or a message the mesh never had: nothing was edited
            event = {**inner, "channel": channel, "channel_type": event.get("channel_type")}
            edited = True
        elif subtype == "message_deleted":
            await self._on_delete(body, event, channel)
            return
        elif subtype not in (None, "file_share", "thread_broadcast", "me_message"):
            return  # joins, topics, pins...: not messages of a person
        if self.guard.is_own(f"{channel}:{event.get('ts')}") or await self._from_a_bot(
                body, event):
            return
        chat_event = await self._chat_event(body, event, edited=edited)
        thread_ts = event.get("thread_ts")
        if reply_to is not None:
            chat_event.reply_to = reply_to
        elif thread_ts and thread_ts != event.get("ts"):
            chat_event.reply_to = await self.slack_state.mesh_id(channel, str(thread_ts))
        files = event.get("files") or []
        if files and self._may_send_files(chat_event):
            try:
                chat_event.attachments = [await self._download(f) for f in files]
            except MeshError as exc:
                await self._say(channel, f"⚠️ {exc.message}", thread_ts or event.get("ts"))
                return
        if not chat_event.text and not chat_event.attachments:
            return
        await self._handle(chat_event, channel, str(event.get("ts")),
                           reply_in=thread_ts if chat_event.is_group else None)

    async def _from_a_bot(self, body: dict[str, Any], event: dict[str, Any]) -> bool:
        """Written by a bot, an app, another bridge or this app: never relayed. A bot user may
        post without a ``bot_id``, so its profile is asked too."""
        if adapter.from_a_bot(event, self.bot_user):
            return True
        user = str(event.get("user") or "")
        return not user or (await self._who(user, adapter.team_of(event, body))).bot

    async def _on_delete(self, body: dict[str, Any], event: dict[str, Any], channel: str) -> None:
        assert self.slack_state is not None
        previous = event.get("previous_message") or {}
        if await self._from_a_bot(body, previous):
            return
        deleted = await self.slack_state.mesh_id(channel, str(event.get("deleted_ts")))
        if deleted is None:
            return
        previous = {**previous, "channel": channel, "channel_type": event.get("channel_type")}
        chat_event = await self._chat_event(body, previous, text="(deleted this message)")
        chat_event.reply_to = deleted
        chat_event.message_key = f"{channel}:{event.get('deleted_ts')}:deleted"
        await self._handle(chat_event, channel, None, reply_in=None)

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """``@app text`` in a channel that is not linked: the person talks to the mesh as in
        a DM; what the bridge answers is shown to them alone (it may be their inbox)."""
        assert self.hub is not None
        channel = str(event.get("channel", ""))
        if self._linked(channel) or await self._from_a_bot(body, event):
            return  # a linked channel relays every message already
        text = adapter.strip_mention(str(event.get("text", "")), self.bot_user)
        chat_event = await self._chat_event(body, event, text=text)
        chat_event.is_group = False
        ts = str(event.get("ts"))
        await self._handle(chat_event, channel, ts, reply_in=event.get("thread_ts") or ts,
                           only_to=str(event.get("user", "")))

    async def _handle(self, chat_event: ChatEvent, channel: str, ts: str | None, *,
                      reply_in: str | None, only_to: str | None = None) -> None:
        assert self.chat is not None and self.slack_state is not None
        outcome = await self.chat.handle(chat_event)
        if outcome.sent is not None and ts is not None and not outcome.sent.get("duplicate"):
            await self.slack_state.map_message(channel, ts, outcome.sent["id"], outgoing=False)
        if outcome.reply:
            await self._say(channel, outcome.reply, reply_in, only_to=only_to)

    async def _chat_event(self, body: dict[str, Any], event: dict[str, Any], *,
                          edited: bool = False, text: str | None = None) -> ChatEvent:
        who = await self._admit(str(event.get("user", "")), adapter.team_of(event, body))
        raw = str(event.get("text", "")) if text is None else text
        return adapter.chat_event(event, team=who.team, user_name=who.name,
                                  text=await self._markdown(raw, who.team), edited=edited)

    async def _on_reaction(self, body: dict[str, Any], event: dict[str, Any], *,
                           added: bool) -> None:
        assert self.slack_state is not None and self.chat is not None and self.hub is not None
        item = event.get("item") or {}
        user = str(event.get("user", ""))
        if item.get("type") != "message" or await self._from_a_bot(body, event):
            return
        channel = str(item.get("channel", ""))
        mesh_id = await self.slack_state.mesh_id(channel, str(item.get("ts")))
        if mesh_id is None:
            return
        who = await self._admit(user, adapter.team_of(event, body))
        peer = self.chat.paired_peer(adapter.CONNECTOR, who.external)
        if peer is None:  # not paired: the linked channel reacts for them
            link = PairingBook.of(self.hub).link_for(adapter.chat_identity(channel))
            peer = self.hub.directory.peers.get(link.peer) if link is not None else None
        if peer is None:
            return
        await self.chat.call(peer, adapter.CONNECTOR, "react", id=mesh_id,
                             emoji=adapter.emoji_from_slack(str(event.get("reaction", ""))),
                             remove=not added)

    # -- buttons and the slash command ---------------------------------------------------------
    async def _on_button(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any],
                         action: dict[str, Any]) -> None:
        await ack()
        assert self.chat is not None and self.hub is not None and self.slack_state is not None
        assert self.client is not None
        user = body.get("user") or {}
        who = await self._admit(str(user.get("id")), str(user.get("team_id") or self.team))
        channel = str((body.get("channel") or {}).get("id")
                      or (body.get("container") or {}).get("channel_id") or "")
        ts = str((body.get("message") or {}).get("ts")
                 or (body.get("container") or {}).get("message_ts") or "")
        mesh_id = await self.slack_state.mesh_id(channel, ts) if ts else None
        card = await self.hub.store.get_message(mesh_id) if mesh_id else None
        flash, answered = await self.chat.press(adapter.CONNECTOR, who.external,
                                                str(action.get("value", "")), card)
        if answered and card is not None:
            return  # the card itself shows the answer (card_settled)
        client = self.client
        await self._call(channel, lambda: client.chat_postEphemeral(
            channel=channel, user=str(user.get("id")), text=flash))

    async def _on_command(self, ack: Callable[..., Awaitable[None]],
                          command: dict[str, Any]) -> None:
        assert self.chat is not None
        trigger = f"cmd:{command.get('trigger_id') or ''}"
        if trigger in self.seen:  # the same signed request again: answered once already
            await ack(response_type="ephemeral", text="Already done.")
            return
        self._saw(trigger)
        channel = str(command.get("channel_id", ""))
        who = await self._admit(str(command.get("user_id", "")),
                                str(command.get("team_id", "")))
        text = adapter.command_text(str(command.get("text", "")))
        parsed = parse_command(text)
        in_channel = not channel.startswith("D")
        chat_event = ChatEvent(
            connector=adapter.CONNECTOR, user_id=who.external, user_name=who.name,
            chat_id=channel, text=await self._markdown(text, who.team),
            is_group=in_channel and parsed is not None and parsed[0] in ("link", "unlink"),
            chat_title=f"slack-{command.get('channel_name') or channel}",
            message_key=trigger, command_prefix=adapter.SLASH_PREFIX)
        outcome = await self.chat.handle(chat_event)
        reply = outcome.reply or (f"Sent ({outcome.sent['id']})." if outcome.sent else "Done.")
        await ack(response_type="ephemeral", text=to_mrkdwn(reply))

    # -- helpers -------------------------------------------------------------------------------
    async def _admit(self, user: str, team: str) -> adapter.Person:
        """Who ``user`` is; one the allow-list names becomes a peer on first sight, without a
        code (never a bot, a deleted account, nor a guest unless named one by one)."""
        assert self.hub is not None
        who = await self._who(user, team)
        if not user or who.bot or who.deleted:
            return who
        if not self.settings.allows(who.team, who.user, guest=who.guest):
            return who
        book = PairingBook.of(self.hub)
        if book.peer_for(f"{adapter.CONNECTOR}:{who.external}") is None:
            await book.admit(adapter.CONNECTOR, who.external, who.name)
        return who

    async def _who(self, user: str, team: str) -> adapter.Person:
        """A Slack account (``users.info``, asked once, refreshed by ``user_change``); its team
        is its home team, whichever workspace the event came through."""
        if user in self.people:
            return self.people[user]
        assert self.client is not None
        client = self.client
        try:
            found = await self._call(adapter.CONNECTOR, lambda: client.users_info(user=user))
        except (SlackApiError, GiveUp) as exc:
            log.warning("slack: cannot look up user %s: %s", user, exc)
            return adapter.Person(team=team, user=user, name=user)
        who = self.people[user] = adapter.person_of(found.get("user") or {"id": user}, team)
        return who

    async def _channel_name(self, channel: str) -> str:
        if channel not in self.channel_names:
            assert self.client is not None
            client = self.client
            try:
                found = await self._call(channel, lambda: client.conversations_info(
                    channel=channel))
                self.channel_names[channel] = str((found.get("channel") or {}).get("name")
                                                  or channel)
            except (SlackApiError, GiveUp):
                return channel
        return self.channel_names[channel]

    async def _markdown(self, text: str, team: str) -> str:
        """mrkdwn as Markdown, with mentioned people's names looked up first."""
        for user in set(_MENTION.findall(text)):
            if user != self.bot_user:
                await self._who(user, team)

        def user_name(user: str) -> str:
            if user == self.bot_user:
                return "meshhub"
            return self.people[user].name if user in self.people else user

        return adapter.mrkdwn_to_markdown(
            text, user_name, lambda channel: self.channel_names.get(channel, channel))

    def _linked(self, channel: str) -> bool:
        assert self.hub is not None
        book = PairingBook.of(self.hub)
        return book.link_for(adapter.chat_identity(channel)) is not None

    def _may_send_files(self, chat_event: ChatEvent) -> bool:
        """Files are fetched only where they go somewhere: a paired person's DM with the app,
        or a linked channel (whoever wrote there)."""
        assert self.chat is not None
        if chat_event.is_group:
            return self._linked(chat_event.chat_id)
        return self.chat.paired_peer(adapter.CONNECTOR, chat_event.user_id) is not None

    def _file_url(self, file: dict[str, Any]) -> str:
        """Where to fetch a shared file with the bot token: only from Slack's own file host
        (or the configured Web API's host), never a link an external file points at."""
        if file.get("is_external") or file.get("external_url") or file.get("mode") == "external":
            raise InvalidRequest(f"{file.get('name')!r} is a link to another service, not a file "
                                 "on Slack; share the file itself")
        url = URL(str(file.get("url_private_download") or file.get("url_private") or ""))
        api = URL(self.settings.api_url)
        trusted = (url.scheme == "https" and url.host in SLACK_FILE_HOSTS) or (
            url.host == api.host and url.port == api.port and url.scheme == api.scheme)
        if not trusted:
            raise InvalidRequest(f"Slack gave no file address for {file.get('name')!r}")
        return str(url)

    async def _download(self, file: dict[str, Any]) -> dict[str, Any]:
        assert self.files is not None and self.session is not None
        url = self._file_url(file)
        if file.get("size") is not None:
            self.files.check_size(int(file["size"]))
        headers = {"Authorization": f"Bearer {self.settings.bot_token}"}
        async with self.session.get(url, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise InvalidRequest(f"Slack did not give the file {file.get('name')!r} "
                                     f"(HTTP {resp.status})")
            data = await resp.content.read(self.files.max_bytes + 1)
        if len(data) > self.files.max_bytes:
            raise TooLarge(f"the file is over the limit of {self.files.max_bytes} bytes")
        name = str(file.get("name") or file.get("title") or f"file_{file.get('id')}")
        stored = await asyncio.to_thread(self.files.put, data, name, file.get("mimetype"))
        return stored.attachment()
