"""A fake Slack on 127.0.0.1, for the real slack-sdk and slack-bolt: the Web API and events.

It answers the Web API methods a connector uses (``auth.test``, ``users.info``,
``conversations.*``, ``chat.*``, ``reactions.*``, the external file upload of
``files_upload_v2``, ``apps.connections.open``), keeps channel history with threads, reactions
and metadata, records every call, and can be scripted to fail, including a "lost answer"
(``fail_next("chat.postMessage", after_effect=True)``: the post is stored, the answer is a 500).

It also plays Slack's side of delivery: signed Events API posts to ``events_url``, or envelopes
on the Socket Mode WebSocket a ``SocketModeClient`` opens, awaiting the app's ack. A bot's own
post comes back to the app as Slack would send it (``echo_bot_messages``).

    async with FakeSlack() as slack:
        slack.add_user(SlackUser("U1", "ada", real_name="Ada"))
        slack.add_channel("C1", "general")
        slack.events_url = hub_url + "/slack/events"
        status, _ = await slack.send_event(slack.message("U1", "hello", "C1"))
        call = await slack.wait_for("chat.postMessage", lambda c: c["channel"] == "C1")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from ..helpers import serve_app
from .calls import CallLog
from .slack_events import (
    APP_ID,
    BOT_ID,
    BOT_USER,
    HOST,
    TEAM,
    TEAM_DOMAIN,
    SlackError,
    SlackUser,
    Workspace,
    event_callback,
    hello,
    new_id,
    signed_headers,
    slash_command,
    socket_envelope,
)

__all__ = ["APP_ID", "BOT_ID", "BOT_USER", "TEAM", "FakeSlack", "SlackError", "SlackUser"]

JSON_PARAMS = ("blocks", "attachments", "metadata", "files")
ACK_TIMEOUT = 10.0
DEFAULT_ERRORS = {429: "ratelimited", 200: "internal_error"}


@dataclass
class Failure:
    status: int
    error: str
    retry_after: int | None
    after_effect: bool

    @property
    def failed(self) -> int | str:
        """What a call's ``failed`` says: the status, or the error of a 200 answer."""
        return self.error if self.status == 200 else self.status

    def response(self) -> web.Response:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return web.json_response({"ok": False, "error": self.error}, status=self.status,
                                 headers=headers)


