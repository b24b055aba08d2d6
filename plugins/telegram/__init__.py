"""meshhub's Telegram connector (python-telegram-bot), registered through the ``meshhub``
entry-point group like any third-party plugin.

People on Telegram become human peers once paired (``hub pair telegram``, then ``/pair CODE`` to
the bot); groups can be linked to conversations. The chat logic is the core's
(:mod:`meshhub.bridge`); this package only translates (:mod:`.adapter`) and talks to the Bot API
(:mod:`.connector`). See docs/telegram.md.

Importing this package does not import python-telegram-bot: without a token the connector stays
idle and the library is never loaded (CLI start-up time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshhub import hookimpl
from meshhub.bridge.slot import ConnectorSlot

from .settings import IDLE_REASON, TelegramSettings
from .sqlite_upgrade import migrations
from .state import COLLECTIONS

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

    from meshhub.hub import Hub
    from meshhub.models import Message, Peer
    from meshhub.records import Collection

    from .connector import TelegramConnector

NAME = "telegram"


def _idle_reason(hub: Hub) -> str | None:
    return None if TelegramSettings.load(hub.config).enabled else IDLE_REASON


def _make() -> TelegramConnector:
    from .connector import TelegramConnector

    return TelegramConnector()


CONNECTOR: ConnectorSlot[TelegramConnector] = ConnectorSlot(
    NAME, _idle_reason, _make, sdk="python-telegram-bot")


@hookimpl
def meshhub_register_connectors(register: Callable[[str, Any], None]) -> None:
    register(NAME, CONNECTOR)


@hookimpl
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    for collection in COLLECTIONS:
        register(collection)


@hookimpl
def meshhub_register_migrations(register: Callable[[Migrations], None]) -> None:
    register(migrations)


@hookimpl
def meshhub_register_routes(register: Callable[..., None]) -> None:
    # the webhook's exact path comes from the config, known only at start: serve the prefix
    register("POST", "/telegram/{path:.*}", CONNECTOR.route(
        lambda connector, request: connector.webhook(request)))


@hookimpl
async def meshhub_deliver(hub: Hub, peer: Peer, message: Message) -> bool | None:
    return await CONNECTOR.deliver(hub, peer, message)


@hookimpl
def meshhub_card_settled(hub: Hub, message: Message, label: str) -> None:
    connector = CONNECTOR.for_hub(hub)
    if connector is not None:
        connector.card_settled(label, message)


@hookimpl
def meshhub_describe_peer(hub: Hub, peer: Peer) -> dict[str, Any] | None:
    if peer.connector != NAME:
        return None
    return {"telegram": "group" if peer.identity.startswith("telegram:chat:") else "user"}
