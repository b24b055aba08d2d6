"""The fake Slack's workspace and what Slack sends an app: signatures, envelopes, payloads.

The shapes follow what Slack delivers (Events API callbacks, Socket Mode envelopes,
``block_actions`` and slash command payloads) closely enough that the real slack-sdk and
slack-bolt accept them. ``Workspace`` holds the state (users, channels, history with threads
and reactions, files) and builds the events a person causes; ``slack_api.FakeSlack`` serves it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

TEAM = "T0MESH"
TEAM_DOMAIN = "meshhub-fake"
BOT_USER = "UBOT0001"
BOT_ID = "BBOT0001"
APP_ID = "A0MESH"
VERIFICATION_TOKEN = "fake-verification-token"
HOST = "127.0.0.1"


class SlackError(Exception):
    """A Web API answer ``{"ok": false, "error": ...}``."""


def flag(value: Any) -> bool:
    """A boolean parameter as slack-sdk sends it (``True``, ``"1"`` or ``"true"``)."""
    return value is True or str(value).lower() in ("1", "true")


@dataclass
class SlackUser:
    id: str
    name: str
    real_name: str = ""
    team: str = TEAM
    is_bot: bool = False
    bot_id: str | None = None
    display_name: str = ""
    restricted: bool = False  # a guest of the workspace

    def as_dict(self) -> dict[str, Any]:
        """The user object of ``users.info`` and ``user_change``."""
        profile: dict[str, Any] = {"display_name": self.display_name,
                                   "real_name": self.real_name,
                                   "display_name_normalized": self.display_name,
                                   "real_name_normalized": self.real_name}
        if self.bot_id:
            profile["bot_id"] = self.bot_id
        return {"id": self.id, "team_id": self.team, "name": self.name, "deleted": False,
                "real_name": self.real_name, "is_bot": self.is_bot, "is_app_user": False,
                "is_restricted": self.restricted, "profile": profile}


def signature(secret: str, timestamp: str, body: str) -> str:
    """Slack's ``X-Slack-Signature``: ``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(body: str, content_type: str, *, secret: str | None,
                   timestamp: int | None) -> dict[str, str]:
    """The headers of a request from Slack; no timestamp nor signature when ``secret`` is None."""
    headers = {"Content-Type": content_type}
    if secret is None:
        return headers
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers["X-Slack-Request-Timestamp"] = stamp
    headers["X-Slack-Signature"] = signature(secret, stamp, body)
    return headers


def new_id(prefix: str) -> str:
    """A random Slack-looking id (``Ev...``, ``F...``): unique, not meant to be read."""
    return prefix + uuid.uuid4().hex[:10].upper()


