"""``hub init``, ``start``, ``stop``, ``status`` and ``doctor``: set-up and the server."""

from __future__ import annotations

import asyncio
import gc
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from meshhub import __version__
from meshhub.config import (
    Config,
    ConfigError,
    HubLock,
    home_dir,
    init_home,
    load_config,
    load_signing_key,
    running_hub,
)
from meshhub.local import default_name

from .common import JsonOpt, _health, check_name_or_fail, config, fail, hub_url_option
from .output import emit_json


def init(
    name: Annotated[str, typer.Option("--name", help="Your display name on the mesh.")],
    hub_url: Annotated[str | None, typer.Option(
        "--hub-url", help="Hub URL to remember: http(s)://HOST[:PORT] or HOST:PORT.",
        callback=hub_url_option)] = None,
) -> None:
    """Create your identity key and config under MESHHUB_HOME (mode 0600)."""
    check_name_or_fail(name)
    cfg, created = init_home(home_dir(), name, hub_url=hub_url)
    key = load_signing_key(cfg.home).verify_key.encode().hex()
    word = "created" if created else "kept the existing"
    typer.echo(f"{word} identity for {cfg.name} in {cfg.home} (public key {key[:16]}...)")



LOG_LEVELS = ("debug", "info", "warning", "error")


def _port_option(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 65535:
        raise typer.BadParameter(f"{value} is not a port; ports are 0-65535 (0 picks a free one)")
    return value


def _log_level_option(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not a log level; use {', '.join(LOG_LEVELS)}")
    return value.lower()


def start(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(
        help="Port, 0-65535 (default 7420; 0 picks a free one).", callback=_port_option)]
    = None,
    background: Annotated[bool, typer.Option("--background", help="Detach and return.")]
    = False,
    log_level: Annotated[str, typer.Option(
        help="debug, info, warning or error.", callback=_log_level_option)] = "info",
) -> None:
    """Run the hub: WebSocket peers, HTTP API, /mcp, on one asyncio process."""
    os.umask(0o077)  # the database, the log and the pid file are the owner's alone
    home = home_dir()
    cfg = load_config(home)  # a bad setting stops here, before anything is written
    if not (home / "identity.key").exists():
        init_home(home, default_name())
        cfg = load_config(home)
    if host:
        cfg.host = host
    if port is not None:
        cfg.port = port
    if (running := running_hub(home)) is not None:
        pid = f" (pid {running[0]})" if running[0] else ""
        raise fail(f"a hub is already running from {cfg.home}{pid}; `hub stop` first")
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
        offset = log_file.tell()  # this start's lines begin here
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise fail(_child_error(cfg, offset) or
                       f"the hub exited with code {proc.returncode}; see {cfg.log_path}")
        running = running_hub(cfg.home)
        if running is not None and running[0] == proc.pid and running[1] is not None:
            if asyncio.run(_health(running[1], 1.0)):
                typer.echo(f"meshhub {__version__} running in the background (pid {proc.pid})")
                typer.echo(f"  connect: {running[1]}   log: {cfg.log_path}")
                return
        time.sleep(0.1)
    raise fail(f"the hub (pid {proc.pid}) did not answer within 20 s and may still be starting; "
               f"see {cfg.log_path}, and `hub stop` to stop it")


def _child_error(cfg: Config, offset: int) -> str | None:
    """The last ``error:`` line the background hub wrote to the log before it exited."""
    try:
        with cfg.log_path.open("rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None


class _LogsAfterBanner:
    """Holds the log records of the start-up until the banner is out, so the banner (where to
    connect) is the first thing ``hub start`` prints, with the log following. A start that fails
    shows only the held warnings and errors: its ``error:`` line says the rest."""

    def __init__(self, level: str) -> None:
        self.output = logging.StreamHandler()
        self.output.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        # flushLevel above CRITICAL: nothing leaves the buffer until release()
        self.held: logging.handlers.MemoryHandler | None = logging.handlers.MemoryHandler(
            capacity=100_000, flushLevel=logging.CRITICAL + 1, target=self.output,
            flushOnClose=False)
        root = logging.getLogger()
        root.setLevel(level.upper())
        root.addHandler(self.held)

    def release(self, *, least: int = logging.NOTSET) -> None:
        """Print the held records of level ``least`` or more; log directly from now on."""
        held, self.held = self.held, None
        if held is None:
            return
        root = logging.getLogger()
        root.removeHandler(held)
        root.addHandler(self.output)
        for record in held.buffer:
            if record.levelno >= least:
                self.output.handle(record)
        held.buffer.clear()
        held.close()


def _banner(cfg: Config, hub: Any, url: str) -> list[str]:
    """Where to connect: the first lines ``hub start`` prints."""
    from meshhub.admission import is_loopback, local_socket_for

    lines = [
        f"meshhub {__version__} listening on {url}",
        f"  WebSocket peers: {url.replace('http', 'ws', 1)}/ws",
        f"  HTTP API:        {url}/api/<action>   (OpenAPI: {url}/openapi.json)",
    ]
    paths = {path for _m, path, _h in hub.routes}
    if "/" in paths:
        lines.append(f"  web page:        {url}/   (sign in: hub web)")
    if "/mcp" in paths:
        lines.append(f"  MCP (HTTP):      {url}/mcp   (token: hub token create)")
    lines.append("  Claude Code:     hub install claude-code")
    for state in sorted(hub.connector_states.all(), key=lambda s: s.name):
        if state.state != "idle":  # a configured connector says where it is, or what is wrong
            lines.append(f"  {state.name + ':':<17}{state.summary()}")
    lines.append(f"  data:            {cfg.home}")
    socket = local_socket_for(url)
    lines.append(f"  local socket:    {socket}   (your own OS user gets in through it)"
                 if socket else "  local socket:    none (see the log); local peers need invites")
    if not is_loopback(cfg.host):
        lines.append(f"  reachable from other machines on {cfg.host}: only members get in "
                     "(hub invite); put TLS in front (docs/operations.md, docs/security.md)")
    failed = [r["name"] for r in hub.plugins.table() if r["status"] == "failed"]
    if failed:
        lines.append(f"  failed plugins:  {', '.join(failed)} (see hub plugins list)")
    return lines


def _serve_foreground(cfg: Config, log_level: str) -> None:
    from meshhub.hub import Hub
    from meshhub.server import ListenError, serve

    try:
        lock = HubLock(cfg.home)  # before anything is opened: one hub per home
    except ConfigError as exc:
        raise fail(str(exc)) from None
    logs = _LogsAfterBanner(log_level)

    async def main() -> None:
        hub = Hub(cfg)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner, port = await serve(hub, cfg.host, cfg.port)
        cfg.port = port  # the real one when 0 was asked for
        url = cfg.listen_url
        lock.write(url)
        typer.echo("\n".join(_banner(cfg, hub, url)))
        sys.stdout.flush()
        logs.release()
        gc.freeze()  # what start-up built lives as long as the hub: no collection walks it again
        try:
            await stop.wait()
        finally:
            typer.echo("meshhub stopping")
            await runner.cleanup()

    try:
        asyncio.run(main())
    except (ListenError, ConfigError) as exc:
        logs.release(least=logging.WARNING)
        raise fail(str(exc)) from None
    finally:
        logs.release()
        lock.release()


def _unlocked_pid_note(home: Path) -> str:
    """A hub.pid nobody holds the lock of, whose pid is alive: a hub of a meshhub too old to
    lock it, or a process that got the pid of a dead hub. Never signalled; the person decides."""
    try:
        pid = int((home / "hub.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return ""
    return (f" (hub.pid names pid {pid}, which is alive but holds no lock: if it is a hub of "
            f"an older meshhub, stop it with `kill {pid}`)")


def stop() -> None:
    """Stop the hub started from this MESHHUB_HOME."""
    home = home_dir()
    running = running_hub(home)
    if running is None:
        raise fail(f"no hub is running from {home}{_unlocked_pid_note(home)}")
    pid = running[0]
    if pid is None:
        raise fail(f"the hub of {home} is still starting; try again in a moment")
    try:
        os.kill(pid, signal.SIGTERM)
    except PermissionError:
        raise fail(f"the hub of {home} (pid {pid}) belongs to another user") from None
    except ProcessLookupError:
        pass  # it ended on its own just now
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and running_hub(home) is not None:
        time.sleep(0.1)
    if running_hub(home) is not None:
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
        bad = [c["check"] for c in checks if not c["ok"]]
        raise fail(f"{len(bad)} of {len(checks)} checks failed: {', '.join(bad)}")


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
