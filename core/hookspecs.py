"""Hook specifications: the whole contract between the core and its plugins.

Every hook is called with keyword arguments only, and every name starts with ``meshhub_``.
An implementation may return a value or an awaitable; the core awaits awaitables. Contribution
hooks (``meshhub_register_*``) receive a ``register`` callback: the core records which plugin
registered what and refuses duplicate names, which is what ``hub plugins list`` shows.

The reference for each hook is its docstring; docs/hooks.md expands on each with examples (a
test checks that every hook has its section there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from meshhub import hookspec

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

    from .actions import Action
    from .hub import Hub
    from .models import Message, Peer
    from .records import Change, Collection
    from .report import ReportSection
    from .store import Store


# -- identity -----------------------------------------------------------------------------------
@hookspec(firstresult=True)
def meshhub_resolve_identity(hub: Hub, identity: str) -> Peer | None | Awaitable[Peer | None]:
    """Map a connector identity (``telegram:12345``, ``mcp:<key>/<name>``) to its peer.

    The core answers from its own peer table when no plugin does. Return ``None`` to let the
    next plugin (and finally the core) answer.
    """


@hookspec(firstresult=True)
def meshhub_authenticate_hello(
    hub: Hub, hello: dict[str, Any], nonce: str
) -> dict[str, Any] | None | Awaitable[dict[str, Any] | None]:
    """Check a WebSocket ``hello`` frame; ``nonce`` is the challenge the hub sent on connect.

    Return a dict with at least ``identity`` (the stable identity string) and ``public_key`` when
    the hello proves who it is, or raise :class:`meshhub.errors.AuthFailed` with a code saying why
    it does not (``bad_signature``, ``stale``, ``replayed``, ``malformed``). Return ``None`` if
    this plugin does not handle this kind of hello. The built-in ``hello_auth`` plugin checks
    ed25519 signatures.
    """


@hookspec
def meshhub_describe_peer(hub: Hub, peer: Peer) -> dict[str, Any] | None:
    """Extra fields shown for ``peer`` in peer lists (merged into its public dict)."""


# -- routing ------------------------------------------------------------------------------------
@hookspec(firstresult=True)
def meshhub_resolve_target(
    hub: Hub, token: str, sender: Peer
) -> list[str] | None | Awaitable[list[str] | None]:
    """Resolve one target token to peer keys, for target kinds a plugin adds.

    Called before the core's own resolution (names, keys, ``@group``, ``#conversation``, ``*``).
    Return ``None`` when the token is not yours; raise
    :class:`meshhub.errors.UnknownTarget` to refuse it.
    """


@hookspec(firstresult=True)
def meshhub_deliver(
    hub: Hub, peer: Peer, message: Message
) -> bool | None | Awaitable[bool | None]:
    """Hand ``message`` to ``peer``, a peer of your connector that has no WebSocket connection.

    Return (or resolve to) ``True`` once the platform accepted it (the delivery row becomes
    ``delivered``), ``False`` to leave it queued for a later try, ``None`` if ``peer`` is not
    yours. Raise to report a failure; the hub retries on its redelivery schedule.
    """


@hookspec
def meshhub_message_accepted(hub: Hub, message: Message) -> None | Awaitable[None]:
    """After a message was stored durably (called once per new message, never for resends)."""


@hookspec
def meshhub_presence_changed(
    hub: Hub, peer: Peer, event: str
) -> None | Awaitable[None]:
    """After a peer changed: ``joined`` (seen for the first time: it joined the mesh),
    ``online`` (its first receiving connection), ``offline`` (its last one went and the grace
    window passed), or a new ``status``, ``summary`` or ``groups``.

    A reconnect within the grace window is silent: no ``offline``/``online`` pair is emitted.
    """


@hookspec
def meshhub_reaction_changed(
    hub: Hub, message: Message, peer: Peer, emoji: str, added: bool, by: list[str]
) -> None | Awaitable[None]:
    """After ``peer`` added (``added``) or took away a reaction ``emoji`` on ``message``;
    ``by`` is the keys of every peer whose ``emoji`` is still on it. A bridge mirrors the
    reaction on the platform message that shows ``message`` (Slack's ``reactions.add``)."""


@hookspec
def meshhub_approval_settled(
    hub: Hub, approval: dict[str, Any], message: Message | None
) -> None | Awaitable[None]:
    """After an approval request left ``pending``: answered (on some surface, or by the
    policy), closed (answered at the terminal, cancelled) or expired. ``approval`` is its
    public view (``approval["label"]`` says what happened, e.g. ``allow, answered by ann on
    telegram``); ``message`` is the request message the surfaces show. A bridge updates the card
    it posted for ``message`` (Telegram edits it and drops its buttons)."""


@hookspec
def meshhub_card_settled(hub: Hub, message: Message, label: str) -> None | Awaitable[None]:
    """After the question a card with buttons asks was settled (an approval request answered,
    closed or expired; a proposal resolved): ``message`` is the card's message, ``label`` the
    one line every card of it shows from now on (``approved: 2 for, 0 against``). A bridge
    edits every card it posted for ``message`` to show ``label`` without buttons, so a late
    press changes nothing."""


@hookspec
def meshhub_report_sections(
    hub: Hub, viewer: Peer, since: float, until: float
) -> ReportSection | list[ReportSection] | None | Awaitable[
        ReportSection | list[ReportSection] | None]:
    """Parts of the session report (the ``report`` action, ``hub report --since 2h``) for the
    window ``[since, until)`` (epoch seconds) as ``viewer`` may see it: a feature returns its
    section (a title and Markdown lines), several, or ``None``. Peer-written text goes through
    :func:`meshhub.report.report_text` before it goes into a line."""


# -- storage ------------------------------------------------------------------------------------
@hookspec(firstresult=True)
def meshhub_provide_store(hub: Hub) -> Store | None:
    """Return the store engine; the first non-``None`` answer wins (SQLite by default)."""


@hookspec
def meshhub_register_collections(register: Callable[[Collection], None]) -> None:
    """Declare the record collections a plugin keeps its data in
    (:class:`meshhub.records.Collection`: name, indexed fields, searchable fields, change
    feed); the plugin then reads and writes them through ``hub.records`` on any engine
    (docs/storage.md). Names are unique on a hub."""


@hookspec
def meshhub_record_changed(hub: Hub, change: Change) -> None | Awaitable[None]:
    """After a document of a collection declared with ``feed=True`` was written, deleted or
    expired (:class:`meshhub.records.Change`), in feed order, on every hub sharing the engine.
    The peers the collection's ``notify`` names already got it as a ``record`` event."""


@hookspec
def meshhub_register_migrations(register: Callable[[Migrations], None]) -> None:
    """Register sqlite-utils ``Migrations`` sets, one namespace per plugin (SQLite engine
    only).

    Name each set after the plugin (``meshhub.telegram``) and each migration ``m001_...``.
    Feature data belongs in collections (``meshhub_register_collections``); a migration here
    moves a plugin's tables from before the record API into its collections
    (:func:`meshhub.builtins.sqlite_records.write_record`), and runs after the collections'
    tables exist.
    """


# -- plumbing -----------------------------------------------------------------------------------
@hookspec
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    """Register actions (:class:`meshhub.actions.Action`); each is served on every surface."""


@hookspec
def meshhub_register_connectors(register: Callable[[str, Any], None]) -> None:
    """Register a connector under its name (``telegram``); the object may define async
    ``start(hub)`` and ``stop()`` which the hub calls around its life.

    The hub keeps each connector's state (``starting``, ``running``, ``idle``, ``failed``,
    ``stopped``; :mod:`meshhub.connectors`): it sets what it sees of ``start``, and the connector
    reports the rest with ``hub.report_connector(name, state, detail)``.
    """


@hookspec
def meshhub_register_routes(register: Callable[..., None]) -> None:
    """Register HTTP routes on the hub's aiohttp server: ``register(method, path, handler)``.

    ``handler`` is an aiohttp handler ``async (request) -> Response``;
    ``request.app[meshhub.server.HUB_KEY]`` is the hub.
    """


@hookspec
def meshhub_register_commands(register: Callable[..., None]) -> None:
    """Register CLI commands: ``register(typer_app, name)`` adds a command group to ``hub``."""


@hookspec
def meshhub_startup(hub: Hub) -> None | Awaitable[None]:
    """The hub is about to serve: the store is open, actions and routes are registered."""


@hookspec
def meshhub_shutdown(hub: Hub) -> None | Awaitable[None]:
    """The hub is stopping; release what ``meshhub_startup`` took."""
