"""The connector's own data, in record collections: the key/value state (the update offset, the
webhook secret), the updates a webhook already handled (for a day), and which platform messages
carry which mesh message (for reply threading, settled approval cards, and not posting a part
twice after a retry). The tables from before the collections are moved by
:mod:`.sqlite_upgrade`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshhub.records import Collection, Conflict

if TYPE_CHECKING:
    from meshhub.records import Records

UPDATE_KEPT = 86400.0  # seconds a handled webhook update is remembered: Telegram keeps one a day

STATE = Collection("telegram_state")  # {"value": text}
UPDATES = Collection("telegram_updates")  # by update id, empty: it was handled
# by "<chat_id>:<tg_message_id>": chat_id, tg_message_id, mesh_id, part, outgoing
MESSAGES = Collection("telegram_messages", indexes=("mesh_id", "chat_id", "outgoing"))
COLLECTIONS = (STATE, UPDATES, MESSAGES)


def message_key(chat_id: str, tg_message_id: int) -> str:
    return f"{chat_id}:{tg_message_id}"


class TelegramState:
    """The connector's state. A mapping is written just after its post (or, for what people
    send, without waiting for it); a card settled or a reply made right then still finds it,
    as a read waits for the writes to its collection made before it."""

    def __init__(self, records: Records) -> None:
        self.records = records

    async def get(self, key: str) -> str | None:
        record = await self.records.get(STATE.name, key)
        return str(record.value["value"]) if record else None

    async def put(self, key: str, value: str) -> None:
        await self.records.put(STATE.name, key, {"value": value})

    async def offset(self) -> int | None:
        value = await self.get("update_offset")
        return int(value) if value is not None else None

    async def save_offset(self, offset: int) -> None:
        await self.put("update_offset", str(offset))

    async def claim_update(self, update_id: int) -> bool:
        """Record a webhook update as handled; ``False`` when it was handled before."""
        try:
            await self.records.create(UPDATES.name, str(update_id), {}, ttl=UPDATE_KEPT)
        except Conflict:
            return False
        return True

    async def forget_update(self, update_id: int) -> None:
        await self.records.delete(UPDATES.name, str(update_id))

    async def map_message(self, chat_id: str, tg_message_id: int, mesh_id: str, *,
                          part: int = 0, outgoing: bool) -> None:
        await self.records.put(MESSAGES.name, message_key(chat_id, tg_message_id), {
            "chat_id": chat_id, "tg_message_id": tg_message_id, "mesh_id": mesh_id,
            "part": part, "outgoing": outgoing})

    async def mesh_id(self, chat_id: str, tg_message_id: int) -> str | None:
        record = await self.records.get(MESSAGES.name, message_key(chat_id, tg_message_id))
        return str(record.value["mesh_id"]) if record else None

    async def sent_parts(self, mesh_id: str, chat_id: str) -> dict[int, int]:
        """Parts of ``mesh_id`` already posted to ``chat_id``: part -> platform message id."""
        rows = await self.records.all(MESSAGES.name, {"mesh_id": mesh_id, "chat_id": chat_id,
                                                      "outgoing": True})
        return {r.value["part"]: r.value["tg_message_id"] for r in rows}

    async def posts_of(self, mesh_id: str) -> dict[str, dict[int, int]]:
        """Every chat ``mesh_id`` was posted to: chat -> (part -> platform message id)."""
        rows = await self.records.all(MESSAGES.name, {"mesh_id": mesh_id, "outgoing": True})
        posts: dict[str, dict[int, int]] = {}
        for row in rows:
            posts.setdefault(row.value["chat_id"], {})[row.value["part"]] = \
                row.value["tg_message_id"]
        return posts
