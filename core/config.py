"""Configuration: ``<MESHHUB_HOME>/config.toml`` (mode 0600), overridden by ``MESHHUB_*`` vars.

``MESHHUB_HOME`` defaults to ``~/.meshhub``. The same file serves the hub (where it listens, its
timings, which plugins are off) and the CLI (who I am, where the hub is). A connector keeps its own
table (``[telegram]``, ``[slack]``...) which it reads from :attr:`Config.raw`.

A setting that cannot be used (a port that is not a number, a file that is not TOML, a hub URL
that is not one) raises :class:`ConfigError`, whose message names where the setting came from.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from nacl.signing import SigningKey

from .local import home_dir

DEFAULT_PORT = 7420
KEY_FILE = "identity.key"
CONFIG_FILE = "config.toml"
PID_FILE = "hub.pid"
MIN_OUTBOUND = 256 * 1024  # outbound_bytes: room for a few of the largest messages
LOCK_PATIENCE = 0.5  # how long a starting hub waits out a lookup holding hub.pid's lock

# [hub] setting -> (its environment variable, its type)
_NUMBERS: dict[str, tuple[str, type[int] | type[float]]] = {
    "port": ("MESHHUB_PORT", int),
    "lease_seconds": ("MESHHUB_LEASE_SECONDS", float),
    "ttl_seconds": ("MESHHUB_TTL_SECONDS", float),
    "ping_interval": ("MESHHUB_PING_INTERVAL", float),
    "pong_timeout": ("MESHHUB_PONG_TIMEOUT", float),
    "grace_seconds": ("MESHHUB_GRACE_SECONDS", float),
    "max_body_bytes": ("MESHHUB_MAX_BODY_BYTES", int),
    "outbound_bytes": ("MESHHUB_OUTBOUND_BYTES", int),
    "stall_seconds": ("MESHHUB_STALL_SECONDS", float),
    "send_rate": ("MESHHUB_SEND_RATE", float),
    "send_burst": ("MESHHUB_SEND_BURST", int),
    "action_rate": ("MESHHUB_ACTION_RATE", float),
    "action_burst": ("MESHHUB_ACTION_BURST", int),
    "member_quota_bytes": ("MESHHUB_MEMBER_QUOTA_BYTES", int),
    "total_quota_bytes": ("MESHHUB_TOTAL_QUOTA_BYTES", int),
    "max_member_connections": ("MESHHUB_MAX_MEMBER_CONNECTIONS", int),
    "max_ws_connections": ("MESHHUB_MAX_WS_CONNECTIONS", int),
    "max_connections": ("MESHHUB_MAX_CONNECTIONS", int),
    "header_timeout": ("MESHHUB_HEADER_TIMEOUT", float),
    "hello_timeout": ("MESHHUB_HELLO_TIMEOUT", float),
}
_LIMITS = frozenset({  # meshhub.limits: 0 is no limit, below 0 means nothing
    "send_rate", "send_burst", "action_rate", "action_burst", "member_quota_bytes",
    "total_quota_bytes", "max_member_connections", "max_ws_connections", "max_connections",
    "header_timeout", "hello_timeout"})
HUB_URL_FORMS = "http://HOST:PORT, https://HOST[:PORT] or HOST:PORT"
_URL_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


class ConfigError(ValueError):
    """A setting that cannot be used; the message says which one, where it came from, and
    what it should be."""


def normalize_hub_url(text: str) -> str:
    """The one spelling of a hub URL: ``http(s)://host[:port][/path]``, without a trailing slash.

    ``HOST:PORT`` without a scheme means ``http://HOST:PORT``; ``ws://`` and ``wss://`` are
    taken as ``http://`` and ``https://`` (a trailing ``/ws`` is dropped). Anything else that
    cannot name a hub (no host, no or a bad port, a path alone, another scheme, a query) raises
    :class:`ConfigError`.
    """
    import yarl  # parsing URLs is yarl's job; it loads only when a URL is given

    value = text.strip()
    if not value or any(c.isspace() for c in value):
        raise ConfigError(f"{text!r} is not a hub URL; expected {HUB_URL_FORMS}")
    bare = "://" not in value
    try:
        url = yarl.URL("http://" + value if bare else value)
    except ValueError as exc:
        reason = str(exc).removeprefix("Invalid URL: ")
        raise ConfigError(f"{text!r} is not a hub URL ({reason}); expected {HUB_URL_FORMS}"
                          ) from None
    scheme = _URL_SCHEMES.get(url.scheme.lower())
    if scheme is None:
        raise ConfigError(f"{text!r} is not a hub URL: it must start with http:// or https:// "
                          f"(or be HOST:PORT); expected {HUB_URL_FORMS}")
    if not url.host:
        raise ConfigError(f"{text!r} is not a hub URL: it names no host; expected {HUB_URL_FORMS}")
    if bare and url.explicit_port is None:
        host = f"[{url.host}]" if ":" in url.host else url.host
        raise ConfigError(f"{text!r} is not a hub URL: without a scheme it needs a port, e.g. "
                          f"{host}:{DEFAULT_PORT}; expected {HUB_URL_FORMS}")
    if url.explicit_port == 0:
        raise ConfigError(f"{text!r} is not a hub URL: port 0 names no hub; ports are 1-65535")
    if url.user is not None or url.password is not None or url.query_string or url.fragment:
        raise ConfigError(f"{text!r} is not a hub URL: it has no user name, query or fragment; "
                          f"expected {HUB_URL_FORMS}")
    path = url.path.rstrip("/")
    if url.scheme.lower() in ("ws", "wss"):
        path = path.removesuffix("/ws")
    return f"{scheme}://{url.raw_authority}{path}"


def running_hub(home: Path) -> tuple[int | None, str | None] | None:
    """``(pid, url)`` of the hub started from ``home`` while it runs, else None.

    A hub holds a lock on its ``hub.pid`` for as long as it runs (:class:`HubLock`), so a file
    left by a hub that died, or a pid the system gave to another process since, never counts.
    ``pid`` is None for a moment while a starting hub writes the file; ``url`` is None until it
    listens.
    """
    try:
        fd = os.open(home / PID_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: the hub runs
        except OSError:
            return None  # a file system without locks: no hub can hold one there either
        else:
            return None  # nobody holds it: left behind
        fields = os.read(fd, 4096).decode(errors="replace").split()
    finally:
        os.close(fd)
    pid = int(fields[0]) if fields and fields[0].isdigit() else None
    try:
        return pid, normalize_hub_url(fields[1])
    except (ConfigError, IndexError):
        return pid, None


class HubLock:
    """The running hub's claim on its home: ``hub.pid``, locked for the life of the process,
    holding ``PID`` and then ``PID URL``. Two hubs cannot run from one home."""

    def __init__(self, home: Path) -> None:
        self.path = home / PID_FILE
        deadline = time.monotonic() + LOCK_PATIENCE
        while True:
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self.fd)
                if time.monotonic() < deadline:  # a lookup holds it for a moment: wait it out
                    time.sleep(0.02)
                    continue
                running = running_hub(home)
                pid = f" (pid {running[0]})" if running and running[0] else ""
                raise ConfigError(f"a hub is already running from {home}{pid}; `hub stop` "
                                  "first") from None
            except OSError as exc:  # a file system without locks
                os.close(self.fd)
                raise ConfigError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            if self._still_the_file():
                break
            os.close(self.fd)  # a stopping hub removed it under us: lock the new one

        self.write("")

    def _still_the_file(self) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(self.fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def write(self, url: str) -> None:
        """Record this process, and the URL it listens on once it does."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()} {url}".strip().encode() + b"\n", 0)

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)  # and with it the lock


