"""What every command group shares: finding the hub, the one-line error rule, the client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from meshhub.config import (
    Config,
    ConfigError,
    home_dir,
    load_config,
    load_signing_key,
    normalize_hub_url,
)
from meshhub.errors import MeshError
from meshhub.local import default_name
from meshhub.sanitize import for_terminal

if TYPE_CHECKING:  # aiohttp and the client load only for commands that talk to a hub
    from meshhub.client import MeshClient

T = TypeVar("T")

# typer >= 0.24 carries its own copy of click: reach its exception classes through a public name
_CLICK_ERRORS = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
UsageError: Any = _CLICK_ERRORS["UsageError"]
ClickException: Any = _CLICK_ERRORS["ClickException"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


class State:
    hub_url: str | None = None  # --hub, normalised


state = State()


def fail(message: str) -> typer.Exit:
    """Print one ``error:`` line (what a hub said included: made harmless for the terminal)."""
    typer.echo(f"error: {for_terminal(message, one_line=True)}", err=True)
    return typer.Exit(1)


def usage_error(message: str, ctx: typer.Context) -> Exception:
    """A usage error found after parsing (exit 2, like click's own): :func:`.main.main` prints
    it as one line."""
    return UsageError(message, ctx)


def choice_option(*choices: str) -> Callable[[str | None], str | None]:
    """The callback of an option that takes one of ``choices``: anything else is a usage
    error naming them (``None``, an option left out, passes)."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        if value.lower() not in choices:  # PUSH is push, as it is in the environment
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value.lower()

    return check


def hub_url_option(value: str | None) -> str | None:
    """The callback of every option that takes a hub URL: normalised, or a usage error."""
    if value is None:
        return None
    try:
        return normalize_hub_url(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def check_name_or_fail(name: str) -> None:
    from meshhub.directory import check_name

    try:
        check_name(name)
    except MeshError as exc:
        raise fail(exc.message) from None


def config() -> Config:
    """This home's settings; ``--hub`` wins over every other way of finding the hub."""
    cfg = load_config(home_dir())
    if state.hub_url:
        cfg.explicit_url = state.hub_url
    return cfg


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine, turning every error a user can cause into one line."""
    import aiohttp

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except MeshError as exc:
        raise fail(exc.message) from None
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    except aiohttp.ClientResponseError as exc:  # an HTTP server, but no hub's WebSocket there
        raise fail(f"{config().url} answered HTTP {exc.status} where a meshhub hub would "
                   "accept a WebSocket; is this the hub's URL?") from None
    except (ConnectionError, OSError, aiohttp.ClientError) as exc:
        raise fail(
            f"cannot reach the hub at {config().url} ({exc.__class__.__name__}); "
            "is it running? start it with `hub start`"
        ) from None


def client(cfg: Config, *, receive: bool) -> MeshClient:
    from meshhub.client import MeshClient

    key = load_signing_key(cfg.home)
    return MeshClient(cfg.url, key, name=cfg.name or default_name(), kind="human",
                      connector="cli", receive=receive)


async def with_client(receive: bool, fn: Callable[[MeshClient], Awaitable[T]]) -> T:
    async with client(config(), receive=receive) as c:
        return await fn(c)


def call(action: str, **params: Any) -> Any:
    """Run one action on the hub as this home's member, errors as one line (for commands that
    are one call: ``hub invite``, ``hub pair``, ``hub web``...)."""
    return run(with_client(False, lambda c: c.call(action, **params)))


async def _health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session, session.get(
            url + "/health", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            data: dict[str, Any] = await resp.json()
            return data
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None

