"""``hub``: the admin and user command line.

Every command that talks to a running hub finds it from ``--hub URL``, then ``MESHHUB_URL``, then
the config in ``MESHHUB_HOME``. A user error is one line on stderr and exit code 1, never a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from meshhub import __version__
from meshhub.config import Config, default_name, home_dir, init_home, load_config, load_signing_key
from meshhub.errors import MeshError

from .output import emit_json, message_line, table

if TYPE_CHECKING:  # aiohttp and the client load only for commands that talk to a hub
    from meshhub.client import MeshClient

T = TypeVar("T")

app = typer.Typer(
    name="hub",
    help="meshhub: one hub where AI coding agents and people message each other.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
plugins_app = typer.Typer(help="Inspect the hub's plugins.", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")

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


@app.callback()
def main_options(
    hub: Annotated[str | None, typer.Option("--hub", help="The hub's URL.",
                                            envvar="MESHHUB_URL")] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(f"meshhub {__version__}")
        raise typer.Exit()
    state.hub_url = hub


# -- set-up and the server ------------------------------------------------------------------------
@app.command()
def init(
    name: Annotated[str, typer.Option("--name", help="Your display name on the mesh.")],
    hub_url: Annotated[str | None, typer.Option("--hub-url", help="Hub URL to remember.")]
    = None,
) -> None:
    """Create your identity key and config under MESHHUB_HOME (mode 0600)."""
    check_name_or_fail(name)
    cfg, created = init_home(home_dir(), name, hub_url=hub_url)
    key = load_signing_key(cfg.home).verify_key.encode().hex()
    word = "created" if created else "kept the existing"
    typer.echo(f"{word} identity for {cfg.name} in {cfg.home} (public key {key[:16]}...)")


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


@app.command()
def start(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 7420; 0 picks a free one).")]
    = None,
    background: Annotated[bool, typer.Option("--background", help="Detach and return.")]
    = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the hub: WebSocket peers, HTTP API, /mcp, on one asyncio process."""
    os.umask(0o077)  # the database, the log and the pid file are the owner's alone
    home = home_dir()
    if not (home / "identity.key").exists():
        init_home(home, default_name())
    cfg = load_config(home)
    if host:
        cfg.host = host
    if port is not None:
        cfg.port = port
    if (pid := _pid(cfg)) is not None:
        raise fail(f"a hub is already running from {cfg.home} (pid {pid}); `hub stop` first")
    from meshhub.admission import check_settings

    try:
        check_settings(cfg)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if background:
        _start_background(cfg, log_level)
        return
    _serve_foreground(cfg, log_level)


def _start_background(cfg: Config, log_level: str) -> None:
    args = [sys.executable, "-m", "meshhub.cli.main", "start", "--host", cfg.host,
            "--port", str(cfg.port), "--log-level", log_level]
    with cfg.log_path.open("ab") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise fail(f"the hub exited with code {proc.returncode}; see {cfg.log_path}")
        if cfg.pid_path.exists():
            url = cfg.pid_path.read_text().split()[1]
            if asyncio.run(_health(url, 1.0)):
                typer.echo(f"meshhub {__version__} running in the background (pid {proc.pid})")
                typer.echo(f"  connect: {url}   log: {cfg.log_path}")
                return
        time.sleep(0.1)
    raise fail(f"the hub did not answer within 20 s; see {cfg.log_path}")