@dataclass
class Config:
    home: Path
    name: str = ""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    hub_url: str | None = None  # [hub] url: where this home's CLI finds the hub
    explicit_url: str | None = None  # --hub or MESHHUB_URL: wins over everything (see url)
    lease_seconds: float = 30.0
    ttl_seconds: float = 7 * 86400.0
    ping_interval: float = 30.0
    pong_timeout: float = 75.0
    grace_seconds: float = 90.0
    max_body_bytes: int = 64 * 1024
    outbound_bytes: int = 4 * 1024 * 1024  # per connection: frames queued but not yet written
    stall_seconds: float = 60.0  # a connection whose write waits this long is cut
    # limits under abuse (meshhub.limits); 0 is no limit
    send_rate: float = 30.0  # sends a second per member, after a burst of send_burst
    send_burst: int = 300
    action_rate: float = 30.0  # other actions a second per member, after action_burst
    action_burst: int = 300
    member_quota_bytes: int = 1 << 30  # message bodies and uploaded files, per member
    total_quota_bytes: int = 10 << 30
    max_member_connections: int = 100  # WebSockets per member
    max_ws_connections: int = 8000
    max_connections: int = 10000  # open TCP and local-socket connections of every kind
    header_timeout: float = 20.0  # a new connection's first request head must arrive by then
    hello_timeout: float = 15.0  # a WebSocket must be admitted (its hello) by then
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
        return self.home / PID_FILE

    @property
    def log_path(self) -> Path:
        return self.home / "hub.log"

    @property
    def url(self) -> str:
        """The hub's HTTP base URL as clients should use it, from the first that is set:
        ``--hub`` or ``MESHHUB_URL`` (:attr:`explicit_url`), the hub this home started (while
        it runs), ``[hub] url``, then ``http://<host>:<port>``."""
        if self.explicit_url:
            return normalize_hub_url(self.explicit_url)
        running = running_hub(self.home)
        if running is not None and running[1] is not None:
            return running[1]
        if self.hub_url:
            return normalize_hub_url(self.hub_url)
        return self.listen_url

    @property
    def listen_url(self) -> str:
        """``http://<host>:<port>`` of the settings, as a client on this machine dials it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def section(self, name: str) -> dict[str, Any]:
        """A plugin's own table, e.g. ``[telegram]``."""
        value = self.raw.get(name, {})
        return value if isinstance(value, dict) else {}


