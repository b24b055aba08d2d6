"""Configuration: ``<MESHHUB_HOME>/config.toml`` (mode 0600), overridden by ``MESHHUB_*`` vars.

``MESHHUB_HOME`` defaults to ``~/.meshhub``. The same file serves the hub (where it listens, its
timings, which plugins are off) and the CLI (who I am, where the hub is). A connector keeps its own
table (``[telegram]``, ``[slack]``...) which it reads from :attr:`Config.raw`.
"""

from __future__ import annotations

import getpass
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from nacl.signing import SigningKey

DEFAULT_PORT = 7420
KEY_FILE = "identity.key"
CONFIG_FILE = "config.toml"

_ENV_NUMBERS = {
    "MESHHUB_PORT": ("port", int),
    "MESHHUB_LEASE_SECONDS": ("lease_seconds", float),
    "MESHHUB_TTL_SECONDS": ("ttl_seconds", float),
    "MESHHUB_PING_INTERVAL": ("ping_interval", float),
    "MESHHUB_PONG_TIMEOUT": ("pong_timeout", float),
    "MESHHUB_GRACE_SECONDS": ("grace_seconds", float),
    "MESHHUB_MAX_BODY_BYTES": ("max_body_bytes", int),
}


def home_dir() -> Path:
    return Path(os.environ.get("MESHHUB_HOME") or Path.home() / ".meshhub").expanduser()


@dataclass
class Config:
    home: Path
    name: str = ""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    hub_url: str | None = None  # where the CLI finds the hub; defaults to host:port
    lease_seconds: float = 30.0
    ttl_seconds: float = 7 * 86400.0
    ping_interval: float = 30.0
    pong_timeout: float = 75.0
    grace_seconds: float = 90.0
    max_body_bytes: int = 64 * 1024
    sqlite_synchronous: str = "FULL"
    disabled_plugins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)  # Host names of a public deployment
    allowed_origins: list[str] = field(default_factory=list)  # web origins allowed besides its own
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.home / "meshhub.db"

    @property
    def key_path(self) -> Path:
        return self.home / KEY_FILE

    @property
    def path(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def pid_path(self) -> Path:
        return self.home / "hub.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "hub.log"

    @property
    def url(self) -> str:
        """The hub's HTTP base URL as clients should use it."""
        if self.hub_url:
            return self.hub_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def section(self, name: str) -> dict[str, Any]:
        """A plugin's own table, e.g. ``[telegram]``."""
        value = self.raw.get(name, {})
        return value if isinstance(value, dict) else {}


def load_config(home: Path | None = None) -> Config:
    home = home or home_dir()
    raw: dict[str, Any] = {}
    path = home / CONFIG_FILE
    if path.exists():
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    hub = raw.get("hub", {})
    identity = raw.get("identity", {})
    cfg = Config(
        home=home,
        name=identity.get("name", ""),
        host=hub.get("host", "127.0.0.1"),
        port=int(hub.get("port", DEFAULT_PORT)),
        hub_url=hub.get("url"),
        lease_seconds=float(hub.get("lease_seconds", 30.0)),
        ttl_seconds=float(hub.get("ttl_seconds", 7 * 86400.0)),
        ping_interval=float(hub.get("ping_interval", 30.0)),
        pong_timeout=float(hub.get("pong_timeout", 75.0)),
        grace_seconds=float(hub.get("grace_seconds", 90.0)),
        max_body_bytes=int(hub.get("max_body_bytes", 64 * 1024)),
        sqlite_synchronous=str(hub.get("sqlite_synchronous", "FULL")).upper(),
        disabled_plugins=list(raw.get("plugins", {}).get("disabled", [])),
        allowed_hosts=_names(hub.get("allowed_hosts", [])),
        allowed_origins=_names(hub.get("allowed_origins", [])),
        raw=raw,
    )
    for var, (attr, kind) in _ENV_NUMBERS.items():
        if os.environ.get(var):
            setattr(cfg, attr, kind(os.environ[var]))
    if os.environ.get("MESHHUB_HOST"):
        cfg.host = os.environ["MESHHUB_HOST"]
    if os.environ.get("MESHHUB_URL"):
        cfg.hub_url = os.environ["MESHHUB_URL"]
    for var, attr in (("MESHHUB_ALLOWED_HOSTS", "allowed_hosts"),
                      ("MESHHUB_ALLOWED_ORIGINS", "allowed_origins")):
        if os.environ.get(var):
            setattr(cfg, attr, _names(os.environ[var]))
    if os.environ.get("MESHHUB_DISABLE_PLUGINS"):
        cfg.disabled_plugins += [
            p.strip() for p in os.environ["MESHHUB_DISABLE_PLUGINS"].split(",") if p.strip()
        ]
    return cfg


def _names(value: Any) -> list[str]:
    """A list setting, written as a TOML list or as one comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    return [str(item).strip() for item in items or [] if str(item).strip()]


def default_name() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (containers)
        user = "me"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip("-._")[:40] or "me"
    return f"{name[:36]}-me" if re.fullmatch(r"[0-9A-Fa-f]{8}", name) else name


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (0600 from the moment it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def init_home(home: Path, name: str, *, host: str | None = None, port: int | None = None,
              hub_url: str | None = None) -> tuple[Config, bool]:
    """Create the identity key and config if missing; returns (config, created)."""
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    created = False
    key_path = home / KEY_FILE
    if not key_path.exists():
        write_private(key_path, SigningKey.generate().encode().hex().encode() + b"\n")
        created = True
    path = home / CONFIG_FILE
    raw: dict[str, Any] = {}
    if path.exists():
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    raw.setdefault("identity", {})["name"] = name
    hub = raw.setdefault("hub", {})
    if host is not None:
        hub["host"] = host
    if port is not None:
        hub["port"] = port
    if hub_url is not None:
        hub["url"] = hub_url
    write_private(path, tomli_w.dumps(raw).encode())
    return load_config(home), created


def load_signing_key(home: Path) -> SigningKey:
    path = home / KEY_FILE
    try:
        seed = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no identity in {home}: run `hub init --name NAME` first"
        ) from None
    return SigningKey(seed)
