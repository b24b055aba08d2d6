"""meshhub for Claude Code: the ``hub mcp`` stdio server, the ``/mcp`` HTTP endpoint, and
``hub install/uninstall claude-code``, ``hub hook``, ``hub launch``.

This module holds only the hook implementations and imports nothing heavy: the ``mcp`` SDK is
loaded when a command or the endpoint needs it (``hub hook`` must start fast). See docs/mcp.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshhub import hookimpl

if TYPE_CHECKING:
    from meshhub.hub import Hub

__all__ = ["meshhub_register_commands", "meshhub_register_routes", "meshhub_shutdown",
           "meshhub_startup"]


@hookimpl
def meshhub_register_commands(register: Callable[..., None]) -> None:
    from .cli import register_all

    register_all(register)


@hookimpl
def meshhub_register_routes(register: Callable[..., None]) -> None:
    from .http_endpoint import PATH, route

    register("*", PATH, route)


@hookimpl
async def meshhub_startup(hub: Hub) -> None:
    from .http_endpoint import start

    await start(hub)


@hookimpl
async def meshhub_shutdown(hub: Hub) -> Any:
    from .http_endpoint import stop

    await stop(hub)