def _serve_foreground(cfg: Config, log_level: str) -> None:
    from meshhub.admission import is_loopback, local_socket_for
    from meshhub.hub import Hub
    from meshhub.server import serve

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        hub = Hub(cfg)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner, port = await serve(hub, cfg.host, cfg.port)
        url = f"http://{'127.0.0.1' if cfg.host in ('0.0.0.0', '') else cfg.host}:{port}"
        cfg.pid_path.write_text(f"{os.getpid()} {url}\n")
        failed = [r["name"] for r in hub.plugins.table() if r["status"] == "failed"]
        typer.echo(f"meshhub {__version__} listening on {url}")
        typer.echo(f"  WebSocket peers: {url.replace('http', 'ws', 1)}/ws")
        typer.echo(f"  HTTP API:        {url}/api/<action>   (OpenAPI: {url}/openapi.json)")
        if "/mcp" in {path for _m, path, _h in hub.routes}:
            typer.echo(f"  MCP (HTTP):      {url}/mcp   (token: hub token create)")
        typer.echo("  Claude Code:     hub install claude-code")
        typer.echo(f"  data:            {cfg.home}")
        socket = local_socket_for(url)
        typer.echo(f"  local socket:    {socket}   (your own OS user gets in through it)"
                   if socket else "  local socket:    none (see the log); local peers need invites")
        if not is_loopback(cfg.host):
            typer.echo(f"  reachable from other machines on {cfg.host}: only members get in "
                       "(hub invite); put TLS in front (docs/operations.md, docs/security.md)")
        if failed:
            typer.echo(f"  failed plugins:  {', '.join(failed)} (see hub plugins list)")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            typer.echo("meshhub stopping")
            await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                cfg.pid_path.unlink()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise fail(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None


@app.command()
def stop() -> None:
    """Stop the hub started from this MESHHUB_HOME."""
    cfg = config()
    pid = _pid(cfg)
    if pid is None:
        raise fail(f"no hub is running from {cfg.home}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _pid(cfg) is not None:
        time.sleep(0.1)
    if _pid(cfg) is not None:
        raise fail(f"the hub (pid {pid}) did not stop within 15 s")
    typer.echo(f"stopped the hub (pid {pid})")


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Is the hub up? Version, uptime, peers."""
    cfg = config()
    health = asyncio.run(_health(cfg.url))
    if health is None:
        if as_json:
            emit_json({"ok": False, "url": cfg.url})
        raise fail(f"no hub answers at {cfg.url}; start one with `hub start`")
    health["url"] = cfg.url
    if as_json:
        emit_json(health)
        return
    typer.echo(f"meshhub {health['version']} at {cfg.url}: up {health['uptime']:.0f} s, "
               f"{health['online']} online of {health['peers']} peers")


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check the set-up: identity, file modes, hub reachability, plugins."""
    from meshhub.plugins import build_plugin_host

    cfg = config()
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    check("python", sys.version_info >= (3, 11), sys.version.split()[0])
    key = cfg.key_path
    check("identity", key.exists(), str(key) if key.exists() else "missing: run `hub init`")
    if key.exists():
        mode = key.stat().st_mode & 0o777
        check("identity mode", mode == 0o600, oct(mode))
    if cfg.path.exists():
        mode = cfg.path.stat().st_mode & 0o777
        check("config mode", mode == 0o600, oct(mode))
    health = asyncio.run(_health(cfg.url))
    check("hub", health is not None, cfg.url if health else f"no answer at {cfg.url}")
    host = build_plugin_host(cfg.disabled_plugins)
    failed = [f"{r['name']}: {r['error']}" for r in host.table() if r["status"] == "failed"]
    check("plugins", not failed, "; ".join(failed) or f"{len(host.table())} loaded")
    if as_json:
        emit_json(checks)
    else:
        for c in checks:
            typer.echo(f"{'ok  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
    if not all(c["ok"] for c in checks):
        raise typer.Exit(1)


# -- messaging ------------------------------------------------------------------------------------
@app.command()
def send(
    target: Annotated[str, typer.Argument(help="name, key, @group, #conversation, * or a list")],
    text: Annotated[str, typer.Argument(help="the message")],
    reply_to: Annotated[str | None, typer.Option("--reply-to", help="root message id")] = None,
    priority: Annotated[str, typer.Option(help="now, next or low")] = "next",
    client_id: Annotated[str | None, typer.Option("--client-id", help="idempotency key")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a message."""

    async def go(c: MeshClient) -> dict[str, Any]:
        return await c.send(target, text, reply_to=reply_to, priority=priority,
                            client_id=client_id)

    result = run(with_client(False, go))
    if as_json:
        emit_json(result)
        return
    note = " (already sent earlier)" if result["duplicate"] else ""
    queued = f"; queued for {', '.join(result['queued'])}" if result["queued"] else ""
    typer.echo(f"sent {result['id']} to {', '.join(result['recipients'])}{note}{queued}")


@app.command()
def inbox(
    show_all: Annotated[bool, typer.Option("--all", help="Include messages already read.")]
    = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show messages addressed to you (and mark them read)."""
    result = run(with_client(False, lambda c: c.inbox(unread_only=not show_all, limit=limit)))
    if as_json:
        emit_json(result)
        return
    if not result["messages"]:
        typer.echo("no unread messages" if not show_all else "no messages")
    for m in result["messages"]:
        typer.echo(message_line(m))
    if result["more"]:
        typer.echo(f"... more: hub inbox --limit {limit * 2}")


@app.command()
def peers(as_json: JsonOpt = False) -> None:
    """List the peers of the mesh."""
    result = run(with_client(False, lambda c: c.peers()))
    if as_json:
        emit_json(result)
        return
    rows = [
        [("* " if p["you"] else "  ") + p["name"], p["key"], p["kind"], p["connector"],
         p["status"] if p["online"] else "offline", ",".join("@" + g for g in p["groups"]),
         p["summary"]]
        for p in result
    ]
    typer.echo(table(rows, ["name", "key", "kind", "via", "status", "groups", "summary"]))


@app.command()
def watch(as_json: JsonOpt = False) -> None:
    """Stream arriving messages and presence changes until Ctrl-C."""

    from meshhub.client import MeshClient

    async def go() -> None:
        c = MeshClient(config().url, load_signing_key(config().home),
                       name=config().name or default_name(), kind="human", connector="cli",
                       receive=True, reconnect=True)
        async with c:
            if not as_json:
                typer.echo(f"watching as {c.peer['name']} ({c.peer['key']}); Ctrl-C to stop")

            async def events() -> None:
                while True:
                    event = await c.events.get()
                    if as_json:
                        typer.echo(json.dumps(event))
                    else:
                        peer = event.get("peer", {})
                        typer.echo(f"-- {peer.get('name')} {event.get('change')} "
                                   f"({peer.get('status')})")

            task = asyncio.create_task(events())
            try:
                async for m in c.messages():
                    typer.echo(json.dumps(m) if as_json else message_line(m))
                    sys.stdout.flush()
                    await c.ack(m["id"])
            finally:
                task.cancel()

    with contextlib.suppress(KeyboardInterrupt):
        run(go())


def _param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise fail(f"parameters are name=value, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


@app.command("call")
def call_action(
    action: Annotated[str, typer.Argument(help="an action name (see `hub actions`)")],
    params: Annotated[list[str] | None, typer.Argument(help="name=value (JSON values allowed)")]
    = None,
) -> None:
    """Run any action on the hub, e.g. `hub call join_group group=backend`; prints JSON."""
    args = dict(_param(p) for p in params or [])
    emit_json(run(with_client(False, lambda c: c.call(action, **args))))


@app.command("actions")
def list_actions(as_json: JsonOpt = False) -> None:
    """List the actions this install serves (each is also an HTTP endpoint and MCP tool)."""
    from meshhub.hub import Hub

    hub = Hub(config())
    hub.collect_contributions()
    described = hub.actions.describe()
    if as_json:
        emit_json(described)
        return
    typer.echo(table([[a["name"], a["summary"]] for a in described], ["action", "summary"]))


# -- plugins ---------------------------------------------------------------------------------
@plugins_app.command("list")
def plugins_list(as_json: JsonOpt = False) -> None:
    """The plugins, from the running hub if there is one, else as this install loads them."""
    import aiohttp

    cfg = config()
    rows: list[dict[str, Any]]
    source = "hub"
    try:
        rows = asyncio.run(with_client(False, lambda c: c.call("plugins_list")))
    except (OSError, ConnectionError, aiohttp.ClientError, MeshError, FileNotFoundError):
        from meshhub.plugins import build_plugin_host

        rows = build_plugin_host(cfg.disabled_plugins).table()
        source = "local"
    if as_json:
        emit_json(rows)
        return
    if source == "local":
        typer.echo(f"(no hub at {cfg.url}: showing what this install loads)")
    typer.echo(table(
        [[r["name"], r["version"], r["source"],
          r["status"] + (f": {r['error']}" if r["error"] else ""),
          ", ".join(h.removeprefix("meshhub_") for h in r["hooks"])]
         for r in rows],
        ["name", "version", "source", "status", "hooks"],
    ))


@app.command("pair")
def pair(
    connector: Annotated[str, typer.Argument(help="the chat connector, e.g. telegram")]
    = "telegram",
    as_json: JsonOpt = False,
) -> None:
    """Create a one-time code that lets one person of a chat platform in (10 minutes)."""
    result = run(with_client(False, lambda c: c.call("pair_create", connector=connector)))
    if as_json:
        emit_json(result)
        return
    typer.echo(result["code"])
    typer.echo(f"  {result['how']} ({result['attempts']} attempts)")


@functools.cache
def _add_plugin_commands() -> None:
    from meshhub.plugins import build_plugin_host

    # only entry-point plugins add commands: skip the built-ins' imports (CLI start-up time)
    host = build_plugin_host(load_config(home_dir()).disabled_plugins, builtins=False)

    def add(sub: typer.Typer, name: str, plugin: str) -> str:
        app.add_typer(sub, name=name)
        return name

    host.collect("meshhub_register_commands", "commands", add)


def main() -> None:
    from . import admin

    admin.register(app)
    with contextlib.suppress(Exception):
        _add_plugin_commands()
    app()


if __name__ == "__main__":
    main()
