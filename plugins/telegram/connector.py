"""The Telegram connector: owns the python-telegram-bot ``Bot``, takes updates (long polling or
the hub-served webhook) and posts what the mesh delivers to Telegram peers.

Reliability:

- an update's offset is stored (``meshhub.telegram``) after the update was handled, and every
  mesh send carries the Telegram message as its ``client_id``, so a crash between the two
  replays the update without storing anything twice; webhook updates are deduplicated by id;
- a delivery is acked only once Telegram answered every part with success; parts already
  posted are remembered, so a retry after a failure posts only what is missing;
- ``429 retry_after`` is waited out (and pauses that chat), network errors and 5xx are retried
  with backoff, permanent refusals (blocked bot, bad request) make the delivery ``dead`` with
  Telegram's reason instead of retrying forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from meshhub.bridge.chat import (
    ChatHandler,
    buttons,
    describe,
    give_up,
    may_post,
    settled_label,
)
from meshhub.bridge.loops import LoopGuard
from meshhub.bridge.markdown import markdown_to_html
from meshhub.bridge.pairing import PairingBook
from meshhub.bridge.retry import ErrorKinds, GiveUp, RateLimiter, call_limited
from meshhub.bridge.slot import Lifecycle, cancel_all
from meshhub.errors import InvalidRequest, MeshError, NotFound, TooLarge
from meshhub.files import FileStore
from telegram import Bot, CallbackQuery, InputFile, Update
from telegram import Message as TgMessage
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.request import HTTPXRequest

from . import adapter
from .settings import IDLE_REASON, TelegramSettings
from .state import TelegramState

if TYPE_CHECKING:
    from meshhub.hub import Hub
    from meshhub.models import Message, Peer

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SETTLE_WAIT = 60.0  # seconds a card update waits for the bot to connect
MAX_UPDATE_ATTEMPTS = 5  # then a poison update is skipped (logged) so the rest flow again


def _retry_after(exc: BaseException) -> float | None:
    if not isinstance(exc, RetryAfter):
        return None
    with warnings.catch_warnings():  # PTB 22 warns that the type becomes timedelta in 23
        warnings.simplefilter("ignore")
        value: Any = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


TELEGRAM_ERRORS = ErrorKinds(retry_after=_retry_after, transient=_transient)
HTTP_LOGGERS = ("httpx",)  # logs each request's URL, which holds the token


def scrub(text: str, token: str | None) -> str:
    """``text`` without the bot token: it is part of every Bot API URL, and
    python-telegram-bot quotes it in some errors."""
    if token:
        for form in {token, quote(token, safe="")}:
            text = text.replace(form, "<token>")
    return text


class TokenFilter(logging.Filter):
    """Keeps the bot token out of the hub's log (httpx logs each request's URL at INFO)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message, self.token)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class TelegramConnector(Lifecycle):
    """Registered as connector ``telegram``; idle until a token is configured. Its states are
    ``polling`` or ``webhook`` where others say ``running``."""

    name = adapter.CONNECTOR

    def __init__(self) -> None:
        super().__init__()
        self.settings = TelegramSettings()
        self.bot: Bot | None = None
        self.tg_state: TelegramState | None = None
        self.chat: ChatHandler | None = None
        self.files: FileStore | None = None
        self.guard = LoopGuard()
        self.limiter = RateLimiter()
        self.webhook_secret: str | None = None
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failures: dict[int, int] = {}  # update id -> failed attempts (polling)
        self._log_filter: TokenFilter | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, hub: Hub) -> None:
        self.hub = hub
        self.settings = TelegramSettings.load(hub.config)
        given = self.settings
        self.limiter = RateLimiter(rate=given.chat_rate, burst=given.chat_burst,
                                   global_rate=given.bot_rate, global_burst=given.bot_burst)
        if not self.settings.enabled:
            log.info("telegram: %s; the connector is idle", IDLE_REASON)
            self._enter("idle", IDLE_REASON)
            return
        self._log_filter = TokenFilter(self.settings.token or "")
        for name in HTTP_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        self._enter("starting", f"connecting to the Bot API ({self.settings.mode})")
        self.tg_state = TelegramState(hub.records)
        self.chat = ChatHandler(hub)
        max_bytes = min(self.settings.max_file_bytes, FileStore.for_config(hub.config).max_bytes)
        self.files = FileStore(hub.config.home / "files", max_bytes)
        self.bot = Bot(
            self.settings.token or "",
            base_url=self.settings.base_url,
            base_file_url=self.settings.base_file_url,
            request=HTTPXRequest(connection_pool_size=16, read_timeout=20.0,
                                 httpx_kwargs={"trust_env": False}),
            get_updates_request=HTTPXRequest(
                connection_pool_size=1, read_timeout=self.settings.poll_timeout + 10.0,
                httpx_kwargs={"trust_env": False}),
        )
        if self.settings.mode == "webhook" and self.settings.webhook_url:
            # Telegram posts with the webhook URL's Host: let the hub's Host check accept it
            host = URL(self.settings.webhook_url).host
            if host:
                hub.extra_hosts.add(host.lower())
        self._tasks.append(asyncio.create_task(
            self._watch(self._connect_and_poll, "stopped taking updates"), name="telegram"))

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        if self.bot is not None:
            with contextlib.suppress(Exception):
                await self.bot.shutdown()
        if self.state != "idle":
            self._enter("stopped")
        if self._log_filter is not None:
            for name in HTTP_LOGGERS:
                logging.getLogger(name).removeFilter(self._log_filter)

    def _shown(self, state: str) -> str:
        """``polling`` and ``webhook`` are ``running`` to the hub (see
        :mod:`meshhub.connectors`)."""
        return "running" if state in ("polling", "webhook") else state

    def _scrub(self, text: str) -> str:
        """The bot token never reaches a state's detail."""
        return scrub(text, self.settings.token)

    def _refused(self, exc: Exception) -> None:
        self._enter("failed", f"Telegram refused the bot token ({exc}); check "
                              "MESHHUB_TELEGRAM_TOKEN or [telegram] token and restart the hub")
        log.error("telegram: %s", self.error)

    async def _connect_and_poll(self) -> None:
        assert self.bot is not None and self.tg_state is not None
        delay = 0.2
        while True:  # connect: getMe, then set the webhook or clear it for polling
            try:
                await self.bot.initialize()
                if self.settings.mode == "webhook":
                    await self._set_webhook()
                else:
                    await self.bot.delete_webhook()
                break
            except (InvalidToken, Forbidden) as exc:
                self._refused(exc)
                return
            except Exception as exc:  # the network, Telegram down: keep trying
                wait = _retry_after(exc) or delay
                problem = self._scrub(f"cannot reach the Bot API ({exc}); retrying in "
                                      f"{wait:.1f} s")
                log.warning("telegram: %s", problem)
                self._enter("starting", problem)
                await asyncio.sleep(wait)
                delay = min(delay * 2, 30.0)
        log.info("telegram: connected as @%s (%s)", self.bot.username, self.settings.mode)
        self.ready.set()
        if self.settings.mode == "webhook":
            self._enter("webhook", self._running_detail())
            return
        self._enter("polling", self._running_detail())
        await self._poll()

    def _running_detail(self) -> str:
        bot = self.bot.username if self.bot is not None else None
        return f"{self.settings.mode}, bot @{bot}" if bot else self.settings.mode

    async def _set_webhook(self) -> None:
        assert self.bot is not None and self.tg_state is not None
        secret = self.settings.webhook_secret or await self.tg_state.get("webhook_secret")
        if secret is None:
            secret = secrets.token_urlsafe(32)
            await self.tg_state.put("webhook_secret", secret)
        self.webhook_secret = secret
        await self.bot.set_webhook(url=self.settings.webhook_url or "", secret_token=secret,
                                   allowed_updates=ALLOWED_UPDATES)

    # -- taking updates ------------------------------------------------------------------------
    async def _poll(self) -> None:
        assert self.bot is not None and self.tg_state is not None
        offset = await self.tg_state.offset()
        saving: asyncio.Task[None] | None = None
        delay = 0.2
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=offset, timeout=int(self.settings.poll_timeout),
                    allowed_updates=ALLOWED_UPDATES)
                delay = 0.2
                if self.state != "polling":  # back after an outage
                    self._enter("polling", self._running_detail())
            except RetryAfter as exc:
                await asyncio.sleep(_retry_after(exc) or 1.0)
                continue
            except Conflict:  # a webhook is set (or another poller runs): clear ours
                log.warning("telegram: getUpdates conflict; deleting the webhook")
                with contextlib.suppress(Exception):
                    await self.bot.delete_webhook()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            except (InvalidToken, Forbidden) as exc:
                self._refused(exc)
                return
            except Exception as exc:  # network, 5xx, a bad answer: keep polling, slower
                problem = self._scrub(f"getUpdates failed ({exc}); retrying in {delay:.1f} s")
                log.warning("telegram: %s", problem)
                self._enter("starting", problem)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            for update in updates:
                try:
                    await self.handle_update(update)
                except Exception as exc:
                    # not taken: leave the offset here so Telegram offers the update again
                    failures = self._failures.get(update.update_id, 0) + 1
                    self._failures[update.update_id] = failures
                    if failures < MAX_UPDATE_ATTEMPTS:
                        log.warning("telegram: update %s failed (%s); retrying in %.1f s",
                                    update.update_id, exc, delay)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 30.0)
                        break
                    log.error("telegram: update %s failed %d times; skipping it: %s",
                              update.update_id, failures, exc)
                self._failures.pop(update.update_id, None)
                offset = update.update_id + 1
                # queued behind the update's own writes (the store's writer is FIFO) and not
                # awaited: the next getUpdates confirms the update to Telegram anyway, and a
                # replay after a crash in between is a no-op thanks to the client_id
                saving = self._save_offset(offset, saving)

    def _save_offset(self, offset: int, previous: asyncio.Task[None] | None
                     ) -> asyncio.Task[None]:
        assert self.tg_state is not None
        tg_state = self.tg_state

        async def save() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous  # in order: an older offset never overwrites a newer one
            try:
                await tg_state.save_offset(offset)
            except Exception:
                log.exception("telegram: could not store the update offset %s", offset)

        return asyncio.create_task(save())

    async def handle_update(self, update: Update) -> None:
        """One update, whichever way it came.

        A user's mistake (a mesh error) or Telegram refusing an answer is logged and the update
        counts as handled. Anything else (the network, the store) is raised, so the update is
        not lost: polling offers it again, a webhook answers 500 and Telegram retries.
        """
        try:
            if update.callback_query is not None:
                await self._on_button(update.callback_query)
            elif update.message is not None:
                await self._on_message(update.message, edited=False)
            elif update.edited_message is not None:
                await self._on_message(update.edited_message, edited=True)
        except (MeshError, BadRequest, Forbidden) as exc:
            log.warning("telegram: update %s not relayed: %s", update.update_id, exc)

    async def _on_message(self, message: TgMessage, *, edited: bool) -> None:
        assert self.bot is not None and self.chat is not None and self.tg_state is not None
        chat_id = str(message.chat.id)
        if self.guard.is_own(f"{chat_id}:{message.message_id}") or (
                message.from_user is not None and message.from_user.id == self.bot.id):
            return  # our own post coming back: never relay it
        event = adapter.event_from_message(message, edited=edited)
        if event is None:
            return
        replied = message.reply_to_message
        if replied is not None:
            event.reply_to = await self.tg_state.mesh_id(chat_id, replied.message_id)
        ref = adapter.file_of(message)
        if ref is not None:
            if self.chat.paired_peer(adapter.CONNECTOR, event.user_id) is None and not (
                    event.is_group and self._linked(chat_id)):
                ref = None  # a stranger's file is not downloaded
        if ref is not None:
            try:
                event.attachments = [await self._download(ref)]
            except MeshError as exc:
                await self._reply(chat_id, f"⚠️ {exc.message}", message.message_id)
                return
        if not event.text and not event.attachments:
            return
        outcome = await self.chat.handle(event)
        log.debug("telegram: update from %s handled: %s", event.user_id, outcome)
        if outcome.sent is not None and not outcome.sent.get("duplicate"):
            # for threads: a reply to this Telegram message is a reply to that mesh message
            assert self.hub is not None
            self.hub.spawn(self.tg_state.map_message(chat_id, message.message_id,
                                                     outcome.sent["id"], outgoing=False))
        if outcome.reply:
            await self._reply(chat_id, outcome.reply, message.message_id)

    def _linked(self, chat_id: str) -> bool:
        assert self.hub is not None
        return PairingBook.of(self.hub).link_for(f"{adapter.CONNECTOR}:chat:{chat_id}") is not None

    async def _download(self, ref: adapter.FileRef) -> dict[str, Any]:
        assert self.bot is not None and self.files is not None
        if ref.size is not None:
            self.files.check_size(ref.size)
        bot = self.bot
        tg_file = await self._call(adapter.CONNECTOR, lambda: bot.get_file(ref.file_id))
        data = bytes(await tg_file.download_as_bytearray())
        if len(data) > self.files.max_bytes:
            raise TooLarge(f"the file is {len(data)} bytes; the limit is {self.files.max_bytes}")
        # up to 20 MB written and fsync'd: off the event loop
        stored = await asyncio.to_thread(self.files.put, data, ref.name, ref.mime)
        return stored.attachment()

    async def _reply(self, chat_id: str, markdown: str, reply_to: int | None = None) -> None:
        bot = self.bot
        assert bot is not None
        for chunk in adapter.split_html(markdown_to_html(markdown), adapter.TEXT_LIMIT):
            sent = await self._call(chat_id, lambda c=chunk: bot.send_message(
                chat_id, c, parse_mode=ParseMode.HTML, reply_to_message_id=reply_to,
                allow_sending_without_reply=True))
            self.guard.posted(f"{chat_id}:{sent.message_id}")

    async def _on_button(self, query: CallbackQuery) -> None:
        """A tap on an approval button answers the request and flashes how that went; the
        card is edited by :meth:`card_settled`, like every other card of the request."""
        hub = self.hub
        assert hub is not None and self.chat is not None and self.tg_state is not None
        card = None
        if isinstance(query.message, TgMessage):
            mesh_id = await self.tg_state.mesh_id(str(query.message.chat.id),
                                                  query.message.message_id)
            card = await hub.store.get_message(mesh_id) if mesh_id else None
        flash, _ = await self.chat.press(adapter.CONNECTOR, str(query.from_user.id),
                                         query.data or "", card)
        await self._call(adapter.CONNECTOR, lambda: query.answer(flash[:200]))

    def card_settled(self, label: str, message: Message) -> None:
        """Every card of a settled request or proposal gets how it was settled (``label``)
        under it and loses its buttons; in the background, so whoever settled it never waits
        on Telegram."""
        if self.hub is None:
            return
        self.hub.spawn(self._settle_cards(label, message))

    async def _settle_cards(self, label: str, message: Message) -> None:
        """Edit the request's cards; a bot still connecting (a start, an outage) is waited for
        a while, so a request settled meanwhile does not leave live buttons behind."""
        try:
            await asyncio.wait_for(self.ready.wait(), SETTLE_WAIT)
        except TimeoutError:
            log.warning("telegram: the cards of %s were not updated: the bot is not connected",
                        message.id)
            return
        assert self.hub is not None and self.tg_state is not None
        header = describe(self.hub, message)
        plain = adapter.render(header, message.body)
        footed = adapter.render(header, message.body, footer=label)
        # the buttons are on the last part; a footer that would not fit there is left out
        text = footed[-1] if len(footed) == len(plain) else plain[-1]
        posts = await self.tg_state.posts_of(message.id)
        await asyncio.gather(*(self._edit_card(chat_id, parts[len(plain) - 1], text, message.id)
                               for chat_id, parts in posts.items() if len(plain) - 1 in parts))

    async def _edit_card(self, chat_id: str, tg_id: int, html: str, mesh_id: str) -> None:
        bot = self.bot
        assert bot is not None
        try:
            await self._call(chat_id, lambda: bot.edit_message_text(
                html, chat_id=chat_id, message_id=tg_id, parse_mode=ParseMode.HTML))
        except Exception as exc:
            log.warning("telegram: the card of %s in chat %s was not updated: %s", mesh_id,
                        chat_id, self._scrub(str(exc)))

    # -- webhook -------------------------------------------------------------------------------
    async def webhook(self, request: web.Request) -> web.Response:
        """``POST`` of an update by Telegram (or a test); answered 200 once handled."""
        if self.state != "webhook" or request.path != self.settings.webhook_path:
            raise web.HTTPNotFound()
        given = request.headers.get(SECRET_HEADER, "")
        if not self.webhook_secret or not hmac.compare_digest(
                given.encode(), self.webhook_secret.encode()):
            raise web.HTTPUnauthorized(text="wrong or missing secret token")
        try:
            data = await request.json()
            update = Update.de_json(data, self.bot)
        except Exception:
            raise web.HTTPBadRequest(text="not a Telegram update") from None
        assert self.tg_state is not None
        if not await self.tg_state.claim_update(update.update_id):
            return web.json_response({"ok": True, "duplicate": True})
        try:
            await self.handle_update(update)
        except Exception:
            await self.tg_state.forget_update(update.update_id)  # let Telegram retry it
            raise
        return web.json_response({"ok": True})

    # -- delivering ----------------------------------------------------------------------------
    async def _call(self, chat_id: str, fn: Any) -> Any:
        """One Bot API call: rate-limited per chat, retried on 429 / network errors / 5xx."""
        assert self.hub is not None
        return await call_limited(fn, TELEGRAM_ERRORS, self.limiter, chat_id,
                                  lease_seconds=self.hub.config.lease_seconds)

    async def deliver(self, hub: Hub, peer: Peer, message: Message) -> bool:
        """Post ``message`` to ``peer``'s chat; ``True`` only once Telegram took every part."""
        chat_id = adapter.chat_of(peer.identity)
        if chat_id is None:
            return False
        verdict = await may_post(hub, peer, message, connector=adapter.CONNECTOR, chat=chat_id,
                                 platform="Telegram", place="group")
        if verdict is not None:
            return verdict
        if not self.ready.is_set() or self.bot is None or self.tg_state is None:
            return False  # not connected yet: the lease retries it
        bot = self.bot
        done = await self.tg_state.sent_parts(message.id, chat_id)
        reply_to = None
        if message.reply_to is not None:
            parts = await self.tg_state.sent_parts(message.reply_to, chat_id)
            reply_to = parts.get(0)
        label = await settled_label(hub, message)
        chunks = adapter.render(describe(hub, message), message.body, footer=label)
        markup = None if label else adapter.keyboard(buttons(message))
        try:
            for part, chunk in enumerate(chunks):
                if part in done:
                    continue
                last = part == len(chunks) - 1
                sent = await self._send_text(bot, chat_id, chunk, reply_to,
                                             markup if last else None)
                await self._posted(chat_id, sent.message_id, message.id, part)
            for index, attachment in enumerate(message.attachments):
                part = len(chunks) + index
                if part in done or not isinstance(attachment, dict):
                    continue
                sent = await self._send_file(bot, chat_id, attachment)
                await self._posted(chat_id, sent.message_id, message.id, part)
            if markup is not None and (late := await settled_label(hub, message)):
                hub.spawn(self._settle_cards(late, message))  # settled while it was posted
        except (Forbidden, BadRequest, InvalidToken) as exc:
            await give_up(hub, peer, message, f"Telegram refused it: {exc}")
            return False
        except (NotFound, InvalidRequest) as exc:  # an attachment the file store cannot give
            await give_up(hub, peer, message, f"an attachment cannot be sent: {exc.message}")
            return False
        except (GiveUp, MeshError) as exc:
            log.warning("telegram: delivery of %s to %s postponed: %s", message.id, peer.name, exc)
            return False
        return True

    async def _send_text(self, bot: Bot, chat_id: str, html: str, reply_to: int | None,
                         markup: Any) -> TgMessage:
        try:
            result: TgMessage = await self._call(chat_id, lambda: bot.send_message(
                chat_id, html, parse_mode=ParseMode.HTML, reply_markup=markup,
                reply_to_message_id=reply_to, allow_sending_without_reply=True))
        except BadRequest as exc:
            if "parse" not in str(exc).lower():
                raise
            # our HTML should always parse; if Telegram disagrees, plain text still arrives
            log.warning("telegram: HTML refused (%s); sending plain text", exc)
            from html import unescape
            from re import sub

            plain = unescape(sub(r"<[^>]*>", "", html))
            result = await self._call(chat_id, lambda: bot.send_message(
                chat_id, plain, reply_markup=markup, reply_to_message_id=reply_to,
                allow_sending_without_reply=True))
        return result

    async def _send_file(self, bot: Bot, chat_id: str, attachment: dict[str, Any]) -> TgMessage:
        assert self.files is not None
        data = await asyncio.to_thread(self.files.get, str(attachment.get("file", "")))
        name = str(attachment.get("name") or "file")
        result: TgMessage = await self._call(chat_id, lambda: bot.send_document(
            chat_id, InputFile(data, filename=name)))
        return result

    async def _posted(self, chat_id: str, tg_id: int, mesh_id: str, part: int) -> None:
        assert self.tg_state is not None
        self.guard.posted(f"{chat_id}:{tg_id}")
        await self.tg_state.map_message(chat_id, tg_id, mesh_id, part=part, outgoing=True)
