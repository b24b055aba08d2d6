"""The hub object: one per running hub, holding the plugins, the store and the live state.

``Hub.send`` is the one entry every surface uses to send. It runs in two steps so a busy sender
can pipeline: :meth:`Hub.prepare_send` validates, routes and queues the write (in call order, so
per-sender order is kept), and the returned :class:`PendingSend` resolves once the write has
committed, after which the recipients get their pushes and the sender its ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from . import routing, views
from .actions import ActionRegistry
from .audit import AUDIT, AuditLog
from .config import Config, ConfigError, load_signing_key
from .connectors import ConnectorState, ConnectorStates
from .delivery import Dispatcher
from .directory import INVITES, MEMBERS, Directory
from .errors import InvalidRequest, MeshError, NotFound, TooLarge
from .fields import MAX_CLIENT_ID
from .ids import new_id
from .limits import Limits, account
from .local import default_name
from .models import PRIORITIES, SESSION_CONNECTORS, Message, Peer
from .plugins import PluginHost, build_plugin_host, short_error
from .presence import Presence
from .records import Collection, Records
from .store import Store

log = logging.getLogger(__name__)

WS_CONNECTORS = SESSION_CONNECTORS
SETTLE_SECONDS = 10.0  # at stop, the longest the sends in flight are waited for


@dataclass
class PendingSend:
    message: Message
    insert: asyncio.Future[tuple[str, bool]]
    leased: set[str]
    hub: Hub

    async def wait(self) -> dict[str, Any]:
        message_id, created = await self.insert
        if created:
            return self._accepted()
        return await self._resent(message_id)

    def when_done(self, callback: Callable[[dict[str, Any] | None, BaseException | None],
                                           None]) -> None:
        """Call ``callback(result, error)`` once the write settles, without a task per send
        (the WebSocket hot path)."""

        def settled(future: asyncio.Future[tuple[str, bool]]) -> None:
            if future.cancelled():
                callback(None, asyncio.CancelledError())
                return
            error = future.exception()
            if error is not None:
                callback(None, error)
                return
            message_id, created = future.result()
            if created:
                try:
                    result = self._accepted()
                except Exception as exc:
                    callback(None, exc)
                    return
                callback(result, None)
                return
            task = self.hub.spawn(self._resent(message_id))
            task.add_done_callback(
                lambda t: callback(None, t.exception()) if t.exception() else
                callback(t.result(), None)
            )

        self.insert.add_done_callback(settled)

    def _accepted(self) -> dict[str, Any]:
        message = self.message
        self.hub.dispatcher.push_accepted(message, self.leased)
        if self.hub.plugins.has_impls("meshhub_message_accepted"):
            self.hub.track(self.hub.spawn(self.hub.plugins.each(
                "meshhub_message_accepted", hub=self.hub, message=message
            )))
        return self._result(message, message.id, created=True,
                            queued={k for k in message.recipients if k not in self.leased})

    async def _resent(self, message_id: str) -> dict[str, Any]:
        """A resend: answer with the first send's facts."""
        message = await self.hub.store.get_message(message_id) or self.message
        queued = {d.recipient for d in await self.hub.store.deliveries_of(message_id)
                  if d.state == "queued"}
        return self._result(message, message_id, created=False, queued=queued)

    def _result(self, message: Message, message_id: str, *, created: bool,
                queued: set[str]) -> dict[str, Any]:
        names = self.hub.directory.peers
        return {
            "id": message_id,
            "duplicate": not created,
            "conversation": message.conversation,
            "recipients": [names[k].name for k in message.recipients if k in names],
            "queued": [names[k].name for k in message.recipients if k in names and k in queued],
        }