class FakeSlack(Workspace, CallLog):
    """The workspace with one app, served on a free port of 127.0.0.1."""

    bot_token = "xoxb-fake-bot-token"
    app_token = "xapp-1-fake-app-token"
    signing_secret = "fake-signing-secret"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []
        self.shared_files: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []  # every event sent: event_id, type, status
        self.echo_bot_messages = True
        self.events_url: str | None = None
        self.mode = "events"
        self.socket: web.WebSocketResponse | None = None
        self.connections = 0
        self._failures: dict[str, list[Failure]] = {}
        self._tickets: set[str] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._echoes: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    # -- server -------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        """The Web API base for ``AsyncWebClient(base_url=...)`` (it appends the method)."""
        return f"{self.url}api/"

    def settings(self, mode: str = "events") -> dict[str, Any]:
        """The hub config's ``[slack]`` table; also makes ``mode`` the fake's delivery mode."""
        self.mode = mode
        return {"bot_token": self.bot_token, "signing_secret": self.signing_secret,
                "api_url": self.api_url, "app_token": self.app_token, "mode": mode}

    async def start(self) -> FakeSlack:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files/{file_id}/{name}", self._download)
        app.router.add_post("/respond/{id}", self._respond)
        app.router.add_get("/socket", self._socket)
        self._runner, self.port = await serve_app(app)
        self._http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for task in list(self._echoes):
            task.cancel()
        await asyncio.gather(*self._echoes, return_exceptions=True)
        for socket in list(self._sockets):
            await socket.close()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- scripting and inspection -----------------------------------------------------------
    def fail_next(self, method: str, status: int | None = None, error: str | None = None,
                  retry_after: int | None = None, after_effect: bool = False) -> None:
        """The next call of ``method`` fails (queued: call again for more).

        ``status`` 429 (the default) answers "ratelimited" with ``Retry-After`` when
        ``retry_after`` is given; 200 answers ``{"ok": false, "error": error}``; any other status
        is an error answer with that status. With ``after_effect`` the call takes effect first
        and only its answer is lost (a 500 unless ``status`` says otherwise). ``"upload"`` and
        ``"download"`` script the file transfer URLs the same way.
        """
        code = status if status is not None else (500 if after_effect else 429)
        text = error or DEFAULT_ERRORS.get(code, "fatal_error")
        self._failures.setdefault(method, []).append(
            Failure(code, text, retry_after, after_effect))

    async def wait_connected(self, timeout: float = 10.0) -> web.WebSocketResponse:
        """The Socket Mode connection, once an app has one open."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.socket is not None),
                                   timeout)
        assert self.socket is not None
        return self.socket

    async def disconnect(self, warn: bool = True) -> None:
        """End the Socket Mode connection, so the app must reconnect.

        With ``warn`` Slack's way: a ``disconnect`` message (``refresh_requested``), and the
        socket is closed once the app has left it or after ``ACK_TIMEOUT``; without, a plain
        close, as when the network drops.
        """
        socket = self.socket
        if socket is None:
            return
        self.socket = None
        if warn:
            await socket.send_str(json.dumps({"type": "disconnect", "reason": "refresh_requested",
                                              "debug_info": {"host": "fake-slack"}}))
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: socket.closed),
                                           ACK_TIMEOUT)
        await socket.close()

    def _take_failure(self, method: str) -> Failure | None:
        queued = self._failures.get(method)
        return queued.pop(0) if queued else None

    # -- delivery -------------------------------------------------------------------------------
    async def send_event(self, event: dict[str, Any], *, event_id: str | None = None,
                         retry_num: int | None = None, sign: bool = True,
                         timestamp: int | None = None, secret: str | None = None
                         ) -> tuple[int, str]:
        """Deliver ``event`` in its Events API envelope; the app's answer (status, body text).

        In socket mode the answer is ``(200, ack)`` once the app acks the envelope. ``secret``,
        ``timestamp`` and ``sign=False`` make a badly signed post (events mode only).
        """
        envelope = event_callback(event, event_id)
        if self.mode == "socket":
            ack = await self._send_socket(socket_envelope("events_api", envelope,
                                                          accepts_response_payload=False,
                                                          retry_num=retry_num))
            status, body = 200, json.dumps(ack)
        else:
            headers = {}
            if retry_num is not None:
                headers = {"X-Slack-Retry-Num": str(retry_num),
                           "X-Slack-Retry-Reason": "http_timeout"}
            status, body = await self._post(json.dumps(envelope), "application/json",
                                            sign=sign, timestamp=timestamp, secret=secret,
                                            extra=headers)
        self.deliveries.append({"event_id": envelope["event_id"], "type": event.get("type"),
                                "subtype": event.get("subtype"), "status": status})
        return status, body

    async def send_interaction(self, payload: dict[str, Any], *, sign: bool = True,
                               timestamp: int | None = None, secret: str | None = None
                               ) -> tuple[int, str]:
        """Deliver an interactivity payload (``block_actions``); the app's answer."""
        if self.mode == "socket":
            ack = await self._send_socket(socket_envelope("interactive", payload,
                                                          accepts_response_payload=False))
            return 200, json.dumps(ack)
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return await self._post(body, "application/x-www-form-urlencoded", sign=sign,
                                timestamp=timestamp, secret=secret)

    async def send_command(self, user: SlackUser | str, text: str, channel: str,
                           command: str = "/hub", *, sign: bool = True,
                           timestamp: int | None = None, secret: str | None = None
                           ) -> tuple[int, str]:
        """Deliver a slash command; the HTTP answer, or in socket mode the ack's payload."""
        fields = slash_command(self._user(user), text, self._channel(channel), command,
                               f"{self.url}respond/{new_id('R')}")
        if self.mode == "socket":
            ack = await self._send_socket(socket_envelope("slash_commands", dict(fields),
                                                          accepts_response_payload=True))
            return 200, json.dumps(ack["payload"]) if "payload" in ack else ""
        return await self._post(urllib.parse.urlencode(fields),
                                "application/x-www-form-urlencoded", sign=sign,
                                timestamp=timestamp, secret=secret)

    async def _post(self, body: str, content_type: str, *, sign: bool, timestamp: int | None,
                    secret: str | None, extra: dict[str, str] | None = None
                    ) -> tuple[int, str]:
        if self.events_url is None or self._http is None:
            raise RuntimeError("set events_url (the app's request URL) before sending events")
        headers = signed_headers(body, content_type, timestamp=timestamp,
                                 secret=(secret or self.signing_secret) if sign else None)
        headers.update(extra or {})
        async with self._http.post(self.events_url, data=body.encode(),
                                   headers=headers) as response:
            return response.status, await response.text()

    async def _send_socket(self, envelope: dict[str, Any]) -> dict[str, Any]:
        socket = await self.wait_connected(ACK_TIMEOUT)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope["envelope_id"]] = waiter
        try:
            await socket.send_str(json.dumps(envelope))
            return await asyncio.wait_for(waiter, ACK_TIMEOUT)
        finally:
            self._acks.pop(envelope["envelope_id"], None)

    def _echo(self, event: dict[str, Any]) -> None:
        """Send the bot's own change back to the app later, as Slack does, if anyone listens."""
        listening = self.socket is not None if self.mode == "socket" else bool(self.events_url)
        if not (self.echo_bot_messages and listening):
            return
        task = asyncio.get_running_loop().create_task(self._deliver_echo(event))
        self._echoes.add(task)
        task.add_done_callback(self._echoes.discard)

    async def _deliver_echo(self, event: dict[str, Any]) -> None:
        try:
            await self.send_event(event)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            self.deliveries.append({"event_id": None, "type": event.get("type"),
                                    "subtype": event.get("subtype"), "status": 0,
                                    "error": repr(exc)})

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.Response(status=401)
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.add(socket)
        self.socket = socket
        self.connections += 1
        await socket.send_str(json.dumps(hello()))
        await self._notify()
        try:
            async for frame in socket:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    self._ack(json.loads(frame.data))
        finally:
            self._sockets.discard(socket)
            if self.socket is socket:
                self.socket = None
            await self._notify()
        return socket

    def _ack(self, ack: dict[str, Any]) -> None:
        waiter = self._acks.get(str(ack.get("envelope_id")))
        if waiter is not None and not waiter.done():
            waiter.set_result(ack)

    # -- the Web API ----------------------------------------------------------------------------
    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        for key in JSON_PARAMS:
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except json.JSONDecodeError:
                    pass
        return params

    def _token(self, request: web.Request, params: dict[str, Any]) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header.removeprefix("Bearer ")
        token = params.pop("token", None)
        return str(token) if token is not None else None

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        token = self._token(request, params)
        call: dict[str, Any] = {**params, "method": method, "at": time.monotonic(),
                                "failed": None, "ok": False}
        self.calls.append(call)
        try:
            return self._answer(method, token, params, call)
        finally:
            await self._notify()

    def _answer(self, method: str, token: str | None, params: dict[str, Any],
                call: dict[str, Any]) -> web.Response:
        """Run ``method`` (or its scripted failure), noting in ``call`` what happened."""
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        failure = self._take_failure(method) if token == wanted else None
        if failure is not None and not failure.after_effect:
            call["failed"] = failure.failed
            return failure.response()
        handler = getattr(self, "api_" + method.replace(".", "_"), None)
        try:
            if token != wanted:
                raise SlackError("invalid_auth")
            if handler is None:
                raise SlackError("unknown_method")
            result = {"ok": True, **handler(params)}
        except SlackError as exc:
            call["error"] = str(exc)
            return web.json_response({"ok": False, "error": str(exc)})
        call.update(ok=True, result=result)
        if failure is not None:
            call["failed"] = failure.failed
            return failure.response()
        return web.json_response(result)

    def _known_channel(self, params: dict[str, Any], key: str = "channel") -> str:
        channel = str(params.get(key) or "")
        if channel.startswith("U") and channel in self.users:
            return str(self.open_dm([channel])["id"])
        if channel.startswith("#"):
            channel = next((c["id"] for c in self.channels.values()
                            if c.get("name") == channel[1:]), channel)
        if channel not in self.channels:
            raise SlackError("channel_not_found")
        return channel

    def _message(self, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        channel = self._known_channel(params)
        message = self._find(channel, str(params.get("ts") or params.get("timestamp")))
        if message is None:
            raise SlackError("message_not_found")
        return channel, message

    def _echo_event(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        ts = message["ts"]
        return {**message, "channel": channel, "event_ts": ts,
                "channel_type": self._channel_type(self.channels[channel])}

    def api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"https://{TEAM_DOMAIN}.slack.com/", "team": "meshhub fake",
                "user": self.users[BOT_USER].name, "team_id": TEAM, "user_id": BOT_USER,
                "bot_id": BOT_ID, "is_enterprise_install": False}

    def api_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user")))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user.as_dict()}

    def api_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self.channels[self._known_channel(params)]}

    def api_conversations_members(self, params: dict[str, Any]) -> dict[str, Any]:
        members = list(self.channels[self._known_channel(params)]["members"])
        return {"members": members, "response_metadata": {"next_cursor": ""}}

    def api_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if not users or any(u not in self.users for u in users):
            raise SlackError("user_not_found")
        return {"channel": self.open_dm(users)}

    def api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._known_channel(params)
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise SlackError("no_text")
        message: dict[str, Any] = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID,
                                   "app_id": APP_ID, "text": params.get("text") or "",
                                   "ts": self.next_ts(), "team": TEAM}
        if params.get("username"):
            message.update(subtype="bot_message", username=params["username"])
            icons = {"emoji": params.get("icon_emoji"), "image_64": params.get("icon_url")}
            message["icons"] = {k: v for k, v in icons.items() if v}
        for key in ("blocks", "attachments", "metadata", "thread_ts"):
            if params.get(key):
                message[key] = params[key]
        self._store(channel, message)
        self._echo(self._echo_event(channel, message))
        return {"channel": channel, "ts": message["ts"],
                "message": {k: v for k, v in message.items() if k != "metadata"}}

    def api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._message(params)
        previous = dict(message)
        for key in ("text", "blocks", "attachments", "metadata"):
            if params.get(key) is not None:
                message[key] = params[key]
        now = self.next_ts()
        message["edited"] = {"user": BOT_USER, "ts": now}
        self._echo({**self._echo_event(channel, previous), "subtype": "message_changed",
                    "hidden": True, "ts": now, "event_ts": now, "message": dict(message),
                    "previous_message": previous})
        return {"channel": channel, "ts": message["ts"], "text": message.get("text", ""),
                "message": message}

    def api_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._message(params)
        self._remove(channel, message["ts"])
        now = self.next_ts()
        self._echo({"type": "message", "subtype": "message_deleted", "hidden": True,
                    "channel": channel, "ts": now, "event_ts": now, "deleted_ts": message["ts"],
                    "previous_message": message,
                    "channel_type": self._channel_type(self.channels[channel])})
        return {"channel": channel, "ts": message["ts"]}

    def api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        self._known_channel(params)
        if str(params.get("user")) not in self.users:
            raise SlackError("user_not_in_channel")
        return {"message_ts": self.next_ts()}

    def api_reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._message(params)
        users = self._reactions.setdefault((channel, message["ts"]), {}).setdefault(
            str(params.get("name")), [])
        if BOT_USER in users:
            raise SlackError("already_reacted")
        users.append(BOT_USER)
        return {}

    def api_reactions_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._message(params)
        users = self._reactions.get((channel, message["ts"]), {}).get(str(params.get("name")))
        if not users or BOT_USER not in users:
            raise SlackError("no_reaction")
        users.remove(BOT_USER)
        return {}

    def api_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._known_channel(params)
        top = [m for m in self.history[channel] if m.get("thread_ts", m["ts"]) == m["ts"]]
        return self._page(channel, top[::-1], params)

    def api_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._known_channel(params)
        ts = str(params.get("ts"))
        thread = [m for m in self.history[channel] if m["ts"] == ts or m.get("thread_ts") == ts]
        if not thread:
            raise SlackError("thread_not_found")
        return self._page(channel, thread, params)

    def api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"ws://{HOST}:{self.port}/socket?ticket={ticket}"}

    def api_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("filename") or not str(params.get("length", "")).isdigit():
            raise SlackError("invalid_arguments")
        file_id = new_id("F")
        self.files[file_id] = {"id": file_id, "name": str(params["filename"]),
                               "title": str(params["filename"]),
                               "mimetype": mimetypes.guess_type(str(params["filename"]))[0]
                               or "application/octet-stream", "data": None,
                               "user": BOT_USER}
        return {"upload_url": f"{self.url}upload/{file_id}", "file_id": file_id}

    def api_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        entries = params.get("files")
        if not isinstance(entries, list) or not entries:
            raise SlackError("invalid_arguments")
        channel = self._known_channel(params, "channel_id") if params.get("channel_id") else None
        for entry in entries:
            stored = self.files.get(str(entry.get("id")))
            if stored is None or stored["data"] is None:
                raise SlackError("file_not_found")
            stored["title"] = entry.get("title") or stored["name"]
        files = [self.file_dict(str(entry["id"])) for entry in entries]
        if channel is not None:
            self._share(channel, files, params)
        return {"files": files}

    def _share(self, channel: str, files: list[dict[str, Any]], params: dict[str, Any]) -> None:
        thread_ts = params.get("thread_ts") or None
        comment = str(params.get("initial_comment") or "")
        for file in files:
            self.shared_files.append({"id": file["id"], "name": file["name"],
                                      "data": self.files[file["id"]]["data"],
                                      "channel": channel, "thread_ts": thread_ts,
                                      "initial_comment": comment})
        message: dict[str, Any] = {"type": "message", "subtype": "file_share",
                                   "user": BOT_USER, "bot_id": BOT_ID, "app_id": APP_ID,
                                   "text": comment, "ts": self.next_ts(), "team": TEAM,
                                   "files": files, "upload": True, "display_as_bot": False}
        if thread_ts:
            message["thread_ts"] = thread_ts
        self._store(channel, message)
        self._echo(self._echo_event(channel, message))

    # -- file transfers and response URLs --------------------------------------------------------
    def _record(self, method: str, **fields: Any) -> dict[str, Any]:
        call = {**fields, "method": method, "at": time.monotonic(), "failed": None, "ok": True}
        self.calls.append(call)
        return call

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if request.content_type == "multipart/form-data":
            form = await request.post()
            data = next((v.file.read() for v in form.values() if isinstance(v, web.FileField)),
                        b"")
        else:
            data = await request.read()
        call = self._record("upload", file_id=file_id, size=len(data))
        failure = self._take_failure("upload")
        stored = self.files.get(file_id)
        if stored is not None and (failure is None or failure.after_effect):
            stored["data"] = data
        await self._notify()
        if failure is not None:
            call.update(ok=failure.after_effect, failed=failure.status)
            return web.Response(status=failure.status, text="failed")
        if stored is None:
            call.update(ok=False, error=404)
            return web.Response(status=404, text="no such upload")
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        call = self._record("download", file_id=file_id, name=request.match_info["name"])
        failure = self._take_failure("download")
        stored = self.files.get(file_id)
        status = 200
        if failure is not None:
            status = failure.status
        elif request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            status = 403
        elif stored is None or stored["data"] is None:
            status = 404
        await self._notify()
        if status != 200:
            call.update(ok=False, **{"failed" if failure else "error": status})
            return web.Response(status=status, text="<html>sign in</html>",
                                content_type="text/html")
        assert stored is not None
        return web.Response(body=stored["data"], content_type=stored["mimetype"])

    async def _respond(self, request: web.Request) -> web.Response:
        """A ``response_url`` (of a button press or a command): recorded as ``response_url``."""
        self._record("response_url", id=request.match_info["id"], **(await self._params(request)))
        await self._notify()
        return web.json_response({"ok": True})
