from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshhub.config import init_home, load_config
from meshhub.hub import Hub
from meshhub.plugins import build_plugin_host
from meshhub.server import serve

from .helpers import (
    HOST,
    HubProcess,
    Identity,
    InProcessHub,
    base_env,
    free_port,
    make_identity,
    owner_home,
)


@pytest.fixture(scope="session")
def _socket_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sockets")
    path.chmod(0o700)
    return path


@pytest.fixture(autouse=True)
def _no_meshhub_environment(monkeypatch: pytest.MonkeyPatch, _socket_dir: Path) -> None:
    """A developer's own MESHHUB_* settings (a real bot token, say) never reach a test, and
    the hubs of the tests keep their local sockets in a directory of the test run."""
    for name in list(os.environ):
        if name.startswith("MESHHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CLAUDE_PROJECT_DIR", raising=False)  # a run inside Claude Code
    monkeypatch.setenv("MESHHUB_SOCKET_DIR", str(_socket_dir))


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[object]:
    """Start real hub processes: ``hub_factory(**env)``; all are stopped after the test."""
    started: list[HubProcess] = []

    def make(name: str = "hub", port: int | None = None, **env: str) -> HubProcess:
        home = owner_home(tmp_path, name)
        hub = HubProcess(home=home, port=port or free_port(), env=base_env(home, **env))
        started.append(hub)
        return hub.start()

    yield make
    for hub in started:
        hub.stop()


@pytest.fixture
def hub(hub_factory) -> HubProcess:  # type: ignore[no-untyped-def]
    return hub_factory()  # type: ignore[no-any-return]


@pytest.fixture
async def inproc(tmp_path: Path) -> AsyncIterator[Any]:
    """In-process hubs served on 127.0.0.1: ``await inproc(("name", plugin), ..., setting=v)``
    registers test plugins on a fresh plugin manager; all are stopped after the test."""
    started: list[InProcessHub] = []

    async def make(*plugins: tuple[str, object], **settings: Any) -> InProcessHub:
        home = tmp_path / "hub"
        init_home(home, "owner")
        cfg = load_config(home)
        for name, value in settings.items():
            setattr(cfg, name, value)
        host = build_plugin_host(cfg.disabled_plugins)  # a fresh manager for this test
        for name, plugin in plugins:
            host.register(plugin, name, "0.0", "test")
        hub = Hub(cfg, plugins=host)
        runner, port = await serve(hub, HOST, 0)
        started.append(InProcessHub(hub, runner, port))
        return started[-1]

    yield make
    for item in started:
        await item.stop()


@pytest.fixture
def people(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(*names: str) -> list[Identity]:
        return [make_identity(tmp_path / "people", n) for n in names]

    return make


# the Telegram, Slack and email fixtures (a fake platform API, a hub wired to it) live beside
# the fakes
from .email_support import email_hub, relay  # noqa: E402, F401
from .slack_support import slack, slack_hub  # noqa: E402, F401
from .telegram_support import telegram, tg_hub  # noqa: E402, F401
