"""What every command group shares: finding the hub, the one-line error rule, the client."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from meshhub.config import Config, default_name, home_dir, load_config, load_signing_key
from meshhub.errors import MeshError

if TYPE_CHECKING:  # aiohttp and the client load only for commands that talk to a hub
    from meshhub.client import MeshClient

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


class State:
    hub_url: str | None = None


state = State()


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def check_name_or_fail(name: str) -> None:
    from meshhub.directory import check_name

    try:
        check_name(name)
    except MeshError as exc:
        raise fail(exc.message) from None


def config() -> Config:
    cfg = load_config(home_dir())
    if state.hub_url:
        cfg.hub_url = state.hub_url
    return cfg


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine, turning every error a user can cause into one line."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except MeshError as exc:
        raise fail(exc.message) from None
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    except (ConnectionError, OSError) as exc:  # aiohttp's connection errors are OSErrors
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



def _pid(cfg: Config) -> int | None:
    try:
        pid = int(cfg.pid_path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


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

