"""A fake Telegram Bot API server on 127.0.0.1, for the real python-telegram-bot library.

It implements what the connector uses (getMe, getUpdates with long polling and offsets,
sendMessage, editMessageText, answerCallbackQuery, sendDocument, getFile and file downloads,
setWebhook, deleteWebhook), records every call, lets a test inject updates as a user would
cause them, and can be scripted to fail (``fail_next("sendMessage", 429, retry_after=1)``).

Like Telegram, it refuses HTML it could not parse (unknown tags, unbalanced tags, bare ``<`` or
``&``) and texts over 4096 characters, so a test proves our escaping is right. In webhook mode it
POSTs updates to the registered URL with the secret header instead of queueing them.

    async with FakeTelegram() as tg:
        env = {"MESHHUB_TELEGRAM_TOKEN": tg.token, "MESHHUB_TELEGRAM_BASE_URL": tg.base_url}
        tg.send_text(user, "hello")
        call = await tg.wait_for("sendMessage", lambda c: c["chat_id"] == user.id)
"""

from __future__ import annotations

import asyncio
import html.parser
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from ..helpers import serve_app
from .calls import CallLog

HOST = "127.0.0.1"
TOKEN = "123456:TEST-token_for-the-fake"
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
                "blockquote", "tg-spoiler", "span", "tg-emoji"}
TEXT_LIMIT = 4096


@dataclass
class TgUser:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    is_bot: bool = False

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot,
                                "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        return data


@dataclass
class Failure:
    status: int
    description: str
    retry_after: int | None = None


class HtmlCheck(html.parser.HTMLParser):
    """Telegram's HTML rules, strictly enough to catch escaping mistakes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.errors.append(f"unsupported start tag {tag!r}")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected end tag {tag!r}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self.errors.append("unescaped angle bracket")
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self.errors.append(f"unsupported entity &{name};")
        self.text.append("x")

    def handle_charref(self, name: str) -> None:
        self.text.append("x")


def check_html(text: str) -> str | None:
    """Telegram's error for this HTML, or ``None`` when it parses."""
    if "&" in text:
        import re

        if re.search(r"&(?!(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)", text):
            return "Bad Request: can't parse entities: unescaped &"
    parser = HtmlCheck()
    parser.feed(text)
    parser.close()
    if parser.stack:
        parser.errors.append(f"unclosed tag {parser.stack[-1]!r}")
    if parser.errors:
        return f"Bad Request: can't parse entities: {parser.errors[0]}"
    if len("".join(parser.text).encode("utf-16-le")) // 2 > TEXT_LIMIT:
        return "Bad Request: message is too long"
    return None