class Hub:
    def __init__(self, config: Config, plugins: PluginHost | None = None) -> None:
        self.config = config
        self.plugins = plugins or build_plugin_host(config.disabled_plugins)
        self.actions = ActionRegistry()
        self.connectors: dict[str, Any] = {}  # the started ones (a failed start drops it)
        self.connector_names: set[str] = set()  # every name registered, started or not
        self.connector_states = ConnectorStates()
        self.routes: list[tuple[str, str, Any]] = []
        self.store: Store = None  # type: ignore[assignment]  # set by start()
        self.records = Records(self)
        for collection in (MEMBERS, INVITES, AUDIT):  # the core's own, whatever is enabled
            self.records.declare(collection)
        self.audit = AuditLog(self.records, config.home / "audit.head")
        self.directory: Directory = None  # type: ignore[assignment]
        self.limits = Limits(config)
        self.presence = Presence(self)
        self.dispatcher = Dispatcher(self)
        self.started_at = time.time()
        self.owner_key: str | None = None
        self.extra_hosts: set[str] = set()  # Host names plugins serve under (a webhook's host)
        self._tasks: set[asyncio.Task[Any]] = set()
        # sends not yet committed, and the accepted hooks of those that were: awaited at stop
        self._sending: set[asyncio.Future[Any]] = set()
        self._collected = False

    # -- lifecycle -------------------------------------------------------------------------
    def collect_contributions(self) -> None:
        """Ask every plugin for its actions, connectors and routes (no I/O); once."""
        if self._collected:
            return
        self._collected = True
        self.plugins.collect(
            "meshhub_register_actions", "actions",
            lambda item, plugin: self.actions.add(item, plugin=plugin),
        )

        def add_connector(name: str, connector: Any, plugin: str) -> str:
            if name in self.connectors:
                raise ValueError(f"connector {name!r} is already registered")
            self.connectors[name] = connector
            self.connector_names.add(name)
            return name

        self.plugins.collect("meshhub_register_connectors", "connectors", add_connector)

        def add_route(method: str, path: str, handler: Any, plugin: str) -> str:
            self.routes.append((method.upper(), path, handler))
            return f"{method.upper()} {path}"

        self.plugins.collect("meshhub_register_routes", "routes", add_route)

    async def start(self) -> None:
        from .admission import check_settings

        check_settings(self.config)
        self.collect_contributions()
        migrations: list[Any] = []

        def add_migrations(migration_set: Any, plugin: str) -> str:
            migrations.append(migration_set)
            return str(migration_set.name)

        self.plugins.collect("meshhub_register_migrations", "migrations", add_migrations)

        def add_collection(collection: Collection, plugin: str) -> str:
            self.records.declare(collection)
            return collection.name

        self.plugins.collect("meshhub_register_collections", "collections", add_collection)
        store = await self.plugins.first("meshhub_provide_store", hub=self)
        if store is None:
            raise ConfigError(
                "no storage plugin is enabled, so the hub has nowhere to keep messages: take "
                "sqlite_store out of MESHHUB_DISABLE_PLUGINS and [plugins] disabled in "
                f"{self.config.path}, or install a plugin that provides a store")
        self.store = store
        await store.open(migrations, list(self.records.collections.values()))
        await self.records.start()
        await self.audit.open()
        self.directory = Directory(store, self.records)
        self.directory.on_created = lambda peer: self.presence.announce(peer, "joined")
        await self.directory.load()
        self.spawn(self.limits.storage.load(self, time.time()))
        with contextlib.suppress(FileNotFoundError):
            self.owner_key = load_signing_key(self.config.home).verify_key.encode().hex()
        if self.owner_key is not None:
            from .members import enroll_owner

            await enroll_owner(self, self.owner_key, self.config.name or default_name())
        self.presence.start()
        self.dispatcher.start()
        await self._start_plugins()
        self.spawn(self.dispatcher.resume_bridged())

    async def _start_plugins(self) -> None:
        for impl in self.plugins.implementations("meshhub_startup"):
            try:
                value = impl.function(hub=self)
                if inspect.isawaitable(value):
                    await value
            except Exception as exc:
                self.plugins.fail(impl.plugin_name, exc)
        for name, connector in list(self.connectors.items()):
            await self._start_connector(name, connector)

    async def _start_connector(self, name: str, connector: Any) -> None:
        """Start one connector; its state says how it went (see :mod:`meshhub.connectors`)."""
        start = getattr(connector, "start", None)
        if start is None:
            self.report_connector(name, "running")
            return
        began = self.connector_states.report(name, "starting")
        try:
            value = start(self)
            if inspect.isawaitable(value):
                await value
        except Exception as exc:
            self.report_connector(name, "failed", short_error(exc))
            owner = next(
                (r.name for r in self.plugins.records.values()
                 if name in r.registered.get("connectors", [])), name,
            )
            self.plugins.fail(owner, exc)
            self.connectors.pop(name, None)
            return
        if self.connector_states.get(name) is began:  # it said nothing itself
            self.report_connector(name, "running")

    async def stop(self) -> None:
        for name, connector in list(self.connectors.items()):
            stop = getattr(connector, "stop", None)
            if stop is not None:
                try:
                    value = stop()
                    if inspect.isawaitable(value):
                        await value
                except Exception:
                    log.exception("connector %s failed to stop", name)
            current = self.connector_states.get(name)
            if current is None or current.state != "failed":
                self.report_connector(name, "stopped")
        await self._settle_sends()
        await self.plugins.each("meshhub_shutdown", hub=self)
        await self.presence.stop()
        await self.dispatcher.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.records.stop()
        if self.store is not None:
            await self.store.close()

    async def _settle_sends(self) -> None:
        """Let the sends in flight commit and their ``meshhub_message_accepted`` hooks run
        before the plugins stop, so a plugin that records every message (the conversation
        logs) sees the last ones too. A store that does not answer is waited for at most
        :data:`SETTLE_SECONDS`."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while self._sending and time.monotonic() < deadline:
            # a send's waiter resumes (and starts its hooks) before this coroutine does
            await asyncio.wait(set(self._sending), timeout=deadline - time.monotonic())

    def track(self, future: asyncio.Future[Any]) -> None:
        """Count ``future`` among the sends :meth:`stop` lets finish."""
        self._sending.add(future)
        future.add_done_callback(self._sending.discard)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; its failure is logged, never lost silently."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # -- connectors ------------------------------------------------------------------------
    def report_connector(self, name: str, state: str, detail: str = "") -> ConnectorState:
        """Record what connector ``name`` is doing: ``starting``, ``running``, ``idle``,
        ``failed`` or ``stopped``, with a one-line ``detail`` for people (how it runs, why it is
        idle, the error). Connectors call this as their state changes; see
        :mod:`meshhub.connectors`. Never put a secret in ``detail``."""
        return self.connector_states.report(name, state, detail)

    # -- questions -------------------------------------------------------------------------
    def is_admin(self, peer: Peer) -> bool:
        """The owner's own sessions; not a chat account the owner linked (a phone answers and
        talks as the owner, it does not run the hub)."""
        return (self.owner_key is not None and peer.member_key == self.owner_key
                and peer.connector in SESSION_CONNECTORS)

    def is_bridged(self, peer: Peer) -> bool:
        """A peer whose connector delivers for it inside the hub (no WebSocket of its own)."""
        return peer.connector not in WS_CONNECTORS and peer.connector in self.connectors

    def connector_running(self, peer: Peer) -> bool:
        """Whether the connector of a bridged peer hands messages over now (not idle or
        failed: then they wait, queued, until it runs)."""
        state = self.connector_states.get(peer.connector)
        return state is not None and state.is_running

    def peer_view(self, peer: Peer, viewer: Peer | None = None) -> dict[str, Any]:
        """``peer`` in the one public peer shape (:mod:`meshhub.views`), as ``viewer`` sees it."""
        reach = ("live" if self.presence.is_receiving(peer.key)
                 else "connector" if self.is_bridged(peer) and self.connector_running(peer)
                 else "inbox")
        return views.peer_view(peer, online=self.presence.is_online(peer.key), reach=reach,
                               surfaces=self.presence.surfaces(peer.key),
                               you=viewer is not None and viewer.key == peer.key)

    def message_view(self, message: Message) -> dict[str, Any]:
        """``message`` in the one public message shape (:mod:`meshhub.views`)."""
        return views.message_view(message, self.directory.peers)

    # -- sending ---------------------------------------------------------------------------
    async def prepare_send(
        self,
        sender: Peer,
        to: str | list[str] | None,
        body: str,
        *,
        reply_to: str | None = None,
        priority: str = "next",
        mentions: list[str] | None = None,
        whisper: list[str] | None = None,
        client_id: str | None = None,
        kind: str = "text",
        data: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        message_id: str | None = None,
        mentions_from_body: bool = True,
    ) -> PendingSend:
        """Route and queue a message; ``message_id`` is an id the caller made with
        :func:`meshhub.ids.new_id`, to write its own rows naming the message in the same batch
        (an approval and its card). ``mentions_from_body=False``: an ``@name`` in ``body``
        mentions nobody and adds no recipient (a notice quoting peers' text goes to exactly
        ``to``)."""
        self.limits.sends.check(account(sender))
        if priority not in PRIORITIES:
            raise InvalidRequest(f"priority must be one of {', '.join(PRIORITIES)}")
        if not body.strip() and not attachments and data is None:
            raise InvalidRequest("the message is empty")
        try:
            size = len(body.encode())
        except UnicodeEncodeError:  # a lone surrogate, from a surface that let one through
            raise InvalidRequest("the message is not UTF-8 text (it holds a lone surrogate)",
                                 code="malformed") from None
        if size > self.config.max_body_bytes:
            raise TooLarge(
                f"the message is {size} bytes; this hub accepts at most "
                f"{self.config.max_body_bytes}"
            )
        if client_id is not None and not 0 < len(client_id) <= MAX_CLIENT_ID:
            raise InvalidRequest(f"client_id must be 1 to {MAX_CLIENT_ID} characters")
        root = None
        if reply_to is not None:
            root = await self.store.get_message(reply_to)
            if root is None or (
                root.sender != sender.key and sender.key not in root.recipients
            ):
                raise NotFound(f"no message {reply_to} that you can see")
            if root.reply_to is not None:
                raise InvalidRequest(
                    f"{reply_to} is itself a reply; threads are flat: reply to its root "
                    f"{root.reply_to}",
                    code="reply_to_reply",
                )
        try:
            route = await routing.resolve(
                self, sender, to, body=body, mentions=mentions, whisper=whisper, root=root,
                mentions_from_body=mentions_from_body,
            )
        except MeshError:
            # a resend of something already stored succeeds even if its target has gone
            earlier = (await self.store.find_by_client_id(sender.key, client_id)
                       if client_id else None)
            if earlier is None:
                raise
            done: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
            done.set_result((earlier.id, False))
            return PendingSend(message=earlier, insert=done, leased=set(), hub=self)
        self.limits.storage.check(account(sender), size)
        message = Message(
            id=message_id or new_id(),
            sender=sender.key,
            target=route.target,
            conversation=route.conversation,
            body=body,
            recipients=route.recipients,
            kind=kind,
            mentions=sorted(route.mentioned),
            whisper=route.whisper,
            reply_to=reply_to,
            priority=priority,
            attachments=attachments or [],
            data=data,
            client_id=client_id,
            created_at=time.time(),
        )
        leased = self.dispatcher.live_recipients(message)
        insert = asyncio.ensure_future(self.store.insert_message(  # queued now, in call order
            message, route.mentioned, leased, time.time() + self.config.lease_seconds
        ))
        self._count_stored(insert, account(sender), size)
        self.track(insert)
        return PendingSend(message=message, insert=insert, leased=leased, hub=self)

    def _count_stored(self, insert: asyncio.Future[tuple[str, bool]], key: str,
                      size: int) -> None:
        """Count ``size`` bytes against ``key``'s quota now, so sends in flight count too; give
        them back if the write stores nothing (it failed, or was a resend)."""
        self.limits.storage.add(key, size)

        def settled(future: asyncio.Future[tuple[str, bool]]) -> None:
            if future.cancelled() or future.exception() is not None or not future.result()[1]:
                self.limits.storage.add(key, -size)

        insert.add_done_callback(settled)

    async def send(self, sender: Peer, to: str | list[str] | None, body: str,
                   **options: Any) -> dict[str, Any]:
        pending = await self.prepare_send(sender, to, body, **options)
        return await pending.wait()



def installed_actions(config: Config, *, own_only: bool = False) -> list[dict[str, Any]]:
    """The actions this install's plugins serve, described as the ``actions`` action does, with
    no hub running (the plugins are loaded and asked; nothing is opened). ``own_only``: only
    those of meshhub's built-in plugins (what a fresh install serves)."""
    hub = Hub(config)
    hub.collect_contributions()
    described = hub.actions.describe()
    if own_only:
        own = {name for name, record in hub.plugins.records.items()
               if record.source == "built-in"}
        described = [a for a in described if a["plugin"] in own]
    return described
