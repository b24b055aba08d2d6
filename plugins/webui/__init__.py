"""meshhub's web page: the mesh in a browser, served by the hub at ``/`` on its own port.

This module holds only the hook implementations. :mod:`.routes` serves the page and its
WebSocket, :mod:`.sessions` decides who a browser is, :mod:`.socket` renders message bodies for
the page, :mod:`.actions` and :mod:`.cli` make sign-in links. The page itself (``static/``) is
plain ES modules and one style sheet, with no build step. See docs/webui.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshhub import hookimpl

if TYPE_CHECKING:
    from meshhub.actions import Action
    from meshhub.hub import Hub

__all__ = ["meshhub_register_actions", "meshhub_register_commands", "meshhub_register_routes",
           "meshhub_shutdown"]


@hookimpl
def meshhub_register_routes(register: Callable[..., None]) -> None:
    from .routes import register_all

    register_all(register)


@hookimpl
def meshhub_register_actions(register: Callable[[Action], None]) -> None:
    from .actions import register_all

    register_all(register)


@hookimpl
def meshhub_register_commands(register: Callable[..., None]) -> None:
    from .cli import register_all

    register_all(register)


@hookimpl
def meshhub_shutdown(hub: Hub) -> Any:
    from .sessions import forget

    forget(hub)
