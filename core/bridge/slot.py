"""What a chat connector registers with the hub (``meshhub_register_connectors``): one object
per plugin that starts a running connector for each hub where the connector is configured, and
finds it again for the plugin's routes and deliveries.

Importing a connector's SDK is left to ``make``, called only when the connector is configured,
so a hub (and the CLI) without a token never loads python-telegram-bot or slack-bolt.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from meshhub.hub import Hub

log = logging.getLogger(__name__)


class Running(Protocol):
    """A started connector: its state word, and how to start and stop it."""

    state: str

    async def start(self, hub: Hub) -> None: ...

    async def stop(self) -> None: ...


C = TypeVar("C", bound=Running)


class ConnectorSlot(Generic[C]):
    """``idle_reason(hub)`` says why the connector stays idle on ``hub`` (no token), or
    ``None`` when it is configured; it may raise a settings error, which fails the start with
    its message. ``make()`` builds the connector (importing its SDK). ``pair_how`` tells a
    person where to send a pairing code (``{code}`` and ``{name}`` are filled in)."""

    def __init__(self, name: str, idle_reason: Callable[[Hub], str | None],
                 make: Callable[[], C], *, sdk: str,
                 pair_how: str = "send /pair {code} to the {name} bot") -> None:
        self.name = name
        self.pair_how = pair_how  # how a person redeems a pairing code there
        self.idle_reason = idle_reason
        self.make = make
        self.sdk = sdk
        self.running: weakref.WeakKeyDictionary[Hub, C] = weakref.WeakKeyDictionary()
        self.last: C | None = None

    @property
    def state(self) -> str:
        return self.last.state if self.last is not None else "idle"

    async def start(self, hub: Hub) -> None:
        self.last = None
        reason = self.idle_reason(hub)
        if reason is not None:
            log.info("%s: %s; the connector is idle", self.name, reason)
            hub.report_connector(self.name, "idle", reason)
            return
        try:
            connector = self.make()
        except ImportError as exc:
            raise RuntimeError(f"{self.sdk} is not installed ({exc}); reinstall meshhub "
                               "(pip install meshhub), which depends on it") from None
        await connector.start(hub)
        self.running[hub] = connector
        self.last = connector

    async def stop(self) -> None:
        for connector in list(self.running.values()):
            await connector.stop()
        self.running = weakref.WeakKeyDictionary()

    def for_hub(self, hub: Hub) -> C | None:
        return self.running.get(hub)
