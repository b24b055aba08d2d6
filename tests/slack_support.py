"""Shared set-up of the Slack tests: an in-process hub (all plugins loaded, the Slack connector
pointed at :class:`tests.fakes.slack_api.FakeSlack`) served on 127.0.0.1, in Events API or
Socket Mode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshhub.client import MeshClient
from meshhub.config import load_config
from meshhub.hub import Hub
from meshhub.server import serve

from .fakes.slack_api import FakeSlack, SlackUser
from .helpers import HOST, ConnectorHub, Identity, free_port, owner_home


@dataclass
class SlackHub(ConnectorHub):
    slack: FakeSlack
    connector_name = "slack"

    async def pair(self, user: SlackUser) -> str:
        """Pair ``user`` the way a person does: the owner makes a code, the user sends it with
        the slash command; returns the answer Slack showed them."""
        async with self.owner.client(self.url, receive=False) as owner:
            code = (await owner.call("pair_create", connector="slack", new_person=True))["code"]
        dm = self.slack.open_dm([user.id])["id"]
        status, body = await self.slack.send_command(user, f"pair {code}", dm)
        assert status == 200 and "Paired" in body, body
        return body

    async def link(self, user: SlackUser, channel: str, conversation: str) -> str:
        """``user``, a member of ``channel``, links it with the slash command."""
        self.slack.join(channel, user)
        status, body = await self.slack.send_command(user, f"link {conversation}", channel)
        assert status == 200 and "Linked" in body, body
        return body

    @contextlib.asynccontextmanager
    async def in_general(self, who: Identity) -> AsyncIterator[MeshClient]:
        """``who``'s client on this hub, a member of #general (where the tests link Slack)."""
        async with who.client(self.url) as client:
            await client.call("conversation_join", name="#general")
            yield client

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def slack_hub(tmp_path: Path, slack: FakeSlack) -> AsyncIterator[Any]:
    started: list[SlackHub] = []

    async def make(name: str = "hub", mode: str = "events",
                   slack_settings: dict[str, Any] | None = None,
                   raw: dict[str, Any] | None = None, **settings: Any) -> SlackHub:
        home = owner_home(tmp_path, name)
        cfg = load_config(home)
        cfg.raw.update(raw or {})
        cfg.raw["slack"] = {**slack.settings(mode), **(slack_settings or {})}
        for key, value in settings.items():
            setattr(cfg, key, value)
        hub = Hub(cfg)
        runner, port = await serve(hub, HOST, free_port())
        item = SlackHub(hub, runner, port, Identity(home, "owner"), slack)
        started.append(item)
        slack.mode = mode
        slack.events_url = f"{item.url}/slack/events"
        await asyncio.wait_for(item.connector.ready.wait(), 10)
        if mode == "socket":
            await slack.wait_connected()
        return item

    yield make
    for item in started:
        await item.runner.cleanup()
