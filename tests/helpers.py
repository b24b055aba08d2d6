"""Shared testing machinery: real hub processes on 127.0.0.1, CLI identities, clients."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from nacl.signing import SigningKey

from meshhub.client import MeshClient
from meshhub.config import init_home, load_signing_key
from meshhub.hub import Hub

HOST = "127.0.0.1"
HUB_BIN = str(Path(sys.executable).with_name("hub"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class HubProcess:
    """A real ``hub start`` child process; stop it by handle."""

    home: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.home / "test-hub.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 20.0) -> HubProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [HUB_BIN, "start", "--host", HOST, "--port", str(self.port)],
                env=self.env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited early:\n{self.log.read_text()}")
            if self.health() is not None:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"hub did not start:\n{self.log.read_text()}")

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush; what survives is what was committed."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class InProcessHub:
    def __init__(self, hub: Hub, runner: Any, port: int) -> None:
        self.hub, self.runner, self.port = hub, runner, port
        self.url = f"http://{HOST}:{port}"
        self.stopped = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MESHHUB_") or k == "MESHHUB_SOCKET_DIR"}
    env["MESHHUB_HOME"] = str(home)
    env.update(extra)
    return env


@dataclass
class Identity:
    """A CLI user: its own MESHHUB_HOME with a key and a config."""

    home: Path
    name: str

    @property
    def key(self) -> SigningKey:
        return load_signing_key(self.home)

    def client(self, hub_url: str, **options: Any) -> MeshClient:
        options.setdefault("kind", "human")
        options.setdefault("name", self.name)
        return MeshClient(hub_url, self.key, **options)

    def cli(self, hub_url: str, *args: str, check: bool = True, timeout: float = 30,
            **env_vars: str) -> subprocess.CompletedProcess[str]:
        env = base_env(self.home, MESHHUB_URL=hub_url, **env_vars)
        result = subprocess.run([HUB_BIN, *args], env=env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"hub {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1 on a free port: (its runner, the port). Stop it with
    ``await runner.cleanup()``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    return runner, int(runner.addresses[0][1])


@dataclass
class ConnectorHub:
    """An in-process hub served on 127.0.0.1 for a connector's tests, with its owner; a
    connector's support module adds its fake platform and sets ``connector_name``."""

    hub: Hub
    runner: Any
    port: int
    owner: Identity
    connector_name = ""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def connector(self) -> Any:
        return self.hub.connectors[self.connector_name].for_hub(self.hub)


def owner_home(root: Path, name: str = "hub") -> Path:
    """A hub's home under ``root``, made on first use with the owner ``owner`` (not the OS
    user's name, which a test may use); a hub started again keeps its home."""
    home = root / name
    if not (home / "identity.key").exists():
        init_home(home, "owner")
    return home


def make_identity(root: Path, name: str) -> Identity:
    home = root / name
    init_home(home, name)
    return Identity(home, name)


async def collect(client: MeshClient, n: int, timeout: float = 10.0,
                  ack: bool = True) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        message = await client.next_message(timeout)
        if ack:
            await client.ack(message["id"])
        out.append(message)
    return out


async def no_message(client: MeshClient, wait: float = 0.5) -> bool:
    try:
        await asyncio.wait_for(client._inbox.get(), wait)
    except TimeoutError:
        return True
    return False


_line_queues: weakref.WeakKeyDictionary[subprocess.Popen[str], queue.Queue[str]] = (
    weakref.WeakKeyDictionary())


def read_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The next line a child process prints ("" once its output ended), or an AssertionError
    after ``timeout`` seconds: a test then fails saying what it waited for instead of hanging.
    A thread reads the pipe (a select on it would miss lines already in the read buffer)."""
    lines = _line_queues.get(proc)
    if lines is None:
        lines = _line_queues[proc] = queue.Queue()
        out = proc.stdout
        assert out is not None

        def pump(into: queue.Queue[str] = lines) -> None:
            for line in out:
                into.put(line)
            into.put("")

        threading.Thread(target=pump, daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no output from {proc.args!r} within {timeout} s") from None


async def eventually(check: Any, timeout: float = 10.0) -> Any:
    """Await ``check()`` until it returns something truthy (bounded); for state with no event
    to await, such as a delivery row turning ``delivered`` after the platform's answer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(0.02)


async def api_call(url: str, token: str, action: str, **params: Any) -> Any:
    """``POST /api/<action>`` with a bearer token: the result, or the error object."""
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/api/{action}", json=params,
            headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.json()
        return body["result"] if resp.status == 200 else body["error"]


async def token_for(client: MeshClient, cap: str = "send") -> str:
    """A new bearer token of the client's peer, with this cap."""
    return str((await client.call("token_create", label="test", cap=cap))["token"])
