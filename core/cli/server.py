"""``hub init``, ``start``, ``stop``, ``status`` and ``doctor``: set-up and the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Annotated, Any

import typer

from meshhub import __version__
from meshhub.config import Config, default_name, home_dir, init_home, load_config, load_signing_key

from .common import JsonOpt, _health, _pid, check_name_or_fail, config, fail
from .output import emit_json


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


def doctor(as_json: JsonOpt = False) -> None:
    """Check the set-up: identity, file modes, the hub, its plugins and each connector.

    Each check has a level: ``ok``, ``warn`` (worth knowing, such as a connector idle for want
    of a token) or ``fail``; only a failure makes the exit status 1. With ``--json`` every
    check is ``{"check", "ok", "level", "detail"}`` (``ok`` is false only for a failure), and a
    connector's check also has its ``state``.
    """
    cfg = config()
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str, *, level: str | None = None,
              **extra: Any) -> None:
        level = level or ("ok" if ok else "fail")
        checks.append({"check": name, "ok": level != "fail", "level": level, "detail": detail,
                       **extra})

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
    live: tuple[list[dict[str, Any]], list[dict[str, Any]]] | str = (
        "the hub is not running" if health is None
        else _ask_hub(cfg) if key.exists() else "no identity to ask the hub with")
    if isinstance(live, tuple):
        plugin_rows, connectors = live
    else:
        from meshhub.plugins import build_plugin_host

        plugin_rows, connectors = build_plugin_host(cfg.disabled_plugins).table(), []
    failed = [f"{r['name']}: {r['error']}" for r in plugin_rows if r["status"] == "failed"]
    check("plugins", not failed, "; ".join(failed) or f"{len(plugin_rows)} loaded")
    if isinstance(live, str):
        check("connectors", True, f"state unknown: {live}", level="warn")
    for item in connectors:
        state = item["state"]
        level = {"running": "ok", "failed": "fail"}.get(state, "warn")
        check(item["name"], level != "fail", item["summary"], level=level, state=state)
    if as_json:
        emit_json(checks)
    else:
        labels = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
        for c in checks:
            typer.echo(f"{labels[c['level']]}  {c['check']}: {c['detail']}")
    if not all(c["ok"] for c in checks):
        raise typer.Exit(1)


def _ask_hub(cfg: Config) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | str:
    """The running hub's plugins and connector states, or why they could not be had."""
    import aiohttp

    from meshhub.errors import MeshError

    from .common import client

    async def ask() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with client(cfg, receive=False) as c:
            return await c.call("plugins_list"), await c.call("connectors")

    try:
        return asyncio.run(ask())
    except MeshError as exc:
        return f"the hub answered: {exc.message}"
    except (OSError, aiohttp.ClientError) as exc:
        return f"cannot ask the hub ({type(exc).__name__})"


def register(app: typer.Typer) -> None:
    for command in (init, start, stop, status, doctor):
        app.command()(command)
