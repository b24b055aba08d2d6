"""meshhub's Slack connector (slack-bolt and slack-sdk), registered through the ``meshhub``
entry-point group like any third-party plugin.

People in the workspace become human peers (``slack:<team>/<user>``) once paired (``hub pair
slack``, then ``/hub pair CODE``) or allow-listed; channels can be linked to conversations
(``/hub link #conv``). The chat logic is the core's (:mod:`meshhub.bridge`); this package only
translates (:mod:`.adapter`) and talks to Slack (:mod:`.connector`). See docs/slack.md.

Importing this package does not import slack-bolt: without a bot token the connector stays idle
and the library is never loaded (CLI start-up time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshhub import hookimpl
from meshhub.bridge.slot import ConnectorSlot

from .settings import IDLE_REASON, PATH_PREFIX, SlackSettings
from .sqlite_upgrade import migrations
from .state import COLLECTIONS

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

    from meshhub.hub import Hub
    from meshhub.models import Message, Peer
    from meshhub.records import Collection

    from .connector import SlackConnector

NAME = "slack"


def _idle_reason(hub: Hub) -> str | None:
    return None if SlackSettings.load(hub.config).enabled else IDLE_REASON


def _make() -> SlackConnector:
    from .connector import SlackConnector

    return SlackConnector()


CONNECTOR: ConnectorSlot[SlackConnector] = ConnectorSlot(
    NAME, _idle_reason, _make, sdk="slack-bolt",
    pair_how="type /hub pair {code} in Slack (in a DM with the app, or anywhere)")


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
    # the exact paths come from the config, known only at start: serve the prefix
    register("POST", PATH_PREFIX + "{path:.*}", CONNECTOR.route(
        lambda connector, request: connector.handle_http(request)))


@hookimpl
async def meshhub_deliver(hub: Hub, peer: Peer, message: Message) -> bool | None:
    return await CONNECTOR.deliver(hub, peer, message)


@hookimpl
async def meshhub_reaction_changed(hub: Hub, message: Message, peer: Peer, emoji: str,
                                   added: bool, by: list[str]) -> None:
    connector = CONNECTOR.for_hub(hub)
    if connector is not None:
        await connector.mirror_reaction(message, peer, emoji, added, by)


@hookimpl
def meshhub_card_settled(hub: Hub, message: Message, label: str) -> None:
    connector = CONNECTOR.for_hub(hub)
    if connector is not None:
        connector.card_settled(label, message)


@hookimpl
def meshhub_describe_peer(hub: Hub, peer: Peer) -> dict[str, Any] | None:
    if peer.connector != NAME:
        return None
    return {"slack": "channel" if peer.identity.startswith("slack:chat:") else "user"}
