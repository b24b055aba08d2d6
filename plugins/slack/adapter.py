"""Pure translation between Slack and the core: a Slack event to a
:class:`meshhub.bridge.chat.ChatEvent`, Slack's mrkdwn to the mesh's Markdown, a mesh message to
the text and Block Kit blocks Slack gets, emoji names both ways. No I/O here; the connector does
the calls.

Identities: a person is ``slack:<team id>/<user id>`` (``ChatEvent.user_id`` is ``T…/U…``); a
linked channel is ``slack:chat:<channel id>``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import emoji as emoji_names

from meshhub.bridge.chat import ChatEvent
from meshhub.render import to_mrkdwn
from meshhub.sanitize import for_terminal

CONNECTOR = "slack"
TEXT_LIMIT = 3000  # a section block's text; longer messages are posted in parts
BUTTON_ACTION = "meshhub_button"
METADATA_TYPE = "meshhub_message"
SKIN_TONE = re.compile(r"::skin-tone-\d$")
_SPECIAL = re.compile(r"<([^<>\n]+)>")
_CODE = re.compile(r"(```.*?```|`[^`\n]+`)", re.S)
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")
_BROADCASTS = {"here": "@here", "channel": "@channel", "everyone": "@everyone"}
SLASH_PREFIX = "/hub "  # how a Slack person types a bridge command


def person(team: str, user: str) -> str:
    """The external id of a Slack person (the identity without ``slack:``)."""
    return f"{team}/{user}"


def chat_identity(channel: str) -> str:
    return f"{CONNECTOR}:chat:{channel}"


def is_channel_identity(identity: str) -> bool:
    return identity.startswith(f"{CONNECTOR}:chat:")


def split_identity(identity: str) -> tuple[str, str] | None:
    """``slack:T1/U2`` -> (``T1``, ``U2``); ``None`` for anything else."""
    prefix = CONNECTOR + ":"
    if not identity.startswith(prefix) or is_channel_identity(identity):
        return None
    team, sep, user = identity[len(prefix):].partition("/")
    return (team, user) if sep and team and user else None


def channel_of(identity: str) -> str | None:
    return identity.split(":", 2)[2] if is_channel_identity(identity) else None


def from_a_bot(event: dict[str, Any], bot_user: str | None) -> bool:
    """Written by a bot, an app, another bridge or this app itself: never relayed."""
    return bool(event.get("bot_id") or event.get("subtype") == "bot_message"
                or event.get("bot_profile")
                or (bot_user is not None and event.get("user") == bot_user))


def team_of(event: dict[str, Any], body: dict[str, Any]) -> str:
    return str(event.get("user_team") or event.get("team") or body.get("team_id") or "")


def display_name(user: dict[str, Any]) -> str:
    """A person's name as Slack shows it: the profile's display name, else the real name."""
    profile = user.get("profile") or {}
    return str(profile.get("display_name") or profile.get("real_name") or user.get("real_name")
               or user.get("name") or user.get("id") or "slack-user")


@dataclass(frozen=True)
class Person:
    """What the bridge needs of a Slack account (``users.info``): its home team (for Slack
    Connect people, not the workspace the event came through), name, and what kind it is."""

    team: str
    user: str
    name: str
    bot: bool = False  # a bot user or an app: never relayed, never let in
    guest: bool = False  # a restricted or single-channel guest
    deleted: bool = False

    @property
    def external(self) -> str:
        return person(self.team, self.user)


def person_of(user: dict[str, Any], team: str) -> Person:
    """A ``users.info`` (or ``user_change``) user object as a :class:`Person`."""
    return Person(
        team=str(user.get("team_id") or team), user=str(user.get("id") or ""),
        name=display_name(user), bot=bool(user.get("is_bot") or user.get("is_app_user")),
        guest=bool(user.get("is_restricted") or user.get("is_ultra_restricted")),
        deleted=bool(user.get("deleted")))


# -- mrkdwn -> Markdown ---------------------------------------------------------------------------
def mrkdwn_to_markdown(text: str, user_name: Callable[[str], str],
                       channel_name: Callable[[str], str]) -> str:
    """Slack's mrkdwn (as people type it) as the mesh's Markdown.

    ``<@U1>`` becomes ``@name``, ``<#C1|general>`` ``#general``, ``<url|label>`` a Markdown link,
    ``*bold*`` ``**bold**``, ``_it_`` ``*it*``, ``~gone~`` ``~~gone~~``; code spans and blocks are
    kept as they are; Slack's three escapes (``&lt; &gt; &amp;``) are undone last.
    """
    out = []
    for index, piece in enumerate(_CODE.split(text)):
        if index % 2:
            out.append(html.unescape(piece))
            continue
        piece = _SPECIAL.sub(lambda m: _special(m.group(1), user_name, channel_name), piece)
        piece = _BOLD.sub(r"**\1**", piece)
        piece = _ITALIC.sub(r"*\1*", piece)
        piece = _STRIKE.sub(r"~~\1~~", piece)
        out.append(html.unescape(piece))
    return "".join(out)


def _special(inner: str, user_name: Callable[[str], str],
             channel_name: Callable[[str], str]) -> str:
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return "@" + (label or user_name(target[1:]))
    if target.startswith("#"):
        return "#" + (label or channel_name(target[1:]))
    if target.startswith("!"):
        word = target[1:].split("^", 1)[0]
        return _BROADCASTS.get(word, "@" + (label or word))
    if label:
        return f"[{label}]({target})"
    return target


def strip_mention(text: str, bot_user: str | None) -> str:
    """The text of an ``@app`` mention without the mention itself."""
    if bot_user is None:
        return text
    return re.sub(rf"<@{re.escape(bot_user)}(\|[^>]*)?>:?\s*", "", text).strip()


# -- events ---------------------------------------------------------------------------------------
def message_key(channel: str, ts: str, edited_ts: str | None = None) -> str:
    """Unique per message and per edit: the idempotency key of what it becomes on the mesh."""
    return f"{channel}:{ts}" + (f":e{edited_ts}" if edited_ts else "")


def chat_event(event: dict[str, Any], *, team: str, user_name: str, text: str,
               edited: bool = False) -> ChatEvent:
    channel = str(event.get("channel", ""))
    edited_ts = (event.get("edited") or {}).get("ts") if edited else None
    return ChatEvent(
        connector=CONNECTOR,
        user_id=person(team, str(event.get("user", ""))),
        user_name=user_name,
        chat_id=channel,
        text=text,
        is_group=event.get("channel_type", "channel") != "im" and not channel.startswith("D"),
        message_key=message_key(channel, str(event.get("ts", "")), edited_ts),
        edited=edited,
        command_prefix=SLASH_PREFIX,
    )


def command_text(text: str) -> str:
    """What follows ``/hub`` as the chat handler reads it: ``pair CODE`` -> ``/pair CODE``;
    an address (``@ann hi``, ``#ops hi``) stays text to send; nothing is ``/help``."""
    text = text.strip()
    if not text:
        return "/help"
    if text[0] in "@#/":
        return text
    return "/" + text


# -- emoji ----------------------------------------------------------------------------------------
def emoji_from_slack(name: str) -> str:
    """A Slack reaction name as the mesh's emoji: 👍 for ``+1`` or ``thumbsup``; a custom emoji
    Unicode has no character for stays ``:name:``."""
    name = SKIN_TONE.sub("", name)
    as_text = f":{name}:"
    char = emoji_names.emojize(as_text, language="alias")
    return char if char != as_text else as_text


def emoji_to_slack(value: str) -> str | None:
    """The mesh's emoji as a Slack reaction name, or ``None`` when Slack has no name for it."""
    if value.startswith(":") and value.endswith(":") and len(value) > 2:
        return value[1:-1]
    name = emoji_names.demojize(value, language="alias")
    if name.startswith(":") and name.endswith(":") and name.count(":") == 2:
        return name[1:-1]
    return None


# -- mesh -> Slack --------------------------------------------------------------------------------
def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` characters, at a line, else a space."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut < limit // 2:
            cut = text.rfind(" ", 0, limit)
        if cut < limit // 2:
            cut = limit
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n ")
    parts.append(text)
    return parts


def render(body: str, *, context: str | None = None,
           buttons: list[tuple[str, str]] | None = None,
           footer: str | None = None) -> list[tuple[str, list[dict[str, Any]]]]:
    """A mesh message as Slack posts: (fallback text, blocks) per part. ``context`` is the
    small line over the first part (who, where), ``buttons`` go under the last, ``footer``
    replaces them once settled."""
    chunks = split_text(to_mrkdwn(body) if body.strip() else "")
    posts = []
    for index, chunk in enumerate(chunks):
        blocks: list[dict[str, Any]] = []
        if index == 0 and context:
            blocks.append(_context(context))
        if chunk:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
        last = index == len(chunks) - 1
        if last and buttons:
            blocks.append({"type": "actions", "block_id": "meshhub_buttons", "elements": [
                {"type": "button", "action_id": f"{BUTTON_ACTION}_{i}", "value": token,
                 "text": {"type": "plain_text", "text": label[:75]},
                 **({"style": "primary"} if i == 0 else {})}
                for i, (label, token) in enumerate(buttons)]})
        if last and footer:
            blocks.append(_context(footer))
        fallback = chunk or context or "(attachment)"
        posts.append((fallback, blocks))
    return posts


def _context(text: str) -> dict[str, Any]:
    """A small plain-text line (who and where, or how it was settled), control and bidi
    characters made visible."""
    line = for_terminal(text, one_line=True)
    return {"type": "context", "elements": [{"type": "plain_text", "text": line[:2000],
                                             "emoji": True}]}


def sender_style(name: str, kind: str, surface: str) -> dict[str, str]:
    """How a post shows who sent it on the mesh (needs ``chat:write.customize``): the sender's
    name and surface as the username, an icon by kind."""
    icon = {"agent": ":robot_face:", "service": ":gear:"}.get(kind, ":bust_in_silhouette:")
    return {"username": f"{name} ({surface})"[:80], "icon_emoji": icon}


def metadata(mesh_id: str, part: int) -> dict[str, Any]:
    """Attached to each post, so a post whose answer was lost can be found again."""
    return {"event_type": METADATA_TYPE, "event_payload": {"id": mesh_id, "part": part}}


def find_post(messages: list[dict[str, Any]], mesh_id: str, part: int) -> str | None:
    """The ts of the post of ``mesh_id``'s ``part`` among ``messages`` (a history page)."""
    for message in messages:
        meta = message.get("metadata") or {}
        payload = meta.get("event_payload") or {}
        if (meta.get("event_type") == METADATA_TYPE and payload.get("id") == mesh_id
                and payload.get("part") == part):
            return str(message.get("ts"))
    return None