@dataclass
class FakeTelegram(CallLog):
    token: str = TOKEN
    bot: TgUser = field(default_factory=lambda: TgUser(999000, "Mesh Bot", username="mesh_bot",
                                                          is_bot=True))
    calls: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # file_id -> (path, data)
    webhook: dict[str, Any] | None = None
    webhook_posts: list[tuple[int, int]] = field(default_factory=list)  # (update_id, status)
    history: list[dict[str, Any]] = field(default_factory=list)  # every update ever pushed

    def replay_all(self) -> None:
        """Queue every update again, as if no confirmation had reached Telegram."""
        self.updates = list(self.history)

    def __post_init__(self) -> None:
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._failures: dict[str, list[Failure]] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0
        self._closing = False

    # -- server -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    def env(self) -> dict[str, str]:
        return {"MESHHUB_TELEGRAM_TOKEN": self.token, "MESHHUB_TELEGRAM_BASE_URL": self.base_url,
                "MESHHUB_TELEGRAM_BASE_FILE_URL": self.base_file_url,
                "MESHHUB_TELEGRAM_POLL_TIMEOUT": "5"}

    def settings(self) -> dict[str, Any]:
        """The same as a ``[telegram]`` config table."""
        return {"token": self.token, "base_url": self.base_url,
                "base_file_url": self.base_file_url, "poll_timeout": 5}

    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._api)
        app.router.add_get("/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.*}", self._download)
        self._runner, self.port = await serve_app(app)
        self._http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- scripting ----------------------------------------------------------------------------
    def fail_next(self, method: str, status: int, description: str = "",
                  retry_after: int | None = None) -> None:
        """The next call of ``method`` answers ``status`` (queued: call again for more)."""
        text = description or {429: "Too Many Requests: retry after",
                               500: "Internal Server Error", 502: "Bad Gateway",
                               403: "Forbidden: bot was blocked by the user"}.get(status, "error")
        self._failures.setdefault(method, []).append(Failure(status, text, retry_after))

    # -- injecting updates ----------------------------------------------------------------------
    def _chat(self, user: TgUser, chat: dict[str, Any] | None) -> dict[str, Any]:
        if chat is not None:
            return chat
        return {"id": user.id, "type": "private", "first_name": user.first_name}

    def message(self, user: TgUser, text: str | None = None, *, chat: dict[str, Any] | None = None,
                reply_to: int | None = None, **extra: Any) -> dict[str, Any]:
        """A message object as Telegram would show it (``reply_to``: a message id in the chat)."""
        msg: dict[str, Any] = {
            "message_id": next(self._message_ids), "date": int(time.time()),
            "chat": self._chat(user, chat), "from": user.as_dict(),
        }
        if text is not None:
            msg["text"] = text
        if reply_to is not None:
            msg["reply_to_message"] = {"message_id": reply_to, "date": int(time.time()),
                                       "chat": msg["chat"], "from": self.bot.as_dict(),
                                       "text": "..."}
        msg.update(extra)
        return msg

    async def push(self, **payload: Any) -> int:
        """Queue an update (or post it to the webhook); returns its ``update_id``."""
        update = {"update_id": next(self._update_ids), **payload}
        self.history.append(update)
        if self.webhook is not None:
            await self._post_webhook(update)
        else:
            self.updates.append(update)
            await self._notify()
        return int(update["update_id"])

    async def send_text(self, user: TgUser, text: str, **options: Any) -> dict[str, Any]:
        msg = self.message(user, text, **options)
        await self.push(message=msg)
        return msg

    async def edit_text(self, message: dict[str, Any], text: str) -> None:
        edited = dict(message, text=text, edit_date=int(time.time()) + 1)
        await self.push(edited_message=edited)

    async def press(self, user: TgUser, message: dict[str, Any], data: str) -> str:
        query_id = f"cq{next(self._update_ids)}"
        await self.push(callback_query={"id": query_id, "from": user.as_dict(),
                                        "chat_instance": "ci", "data": data,
                                        "message": message})
        return query_id

    def add_file(self, data: bytes, path: str) -> tuple[str, str]:
        """Make a file downloadable; returns (file_id, file_unique_id)."""
        n = len(self.files) + 1
        file_id = f"file{n}"
        self.files[file_id] = (path, data)
        return file_id, f"uniq{n}"

    async def send_document(self, user: TgUser, data: bytes, name: str, caption: str = "",
                            **options: Any) -> dict[str, Any]:
        file_id, unique = self.add_file(data, f"documents/file{len(self.files) + 1}")
        msg = self.message(user, None, document={
            "file_id": file_id, "file_unique_id": unique, "file_name": name,
            "file_size": len(data), "mime_type": "application/octet-stream"}, **options)
        if caption:
            msg["caption"] = caption
        await self.push(message=msg)
        return msg

    async def send_photo(self, user: TgUser, data: bytes, caption: str = "") -> dict[str, Any]:
        file_id, unique = self.add_file(data, "photos/p.jpg")
        small_id, small_unique = self.add_file(data[:10], "photos/small.jpg")
        msg = self.message(user, None, photo=[
            {"file_id": small_id, "file_unique_id": small_unique, "width": 90, "height": 90,
             "file_size": 10},
            {"file_id": file_id, "file_unique_id": unique, "width": 800, "height": 600,
             "file_size": len(data)}])
        if caption:
            msg["caption"] = caption
        await self.push(message=msg)
        return msg

    async def _post_webhook(self, update: dict[str, Any]) -> None:
        assert self._http is not None and self.webhook is not None
        headers = {}
        if self.webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook["secret_token"]
        async with self._http.post(self.webhook["url"], json=update, headers=headers) as resp:
            self.webhook_posts.append((update["update_id"], resp.status))

    # -- the API --------------------------------------------------------------------------------
    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        params: dict[str, Any] = {}
        uploads: dict[str, bytes] = {}
        if request.content_type == "application/json":
            params = await request.json()
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    uploads[key] = value.file.read()
                    params[key] = {"filename": value.filename}
                else:
                    params[key] = value
        params.update(request.query)
        decoded: dict[str, Any] = {}
        for key, value in params.items():
            if isinstance(value, str):
                try:
                    decoded[key] = json.loads(value)
                except json.JSONDecodeError:
                    decoded[key] = value
            else:
                decoded[key] = value
        if "text" in params and isinstance(params["text"], str):
            decoded["text"] = params["text"]  # a text is a text even when it looks like JSON
        return decoded, uploads

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        try:
            params, uploads = await self._params(request)
        except (ConnectionResetError, aiohttp.ClientPayloadError):
            return web.Response(status=400)  # the caller went away mid-request (a hub stopping)
        call: dict[str, Any] = {"method": method, "ok": False, "at": time.monotonic(), **params,
                                "uploads": uploads}
        self.calls.append(call)
        queued = self._failures.get(method)
        if queued:
            failure = queued.pop(0)
            body: dict[str, Any] = {"ok": False, "error_code": failure.status,
                                    "description": failure.description}
            if failure.retry_after is not None:
                body["parameters"] = {"retry_after": failure.retry_after}
            call["failed"] = failure.status
            await self._notify()
            return web.json_response(body, status=failure.status)
        handler = getattr(self, "api_" + method, None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404,
                                      "description": "Not Found: method not found"}, status=404)
        if method == "getUpdates":
            result = await self.api_getUpdates(params)
        else:
            try:
                result = handler(params, uploads)
            except ValueError as exc:
                call["error"] = str(exc)
                await self._notify()
                return web.json_response({"ok": False, "error_code": 400,
                                          "description": str(exc)}, status=400)
        call["ok"] = True
        call["result"] = result
        await self._notify()
        return web.json_response({"ok": True, "result": result})

    def api_getMe(self, params: dict[str, Any], uploads: dict[str, bytes]) -> dict[str, Any]:
        return {**self.bot.as_dict(), "can_join_groups": True,
                "can_read_all_group_messages": True, "supports_inline_queries": False}

    async def api_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise ValueError("Conflict: can't use getUpdates method while webhook is active")
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 30.0)
        limit = int(params.get("limit") or 100)
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]  # confirmed
        if timeout <= 0:
            return self.updates[:limit]
        async with self._changed:
            with _suppress_timeout():
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: bool(self.updates) or self._closing),
                                       timeout)
        return self.updates[:limit]

    def _sent(self, chat_id: Any, **fields: Any) -> dict[str, Any]:
        chat_id = int(chat_id)
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        if chat_id < 0:
            chat["title"] = "group"
        return {"message_id": next(self._message_ids), "date": int(time.time()), "chat": chat,
                "from": self.bot.as_dict(), **fields}

    def api_sendMessage(self, params: dict[str, Any], uploads: dict[str, bytes]
                        ) -> dict[str, Any]:
        text = str(params["text"])
        if params.get("parse_mode") == "HTML":
            problem = check_html(text)
            if problem:
                raise ValueError(problem)
        elif len(text) > TEXT_LIMIT:
            raise ValueError("Bad Request: message is too long")
        extra: dict[str, Any] = {"text": text}
        if params.get("reply_markup"):
            extra["reply_markup"] = params["reply_markup"]
        return self._sent(params["chat_id"], **extra)

    def api_editMessageText(self, params: dict[str, Any], uploads: dict[str, bytes]
                            ) -> dict[str, Any]:
        if params.get("parse_mode") == "HTML":
            problem = check_html(str(params["text"]))
            if problem:
                raise ValueError(problem)
        return {"message_id": int(params["message_id"]), "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "text": str(params["text"])}

    def api_answerCallbackQuery(self, params: dict[str, Any], uploads: dict[str, bytes]) -> bool:
        return True

    def api_sendDocument(self, params: dict[str, Any], uploads: dict[str, bytes]
                         ) -> dict[str, Any]:
        data = uploads.get("document", b"")
        file_id, unique = self.add_file(data, "documents/sent")
        name = params.get("document", {}).get("filename") if isinstance(
            params.get("document"), dict) else None
        return self._sent(params["chat_id"], document={
            "file_id": file_id, "file_unique_id": unique, "file_name": name or "file",
            "file_size": len(data)})

    def api_getFile(self, params: dict[str, Any], uploads: dict[str, bytes]) -> dict[str, Any]:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            raise ValueError("Bad Request: invalid file_id")
        path, data = self.files[file_id]
        return {"file_id": file_id, "file_unique_id": "u" + file_id, "file_size": len(data),
                "file_path": path}

    def api_setWebhook(self, params: dict[str, Any], uploads: dict[str, bytes]) -> bool:
        self.webhook = {"url": params["url"], "secret_token": params.get("secret_token")}
        return True

    def api_deleteWebhook(self, params: dict[str, Any], uploads: dict[str, bytes]) -> bool:
        self.webhook = None
        return True

    async def _download(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        queued = self._failures.get("download")  # fail_next("download", 502)
        if queued:
            failure = queued.pop(0)
            return web.Response(status=failure.status, text=failure.description)
        if request.match_info["token"] != self.token:
            return web.Response(status=404)
        for stored_path, data in self.files.values():
            if stored_path == path:
                return web.Response(body=data)
        return web.Response(status=404)


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is TimeoutError
