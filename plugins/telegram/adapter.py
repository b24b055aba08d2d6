"""Pure translation between Telegram and the core: an update to a
:class:`meshhub.bridge.chat.ChatEvent`, a mesh message to the HTML (and buttons) Telegram gets.
No I/O here; the connector does the calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshhub.bridge.chat import ChatEvent
from meshhub.bridge.markdown import escape, markdown_to_html, split_html
from meshhub.sanitize import for_terminal
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

if TYPE_CHECKING:
    from telegram import Message as TgMessage
    from telegram import User

CONNECTOR = "telegram"
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024


@dataclass
class FileRef:
    file_id: str
    name: str
    size: int | None
    mime: str | None


def display_name(user: User) -> str:
    return user.full_name or user.username or f"tg{user.id}"


def chat_of(identity: str) -> str | None:
    """The chat to post to for a peer identity: ``telegram:42`` -> ``42`` (the private chat),
    ``telegram:chat:-100123`` -> ``-100123`` (a linked group)."""
    prefix = CONNECTOR + ":"
    if not identity.startswith(prefix):
        return None
    rest = identity[len(prefix):]
    return rest[len("chat:"):] if rest.startswith("chat:") else rest


def is_group_identity(identity: str) -> bool:
    return identity.startswith(f"{CONNECTOR}:chat:")


def message_key(message: TgMessage, edited: bool) -> str:
    """Unique per message and per edit: the idempotency key of what it becomes on the mesh."""
    key = f"{message.chat.id}:{message.message_id}"
    if edited and message.edit_date is not None:
        key += f":e{int(message.edit_date.timestamp())}"
    return key


def event_from_message(message: TgMessage, *, edited: bool = False) -> ChatEvent | None:
    """A chat message (private or group) as a :class:`ChatEvent`; ``None`` for what the mesh
    does not take (service messages, posts without a person behind them)."""
    user = message.from_user
    if user is None or user.is_bot:
        return None
    text = message.text or message.caption or ""
    return ChatEvent(
        connector=CONNECTOR,
        user_id=str(user.id),
        user_name=display_name(user),
        chat_id=str(message.chat.id),
        text=text,
        is_group=message.chat.type in ("group", "supergroup"),
        chat_title=message.chat.title or "",
        message_key=message_key(message, edited),
        edited=edited,
    )


def file_of(message: TgMessage) -> FileRef | None:
    """The photo (largest size) or document a message carries."""
    if message.document is not None:
        doc = message.document
        return FileRef(doc.file_id, doc.file_name or f"document_{doc.file_unique_id}",
                       doc.file_size, doc.mime_type)
    if message.photo:
        photo = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return FileRef(photo.file_id, f"photo_{photo.file_unique_id}.jpg", photo.file_size,
                       "image/jpeg")
    return None


def render(header: str, body: str, *, footer: str | None = None) -> list[str]:
    """A mesh message as HTML chunks within Telegram's 4096-character limit; the header and
    footer lines, like the body, with control and bidi characters made visible."""
    html = f"<b>{escape(for_terminal(header, one_line=True))}</b>"
    if body.strip():
        html += "\n" + markdown_to_html(body)
    if footer:
        html += f"\n<i>{escape(for_terminal(footer, one_line=True))}</i>"
    return split_html(html, TEXT_LIMIT)


def keyboard(buttons: list[tuple[str, str]]) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=token)
                                  for label, token in buttons]])
