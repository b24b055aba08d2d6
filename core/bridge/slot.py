"""What a chat connector registers with the hub (``meshhub_register_connectors``): one object
per plugin that starts a running connector for each hub where the connector is configured, and
finds it again for the plugin's routes and deliveries.

Importing a connector's SDK is left to ``make``, called only when the connector is configured,
so a hub (and the CLI) without a token never loads python-telegram-bot or slack-bolt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from aiohttp import web

    from meshhub.hub import Hub
    from meshhub.models import Message, Peer

log = logging.getLogger(__name__)


class Running(Protocol):
    """A started connector: its state word, and how to start and stop it."""

    state: str

    async def start(self, hub: Hub) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(self, hub: Hub, peer: Peer, message: Message) -> bool: ...


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

    def how_to_pair(self, hub: Hub, code: str) -> str:
        """Where a person sends ``code``: the running connector's own words when it has them
        (``pair_how``, which may name what only it knows, such as a mail domain), else the
        slot's."""
        how = getattr(self.for_hub(hub), "pair_how", None) or self.pair_how
        return str(how).format(code=code, name=self.name)

    async def deliver(self, hub: Hub, peer: Peer, message: Message) -> bool | None:
        """The body of the plugin's ``meshhub_deliver``: ``None`` for another connector's
        peer, ``False`` while this one is not running (the lease retries it)."""
        if peer.connector != self.name:
            return None
        connector = self.for_hub(hub)
        if connector is None:
            return False
        return await connector.deliver(hub, peer, message)

    def route(self, handle: Callable[[C, web.Request], Awaitable[web.StreamResponse]]
              ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """An aiohttp handler that passes the request to this hub's running connector
        (``handle(connector, request)``), or answers 404 when none runs."""

        async def handler(request: web.Request) -> web.StreamResponse:
            from aiohttp import web

            from meshhub.server import HUB_KEY

            connector = self.for_hub(request.app[HUB_KEY])
            if connector is None:
                raise web.HTTPNotFound(text=f"the {self.name} connector is not running here")
            return await handle(connector, request)

        return handler


class Lifecycle:
    """The state a connector keeps and reports to the hub (what ``hub doctor`` and the
    ``connectors`` action show): ``idle``, ``starting``, ``running``, ``failed`` or ``stopped``,
    with the words of the last failure. A connector class sets ``name``."""

    name = ""

    def __init__(self) -> None:
        self.state = "idle"
        self.error: str | None = None
        self.hub: Hub | None = None

    def _enter(self, state: str, detail: str = "") -> None:
        detail = self._scrub(detail)
        self.state = state
        if state == "failed":
            self.error = detail
        if self.hub is not None:
            self.hub.report_connector(self.name, self._shown(state), detail)

    def _shown(self, state: str) -> str:
        """The state word the hub gets for ``state`` (a connector's own words map here)."""
        return state

    def _scrub(self, detail: str) -> str:
        """``detail`` without any secret it may quote (a token in a URL)."""
        return detail

    async def _watch(self, run: Callable[[], Awaitable[None]], doing: str) -> None:
        """Run the connector's main task; a crash (a bug, a broken store) puts it in ``failed``
        saying what stopped, ``doing``, instead of going quiet."""
        try:
            await run()
        except Exception as exc:
            self._enter("failed", f"{doing}: {type(exc).__name__}: {exc}")
            logging.getLogger(type(self).__module__).exception("%s: %s", self.name, self.error)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel a connector's background tasks and wait until each has ended (whatever it
    raised), so a stopped connector leaves nothing running; empties ``tasks``."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()