def event_callback(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """The Events API envelope around an inner event, as posted to the app's request URL."""
    return {
        "token": VERIFICATION_TOKEN, "team_id": TEAM, "context_team_id": TEAM,
        "api_app_id": APP_ID, "event": event, "type": "event_callback",
        "event_id": event_id or new_id("Ev"), "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER,
                            "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False, "event_context": new_id("4-"),
    }


def socket_envelope(kind: str, payload: dict[str, Any], *, accepts_response_payload: bool,
                    retry_num: int | None = None) -> dict[str, Any]:
    """A Socket Mode envelope (``events_api``, ``interactive``, ``slash_commands``)."""
    return {"envelope_id": str(uuid.uuid4()), "type": kind, "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": retry_num or 0, "retry_reason": "timeout" if retry_num else ""}


def hello(app_id: str = APP_ID) -> dict[str, Any]:
    """The first message on a new Socket Mode connection."""
    return {"type": "hello", "num_connections": 1,
            "debug_info": {"host": "fake-slack", "build_number": 1,
                           "approximate_connection_time": 3600},
            "connection_info": {"app_id": app_id}}


def find_action(blocks: list[dict[str, Any]], action_id: str) -> tuple[str, dict[str, Any]]:
    """The block id and element of ``action_id`` in ``blocks`` (a made-up pair if absent)."""
    for index, block in enumerate(blocks):
        elements = block.get("elements") or ([block["accessory"]] if "accessory" in block
                                             else [])
        for element in elements:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(block.get("block_id") or f"block{index}"), element
    return "block0", {"action_id": action_id}


def block_actions(user: SlackUser, message: dict[str, Any], channel: dict[str, Any],
                  action_id: str, value: str, response_url: str) -> dict[str, Any]:
    """Slack's ``block_actions`` payload for a button press on ``message``."""
    block_id, element = find_action(message.get("blocks") or [], action_id)
    action_ts = f"{time.time():.6f}"
    action: dict[str, Any] = {"action_id": action_id, "block_id": block_id, "value": value,
                              "type": "button", "action_ts": action_ts}
    if "text" in element:
        action["text"] = element["text"]
    return {
        "type": "block_actions",
        "user": {"id": user.id, "username": user.name, "name": user.name, "team_id": user.team},
        "api_app_id": APP_ID, "token": VERIFICATION_TOKEN,
        "container": {"type": "message", "message_ts": message["ts"],
                      "channel_id": channel["id"], "is_ephemeral": False},
        "trigger_id": new_id("trigger."), "team": {"id": TEAM, "domain": TEAM_DOMAIN},
        "enterprise": None, "is_enterprise_install": False,
        "channel": {"id": channel["id"], "name": channel.get("name", channel["id"])},
        "message": message, "state": {"values": {}}, "response_url": response_url,
        "actions": [action],
    }


def slash_command(user: SlackUser, text: str, channel: dict[str, Any], command: str,
                  response_url: str) -> dict[str, str]:
    """The fields of a slash command, as Slack form-encodes them (all strings)."""
    return {"token": VERIFICATION_TOKEN, "team_id": TEAM, "team_domain": TEAM_DOMAIN,
            "channel_id": channel["id"], "channel_name": channel.get("name", channel["id"]),
            "user_id": user.id, "user_name": user.name, "command": command, "text": text,
            "api_app_id": APP_ID, "is_enterprise_install": "false",
            "response_url": response_url, "trigger_id": new_id("trigger.")}


class Workspace:
    """One workspace (``T0MESH``) with its bot user: who is in it and what was said where."""

    def __init__(self) -> None:
        self.users: dict[str, SlackUser] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}  # channel -> messages, oldest first
        self.files: dict[str, dict[str, Any]] = {}  # file id -> {id, name, mimetype, data}
        self.port = 0
        self._reactions: dict[tuple[str, str], dict[str, list[str]]] = {}
        self._dms: dict[tuple[str, ...], str] = {}
        self._last_micros = 0
        self.add_user(SlackUser(BOT_USER, "meshhub", real_name="meshhub", is_bot=True,
                                bot_id=BOT_ID, display_name="meshhub"))

    @property
    def url(self) -> str:
        """The server root, with its trailing slash."""
        return f"http://{HOST}:{self.port}/"

    def add_user(self, user: SlackUser) -> SlackUser:
        self.users[user.id] = user
        return user

    def add_channel(self, id: str, name: str, is_im: bool = False) -> dict[str, Any]:
        """A conversation the bot is a member of (``is_im``: a direct message)."""
        private = is_im or id.startswith("G")
        channel = {"id": id, "name": name, "is_channel": not private, "is_group": False,
                   "is_im": is_im, "is_mpim": False, "is_private": private, "is_member": True,
                   "created": int(time.time()), "context_team_id": TEAM,
                   "members": [BOT_USER]}
        self.channels[id] = channel
        self.history.setdefault(id, [])
        return channel

    def join(self, channel: str, user: SlackUser | str) -> None:
        """``user`` joins ``channel`` (posting there joins it too)."""
        who = self._user(user)
        members = self._channel(channel)["members"]
        if who.id not in members:
            members.append(who.id)

    def leave(self, channel: str, user: SlackUser | str) -> None:
        members = self._channel(channel)["members"]
        user_id = user.id if isinstance(user, SlackUser) else user
        if user_id in members:
            members.remove(user_id)

    def open_dm(self, users: list[str]) -> dict[str, Any]:
        """The stable ``D...`` (or ``G...`` for several people) conversation with ``users``."""
        key = tuple(sorted(users))
        if key not in self._dms:
            prefix = "D" if len(key) == 1 else "G"
            channel_id = f"{prefix}{len(self._dms) + 1:07d}"
            channel = self.add_channel(channel_id, "-".join(key), is_im=len(key) == 1)
            channel["is_mpim"] = len(key) > 1
            if len(key) == 1:
                channel["user"] = key[0]
            self._dms[key] = channel_id
        return self.channels[self._dms[key]]

    def reactions(self, channel: str, ts: str) -> dict[str, list[str]]:
        """The reactions on a message: emoji name -> ids of the users who reacted."""
        return {name: list(users) for name, users in self._reactions.get((channel, ts),
                                                                         {}).items() if users}

    def message_at(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The stored message ``ts`` of ``channel``, with its reactions."""
        for message in self.history.get(channel, []):
            if message["ts"] == ts:
                return self._shown(channel, message, metadata=True)
        return None

    def next_ts(self) -> str:
        """A new message timestamp: now, and always later than the previous one."""
        micros = max(time.time_ns() // 1000, self._last_micros + 1)
        self._last_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def add_file(self, data: bytes, name: str, mimetype: str = "application/octet-stream"
                 ) -> dict[str, Any]:
        """A file a person shared: its dict as in a message event, downloadable with the token."""
        file_id = new_id("F")
        self.files[file_id] = {"id": file_id, "name": name, "title": name,
                               "mimetype": mimetype, "data": data, "user": None}
        return self.file_dict(file_id)

    def file_dict(self, file_id: str) -> dict[str, Any]:
        stored = self.files[file_id]
        name = stored["name"]
        url = f"{self.url}files/{file_id}/{urllib.parse.quote(name)}"
        data = stored["data"] or b""
        return {"id": file_id, "created": int(time.time()), "timestamp": int(time.time()),
                "name": name, "title": stored["title"], "mimetype": stored["mimetype"],
                "filetype": name.rsplit(".", 1)[-1] if "." in name else "binary",
                "user": stored["user"] or BOT_USER, "size": len(data), "mode": "hosted",
                "is_external": False, "url_private": url, "url_private_download": url,
                "permalink": url}

    # -- event builders -------------------------------------------------------------------------
    def _user(self, user: SlackUser | str) -> SlackUser:
        if isinstance(user, SlackUser):
            return self.users.setdefault(user.id, user)
        return self.users.get(user) or self.add_user(SlackUser(user, user.lower()))

    def _channel(self, channel: str, channel_type: str | None = None) -> dict[str, Any]:
        if channel not in self.channels:
            return self.add_channel(channel, channel.lower(),
                                    is_im=channel_type == "im" or channel.startswith("D"))
        return self.channels[channel]

    @staticmethod
    def _channel_type(channel: dict[str, Any]) -> str:
        if channel["is_im"]:
            return "im"
        if channel.get("is_mpim"):
            return "mpim"
        return "group" if channel["is_private"] else "channel"

    def message(self, user: SlackUser | str, text: str, channel: str, *,
                thread_ts: str | None = None, channel_type: str | None = None,
                files: list[dict[str, Any]] | None = None,
                blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A person's new message (stored in the history) as its ``message`` event.

        ``user`` and ``channel`` need not be added first: an unknown id becomes a user, an
        unknown channel a public channel (a DM when it starts with ``D``).
        """
        who = self._user(user)
        room = self._channel(channel, channel_type)
        if who.id not in room["members"]:
            room["members"].append(who.id)
        ts = self.next_ts()
        stored: dict[str, Any] = {"type": "message", "user": who.id, "text": text, "ts": ts,
                                  "team": who.team, "client_msg_id": str(uuid.uuid4())}
        if who.is_bot:  # another app's bot user, as Slack shows its posts
            stored.update(bot_id=who.bot_id or f"B{who.id}", app_id=f"A{who.id}",
                          bot_profile={"id": who.bot_id or f"B{who.id}", "name": who.name})
        if blocks is not None:
            stored["blocks"] = blocks
        if files:
            stored.update(subtype="file_share", files=files, upload=False, display_as_bot=False)
            for file in files:
                if file["id"] in self.files:
                    self.files[file["id"]]["user"] = who.id
        if thread_ts is not None:
            stored["thread_ts"] = thread_ts
            parent = self._find(channel, thread_ts)
            stored["parent_user_id"] = parent.get("user") if parent else None
        self._store(channel, stored)
        return {**stored, "channel": channel, "event_ts": ts,
                "channel_type": channel_type or self._channel_type(room)}

    def edit(self, original_event: dict[str, Any], new_text: str) -> dict[str, Any]:
        """A ``message_changed`` event for a person editing their message to ``new_text``."""
        channel = original_event["channel"]
        previous = {k: v for k, v in original_event.items()
                    if k not in ("channel", "event_ts", "channel_type")}
        now = self.next_ts()
        changed = {**previous, "text": new_text,
                   "edited": {"user": previous.get("user"), "ts": now}}
        stored = self._find(channel, previous["ts"])
        if stored is not None:
            stored.update(text=new_text, edited=changed["edited"])
        return {"type": "message", "subtype": "message_changed", "hidden": True,
                "channel": channel, "ts": now, "event_ts": now, "message": changed,
                "previous_message": previous,
                "channel_type": original_event.get("channel_type", "channel")}

    def delete(self, original_event: dict[str, Any]) -> dict[str, Any]:
        """A ``message_deleted`` event for a person deleting their message."""
        channel = original_event["channel"]
        previous = {k: v for k, v in original_event.items()
                    if k not in ("channel", "event_ts", "channel_type")}
        self._remove(channel, previous["ts"])
        now = self.next_ts()
        return {"type": "message", "subtype": "message_deleted", "hidden": True,
                "channel": channel, "ts": now, "event_ts": now, "deleted_ts": previous["ts"],
                "previous_message": previous,
                "channel_type": original_event.get("channel_type", "channel")}

    def reaction(self, user: SlackUser | str, name: str, channel: str, ts: str,
                 removed: bool = False) -> dict[str, Any]:
        """A ``reaction_added`` (or ``reaction_removed``) event; the fake's reactions follow."""
        who = self._user(user)
        users = self._reactions.setdefault((channel, ts), {}).setdefault(name, [])
        if removed and who.id in users:
            users.remove(who.id)
        elif not removed and who.id not in users:
            users.append(who.id)
        target = self._find(channel, ts)
        return {"type": "reaction_removed" if removed else "reaction_added", "user": who.id,
                "reaction": name, "item_user": target.get("user") if target else None,
                "item": {"type": "message", "channel": channel, "ts": ts},
                "event_ts": self.next_ts()}

    def mention(self, user: SlackUser | str, text: str, channel: str) -> dict[str, Any]:
        """An ``app_mention`` event (the bot's ``<@UBOT0001>`` is put in front when missing)."""
        if f"<@{BOT_USER}>" not in text:
            text = f"<@{BOT_USER}> {text}"
        event = self.message(user, text, channel)
        del event["channel_type"]
        return {**event, "type": "app_mention"}

    def user_change(self, user: SlackUser) -> dict[str, Any]:
        """A ``user_change`` event carrying ``user``'s new profile (``users.info`` follows)."""
        self.users[user.id] = user
        return {"type": "user_change", "user": user.as_dict(), "cache_ts": int(time.time()),
                "event_ts": self.next_ts()}

    def block_action(self, user: SlackUser | str, message: dict[str, Any], action_id: str,
                     value: str, channel: str) -> dict[str, Any]:
        """The ``block_actions`` payload of ``user`` pressing a button on a bot message.

        ``message`` is a stored message or a recorded ``chat.postMessage`` call; the payload
        carries the message as it now stands (after any ``chat.update``).
        """
        ts = message.get("ts") or message["result"]["ts"]
        shown = self.message_at(channel, ts) or message
        return block_actions(self._user(user), shown, self._channel(channel), action_id, value,
                             f"{self.url}respond/{new_id('R')}")

    # -- history --------------------------------------------------------------------------------
    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.history.get(channel, []) if m["ts"] == ts), None)

    def _store(self, channel: str, message: dict[str, Any]) -> None:
        self.history.setdefault(channel, []).append(message)
        parent_ts = message.get("thread_ts")
        parent = self._find(channel, parent_ts) if parent_ts else None
        if parent is not None and parent is not message:
            parent["thread_ts"] = parent["ts"]
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["latest_reply"] = message["ts"]

    def _remove(self, channel: str, ts: str) -> dict[str, Any]:
        message = self._find(channel, ts)
        if message is None:
            raise SlackError("message_not_found")
        self.history[channel].remove(message)
        return message

    def _shown(self, channel: str, message: dict[str, Any], metadata: bool) -> dict[str, Any]:
        shown = {k: v for k, v in message.items() if metadata or k != "metadata"}
        reactions = self.reactions(channel, message["ts"])
        if reactions:
            shown["reactions"] = [{"name": name, "users": users, "count": len(users)}
                                  for name, users in reactions.items()]
        return shown

    def _page(self, channel: str, messages: list[dict[str, Any]], params: dict[str, Any]
              ) -> dict[str, Any]:
        inclusive = flag(params.get("inclusive"))
        oldest = float(params.get("oldest") or 0)
        latest = float(params.get("latest") or "inf")
        limit = int(params.get("limit") or 100)

        def within(ts: float) -> bool:
            if inclusive:
                return oldest <= ts <= latest
            return oldest < ts < latest

        chosen = [m for m in messages if within(float(m["ts"]))]
        metadata = flag(params.get("include_all_metadata"))
        return {"messages": [self._shown(channel, m, metadata) for m in chosen[:limit]],
                "has_more": len(chosen) > limit}
