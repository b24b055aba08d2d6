"""Who may reach the hub, before any handler runs, and the secrets that let people in.

* :func:`request_guard`: an aiohttp middleware that checks ``Host`` and ``Origin`` on every request
  but ``/health``. ``Host`` must be a loopback name, the bound address, or a name configured for a
  public deployment (``[hub] allowed_hosts``); this stops DNS rebinding. ``Origin`` must be absent
  (programs), the hub's own origin, or one of ``[hub] allowed_origins``; this stops a web page the
  user visits from talking to the hub. Anything else gets 403 with the reason.
* The local socket: a Unix domain socket in a 0700 directory of the hub's OS user, one per port.
  The CLI and ``hub mcp`` use it whenever the hub is on this machine; the hub admits a process
  that connects through it (and whose peer credentials show the same user) without an invite.
  A browser cannot open a Unix socket and another OS user cannot enter the directory.
* Invite codes and bearer tokens: random, shown once, stored only as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import secrets
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from yarl import URL

from .errors import Forbidden

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
OPEN_PATHS = frozenset({"/health"})
CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud, typed by hand
TOKEN_PREFIX = "mh_"


# -- Host and Origin ----------------------------------------------------------------------------
def host_name(value: str) -> str:
    """The host part of a ``Host`` header or netloc, lower-case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value  # a bare IPv6 address, or a name without a port


def is_loopback(host: str) -> bool:
    host = host_name(host)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, the way browsers write ``Origin``."""
    parsed = URL(url.strip())
    if not parsed.scheme or not parsed.host:
        raise ValueError(f"{url!r} is not an origin (write it as https://name[:port])")
    origin = f"{parsed.scheme}://{parsed.host}"
    if not parsed.is_default_port():
        origin += f":{parsed.port}"
    return origin.lower()


def allowed_hosts(hub: Hub) -> set[str]:
    cfg = hub.config
    names = set(LOOPBACK_NAMES) | {host_name(h) for h in cfg.allowed_hosts}
    if cfg.host not in WILDCARD_HOSTS:
        names.add(host_name(cfg.host))
    if cfg.hub_url:
        names.add(host_name(URL(cfg.hub_url).host or ""))
    return names | hub.extra_hosts


def check_request(hub: Hub, request: web.Request) -> Forbidden | None:
    """Why this request may not reach a handler, or ``None`` when it may."""
    raw_host = request.headers.get("Host", "")
    host = host_name(raw_host)
    if host not in allowed_hosts(hub) and not (
        hub.config.host in WILDCARD_HOSTS and _is_ip(host)
    ):
        return Forbidden(
            f"Host {raw_host!r} is not a name of this hub; add it to [hub] allowed_hosts "
            "(MESHHUB_ALLOWED_HOSTS) if the hub is served under that name",
            code="forbidden_host")
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    try:
        normalized = origin_of(origin)
    except ValueError:
        return Forbidden(f"Origin {origin!r} may not use this hub", code="forbidden_origin")
    own = URL(normalized)
    if own.raw_authority == raw_host.strip().lower() or (
        own.is_default_port() and own.host == raw_host.strip().lower()
    ):
        return None  # same origin: the hub's own page
    if normalized in {origin_of(o) for o in hub.config.allowed_origins}:
        return None
    return Forbidden(f"Origin {origin!r} may not use this hub; only the hub's own pages and "
                     "[hub] allowed_origins (MESHHUB_ALLOWED_ORIGINS) may",
                     code="forbidden_origin")


@web.middleware
async def request_guard(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
    if request.path not in OPEN_PATHS:
        from .server import HUB_KEY

        refused = check_request(request.app[HUB_KEY], request)
        if refused is not None:
            return web.json_response({"error": refused.to_dict()}, status=refused.http_status)
    return await handler(request)


# -- the local socket ---------------------------------------------------------------------------
def socket_dir() -> Path:
    """Where the hubs of this OS user put their local sockets (one directory, mode 0700)."""
    if os.environ.get("MESHHUB_SOCKET_DIR"):
        return Path(os.environ["MESHHUB_SOCKET_DIR"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "meshhub"
    return Path("/tmp") / f"meshhub-{os.getuid()}"


def socket_path(port: int) -> Path:
    return socket_dir() / f"hub-{port}.sock"


def _private_dir(path: Path) -> bool:
    """The directory is ours, a real directory (not a link) and closed to everyone else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and info.st_mode & 0o077 == 0)


def prepare_socket(port: int) -> Path | None:
    """Create the socket directory if needed and clear a stale socket; ``None`` (logged) when
    the directory is not safe to use (someone else's, or open to others)."""
    if not hasattr(socket, "AF_UNIX"):
        return None
    path = socket_path(port)
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("no local socket: cannot create %s (%s)", directory, exc.strerror)
        return None
    if not _private_dir(directory):
        log.warning("no local socket: %s is not a private directory of this user (mode 0700)",
                    directory)
        return None
    if path.is_socket() or path.exists():
        path.unlink()  # left by a hub that was killed; only our own user can write here
    return path


def local_socket_for(url: str) -> Path | None:
    """The local socket of the hub at ``url`` when it runs on this machine as this user."""
    if not hasattr(socket, "AF_UNIX"):
        return None
    parsed = URL(url)
    if not parsed.host or not is_loopback(parsed.host) or parsed.port is None:
        return None
    path = socket_path(parsed.port)
    if not _private_dir(path.parent) or not path.is_socket():
        return None
    return path


def is_local_same_user(request: web.Request) -> bool:
    """The request came through the local socket from a process of the hub's own OS user."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != getattr(socket, "AF_UNIX", None):
        return False
    if not hasattr(socket, "SO_PEERCRED"):
        return True  # no peer credentials here (macOS): the 0700 directory is the guard
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


# -- invite codes and tokens -------------------------------------------------------------------
def new_invite_code() -> str:
    """``XXXX-XXXX-XXXX-XXXX``: 80 random bits, easy to read out and type."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(16))
    return "-".join(chars[i:i + 4] for i in range(0, 16, 4))


def invite_hash(code: str) -> str:
    """Codes compare without dashes, spaces or case."""
    normalized = "".join(c for c in code.upper() if c.isalnum())
    return hashlib.sha256(b"meshhub-invite:" + normalized.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A bearer token and its short public id (shown in ``hub token list``)."""
    token_id = secrets.token_hex(4)
    return f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}", token_id


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
