"""Shared set-up of the Telegram tests: an in-process hub (all plugins loaded, the Telegram
connector pointed at :class:`tests.fakes.telegram_api.FakeTelegram`) served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshhub.config import init_home, load_config
from meshhub.hub import Hub
from meshhub.server import serve

from .fakes.telegram_api import FakeTelegram, TgUser
from .helpers import HOST, ConnectorHub, Identity, free_port


@dataclass
class TgHub(ConnectorHub):
    tg: FakeTelegram
    connector_name = "telegram"

    async def pair(self, user: TgUser, **options: Any) -> dict[str, Any]:
        """Pair ``user`` the way a person does: the owner makes a code, the user sends it.
        ``user`` is a new person unless ``options`` (for ``pair_create``) say otherwise:
        ``new_person=False`` links them to the owner."""
        async with self.owner.client(self.url, receive=False) as owner:
            code = (await owner.call("pair_create", connector="telegram",
                                     **{"new_person": True, **options}))["code"]
        await self.tg.send_text(user, f"/pair {code}")
        reply = await self.tg.wait_for(
            "sendMessage", lambda c: c["chat_id"] == user.id and "Paired" in c["text"])
        return reply


def paired_name(reply: dict[str, Any]) -> str:
    """The peer name a "Paired" reply gives (``you are `NAME``` or ``linked to ..., as
    `NAME```)."""
    found = re.search(r"<code>([^<]+)</code>", reply["text"])
    assert found, reply["text"]
    return found.group(1)


async def state_of(client: Any, message_id: str) -> str:
    return str((await client.message_status(message_id))["recipients"][0]["state"])


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        yield tg


@pytest.fixture
async def tg_hub(tmp_path: Path, telegram: FakeTelegram) -> AsyncIterator[Any]:
    started: list[TgHub] = []

    async def make(name: str = "hub", telegram_settings: dict[str, Any] | None = None,
                   wait_ready: bool = True, webhook: bool = False, **settings: Any) -> TgHub:
        home = tmp_path / name
        init_home(home, "owner")
        cfg = load_config(home)
        port = free_port()
        cfg.raw["telegram"] = {**telegram.settings(), **(telegram_settings or {})}
        if webhook:
            cfg.raw["telegram"].update(
                mode="webhook", webhook_url=f"http://{HOST}:{port}/telegram/webhook")
        for key, value in settings.items():
            setattr(cfg, key, value)
        hub = Hub(cfg)
        runner, port = await serve(hub, HOST, port)
        item = TgHub(hub, runner, port, Identity(home, "owner"), telegram)
        started.append(item)
        if wait_ready:
            await asyncio.wait_for(item.connector.ready.wait(), 10)
        return item

    yield make
    for item in started:
        await item.runner.cleanup()
