"""meshhub's email gateway (aiosmtpd in, aiosmtplib out), registered through the ``meshhub``
entry-point group like any third-party plugin.

People write to ``name@domain`` (a peer), ``conversation@domain`` and ``group+name@domain`` from
a paired or allow-listed address (``email:<address>``, a human peer); what the mesh sends them
arrives through the configured relay, threaded, with a reply address that brings their answer
back to the same thread. See docs/email.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshhub import hookimpl
from meshhub.bridge.slot import ConnectorSlot

from .settings import IDLE_REASON, EmailSettings
from .sqlite_upgrade import migrations
from .state import COLLECTIONS

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

    from meshhub.hub import Hub
    from meshhub.models import Message, Peer
    from meshhub.records import Collection

    from .connector import EmailConnector

NAME = "email"


def _idle_reason(hub: Hub) -> str | None:
    return None if EmailSettings.load(hub.config).enabled else IDLE_REASON


def _make() -> EmailConnector:
    from .connector import EmailConnector

    return EmailConnector()


CONNECTOR: ConnectorSlot[EmailConnector] = ConnectorSlot(
    NAME, _idle_reason, _make, sdk="aiosmtpd",
    pair_how="mail the code {code} (in the subject) to pair@ the hub's mail domain, then "
             "answer the confirmation mail")


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
async def meshhub_deliver(hub: Hub, peer: Peer, message: Message) -> bool | None:
    return await CONNECTOR.deliver(hub, peer, message)


@hookimpl
def meshhub_describe_peer(hub: Hub, peer: Peer) -> dict[str, Any] | None:
    if peer.connector != NAME:
        return None
    return {"email": "person"}