def load_config(home: Path | None = None) -> Config:
    """The settings of ``home``: its ``config.toml``, then the ``MESHHUB_*`` variables."""
    home = home or home_dir()
    path = home / CONFIG_FILE
    raw = _read_toml(path)
    hub = _table(raw, "hub", path)
    identity = _table(raw, "identity", path)
    plugins = _table(raw, "plugins", path)
    cfg = Config(
        home=home,
        name=str(identity.get("name", "")),
        host=str(hub.get("host", "127.0.0.1")),
        sqlite_synchronous=str(hub.get("sqlite_synchronous", "FULL")).upper(),
        disabled_plugins=_names(plugins.get("disabled", [])),
        allowed_hosts=_names(hub.get("allowed_hosts", [])),
        allowed_origins=_names(hub.get("allowed_origins", [])),
        raw=raw,
    )
    for attr, (var, kind) in _NUMBERS.items():
        if attr in hub:
            setattr(cfg, attr, _number(attr, hub[attr], kind, f"{path}: [hub] {attr}"))
        if os.environ.get(var):
            setattr(cfg, attr, _number(attr, os.environ[var], kind, var))
    if hub.get("url") is not None:
        cfg.hub_url = _url(hub["url"], f"{path}: [hub] url")
    if os.environ.get("MESHHUB_URL"):
        cfg.explicit_url = _url(os.environ["MESHHUB_URL"], "MESHHUB_URL")
    if os.environ.get("MESHHUB_HOST"):
        cfg.host = os.environ["MESHHUB_HOST"]
    for var, attr in (("MESHHUB_ALLOWED_HOSTS", "allowed_hosts"),
                      ("MESHHUB_ALLOWED_ORIGINS", "allowed_origins")):
        if os.environ.get(var):
            setattr(cfg, attr, _names(os.environ[var]))
    if os.environ.get("MESHHUB_DISABLE_PLUGINS"):
        cfg.disabled_plugins += _names(os.environ["MESHHUB_DISABLE_PLUGINS"])
    return cfg


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}; fix or remove it") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _table(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table, not {value!r}")
    return value


def _number(attr: str, value: Any, kind: type[int] | type[float], where: str) -> int | float:
    """A number setting, checked: ``where`` names its source in the error."""
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ValueError(value)
        number = kind(value)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{where} must be {what}, not {value!r}") from None
    if attr == "port" and not 0 <= number <= 65535:
        raise ConfigError(f"{where} must be a port, 0-65535 (0 picks a free one), not {value!r}")
    if attr in _LIMITS and number < 0:
        raise ConfigError(f"{where} must be 0 (no limit) or more, not {value!r}")
    if attr == "outbound_bytes" and number < MIN_OUTBOUND:
        raise ConfigError(f"{where} must be at least {MIN_OUTBOUND} (a connection's queue "
                          f"holds at least one large message), not {value!r}")
    if attr == "stall_seconds" and number <= 0:
        raise ConfigError(f"{where} must be a number of seconds above 0, not {value!r}")
    return number


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a hub URL ({HUB_URL_FORMS}), not {value!r}")
    try:
        return normalize_hub_url(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _names(value: Any) -> list[str]:
    """A list setting, written as a TOML list or as one comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    items = items if isinstance(items, list) else [items]
    return [str(item).strip() for item in items or [] if str(item).strip()]


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (0600 from the moment it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def init_home(home: Path, name: str, *, host: str | None = None, port: int | None = None,
              hub_url: str | None = None) -> tuple[Config, bool]:
    """Create the identity key and config if missing; returns (config, created). A bad
    ``hub_url`` or an unreadable config raises :class:`ConfigError` before anything is
    written."""
    hub_url = normalize_hub_url(hub_url) if hub_url is not None else None
    if home.exists() and not home.is_dir():
        raise ConfigError(f"MESHHUB_HOME {home} is a file, not a directory")
    path = home / CONFIG_FILE
    raw = _read_toml(path)
    _table(raw, "identity", path)
    _table(raw, "hub", path)
    try:
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
    except OSError as exc:
        raise ConfigError(f"cannot make MESHHUB_HOME {home}: {exc.strerror or exc}") from None
    created = False
    key_path = home / KEY_FILE
    if not key_path.exists():
        write_private(key_path, SigningKey.generate().encode().hex().encode() + b"\n")
        created = True
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
        return SigningKey(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no identity in {home}: run `hub init --name NAME` first"
        ) from None
    except (OSError, ValueError) as exc:  # unreadable, a directory, not 32 bytes of hex
        raise ConfigError(
            f"{path} is not an identity key ({exc.__class__.__name__}); restore it from a "
            "backup, or move it away and run `hub init --name NAME` for a new identity"
        ) from None
