"""Who may reach the hub, before any handler runs, and the secrets that let people in.

* :func:`check_request` (run by the server's middleware): ``Host`` and ``Origin`` on every
  request but ``/health``. ``Host`` must be a name of the hub (loopback, the bound address, the
  machine's addresses on a wildcard bind, or a name configured for a public deployment in
  ``[hub] allowed_hosts``); this stops DNS rebinding. ``Origin`` must be absent (programs), the
  hub's own origin, or one of ``[hub] allowed_origins``; this stops a web page the user visits
  from talking to the hub. Anything else gets 403 with the reason.
* :func:`check_audience`: a signed hello names the hub it is for, so it cannot be relayed.
* The local socket: a Unix domain socket in a 0700 directory of the hub's OS user, one per port.
  The CLI and ``hub mcp`` use it whenever the hub is on this machine; the hub admits a process
  that connects through it (and whose peer credentials show the same user) without an invite.
  A browser cannot open a Unix socket and another OS user cannot enter the directory.
* Invite codes and bearer tokens: random, shown once, stored only as SHA-256 hashes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import logging
import os
import secrets
import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

from yarl import URL

from .errors import AuthFailed, Forbidden
from .local import claim_socket, private_dir, socket_dir, socket_dirs

if TYPE_CHECKING:
    from aiohttp import web

    from .config import Config
    from .hub import Hub

log = logging.getLogger(__name__)

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
OPEN_PATHS = frozenset({"/health"})
CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud, typed by hand
TOKEN_PREFIX = "mh_"


# -- Host and Origin ----------------------------------------------------------------------------
def host_name(value: str) -> str:
    """The host part of a ``Host`` header or ``host:port``, lower-case, without the port or
    IPv6 brackets (the port is never compared). Anything after the brackets but a port stays,
    so ``[::1].evil.example`` is no loopback address."""
    value = value.strip().lower()
    if value.startswith("["):
        address, _, rest = value[1:].partition("]")
        return address if not rest or rest.startswith(":") and rest[1:].isdigit() else value
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value  # a bare IPv6 address, or a name without a port


def is_loopback(host: str) -> bool:
    host = host_name(host)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_addresses: tuple[float, frozenset[str]] = (0.0, frozenset())


def own_addresses() -> frozenset[str]:
    """The machine's own IP addresses (re-read at most once a minute)."""
    global _addresses
    if time.monotonic() - _addresses[0] > 60:
        import psutil

        found = {a.address.split("%", 1)[0].lower()
                 for addrs in psutil.net_if_addrs().values() for a in addrs
                 if a.family in (socket.AF_INET, socket.AF_INET6)}
        _addresses = (time.monotonic(), frozenset(found))
    return _addresses[1]


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, the way browsers write ``Origin``."""
    try:
        parsed = URL(url.strip())
        host, scheme = parsed.host, parsed.scheme
    except (ValueError, TypeError):
        host = scheme = None
    if not scheme or not host:
        raise ValueError(f"{url!r} is not an origin: write it as https://name[:port]")
    origin = f"{scheme}://{host}"
    if not parsed.is_default_port():
        origin += f":{parsed.port}"
    return origin.lower()


def check_settings(cfg: Config) -> None:
    """Refuse settings the checks cannot use, with one line saying which (at start-up)."""
    for origin in cfg.allowed_origins:
        try:
            origin_of(origin)
        except ValueError as exc:
            raise ValueError(f"[hub] allowed_origins / MESHHUB_ALLOWED_ORIGINS: {exc}") from None
    for host in cfg.allowed_hosts:
        if not host_name(host) or "/" in host:
            raise ValueError(f"[hub] allowed_hosts / MESHHUB_ALLOWED_HOSTS: {host!r} is not a "
                             "host name (write hub.example.com, without a scheme)")


@functools.lru_cache(maxsize=8)
def _origins(configured: tuple[str, ...]) -> frozenset[str]:
    out = set()
    for origin in configured:
        with contextlib.suppress(ValueError):  # refused at start-up by check_settings
            out.add(origin_of(origin))
    return frozenset(out)


def public_names(hub: Hub) -> set[str]:
    """Names the hub is served under beyond this machine: configured (``allowed_hosts``), or
    added by plugins. (Not ``[hub] url``: that is where this home's CLI finds a hub, which may
    be another one.)"""
    return {host_name(h) for h in hub.config.allowed_hosts} | hub.extra_hosts


def is_local_name(hub: Hub, host: str) -> bool:
    """A name of this machine the hub listens on: loopback, its bound address, or (when bound
    to every address) one of the machine's own addresses."""
    bound = hub.config.host
    if is_loopback(host) or host == host_name(bound):
        return True
    return bound in WILDCARD_HOSTS and host in own_addresses()


def is_hub_name(hub: Hub, host: str) -> bool:
    return host in public_names(hub) or is_local_name(hub, host)


def is_own_origin(request: web.Request, origin: str) -> bool:
    """``origin`` (as :func:`origin_of` writes it) is the one the request was sent to: the
    hub's own page, whatever name or port the browser used."""
    own, raw_host = URL(origin), request.headers.get("Host", "").strip().lower()
    return own.raw_authority == raw_host or (own.is_default_port() and own.host == raw_host)


def check_request(hub: Hub, request: web.Request) -> Forbidden | None:
    """Why this request may not reach a handler, or ``None`` when it may."""
    raw_host = request.headers.get("Host", "")
    if not is_hub_name(hub, host_name(raw_host)):
        return Forbidden(
            f"Host {raw_host[:100]!r} is not a name of this hub; add it to [hub] allowed_hosts "
            "(MESHHUB_ALLOWED_HOSTS) if the hub is served under that name",
            code="forbidden_host")
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    try:
        normalized = origin_of(origin)
    except ValueError:
        return Forbidden(f"Origin {origin[:100]!r} may not use this hub",
                         code="forbidden_origin")
    if is_own_origin(request, normalized):
        return None  # same origin: the hub's own page
    if normalized in _origins(tuple(hub.config.allowed_origins)):
        return None
    return Forbidden(f"Origin {origin[:100]!r} may not use this hub; only the hub's own pages "
                     "and [hub] allowed_origins (MESHHUB_ALLOWED_ORIGINS) may",
                     code="forbidden_origin")


def arrived_directly(request: web.Request) -> bool:
    """The connection came from this machine itself (the local socket, or a loopback peer
    address) and not through a proxy (no ``Forwarded``/``X-Forwarded-For``)."""
    if "Forwarded" in request.headers or "X-Forwarded-For" in request.headers:
        return False
    return _unix_socket(request) is not None or is_loopback(request.remote or "")


def check_audience(hub: Hub, audience: object, *, direct: bool) -> None:
    """A signed hello names the hub it is meant for (``host:port`` as the client dialled it),
    so a hello given to another hub (one the member joined) cannot be relayed here.

    The host must be a name of this hub, like ``Host``; the port is not compared, since proxies
    and SSH tunnels put the hub on other ports. A loopback name only counts for a connection
    that arrived directly from this machine (``direct``, see :func:`arrived_directly`): a
    member who reaches a hostile hub through ``localhost`` (a tunnel) signs for a loopback
    name, which that hub must not be able to replay to this one over the network."""
    if not isinstance(audience, str) or not audience:
        raise AuthFailed("a signed hello names its hub: audience is the host:port you dialled",
                         code="malformed")
    host = host_name(audience)
    if host in public_names(hub) or (is_local_name(hub, host) and (direct or not
                                                                    is_loopback(host))):
        return
    raise AuthFailed(f"this hello was signed for {audience[:100]!r}, not for this hub (if the "
                     "hub is served under that name, add it to [hub] allowed_hosts)",
                     code="wrong_hub")


# -- the local socket ---------------------------------------------------------------------------
def socket_path(port: int) -> Path:
    return socket_dir() / f"hub-{port}.sock"


def prepare_socket(port: int) -> Path | None:
    """Create the socket directory if needed and clear a stale socket; ``None`` (logged) when
    the directory is not safe to use (someone else's, or open to others) or another hub of this
    user already serves the socket (same port on another address)."""
    if not hasattr(socket, "AF_UNIX"):
        return None
    path = socket_path(port)
    if (why := claim_socket(path)) is not None:
        log.warning("no local socket: %s", why)
        return None
    return path


def local_socket_for(url: str) -> Path | None:
    """The local socket of the hub at ``url`` when it runs on this machine as this user."""
    if not hasattr(socket, "AF_UNIX"):
        return None
    parsed = URL(url)
    if not parsed.host or not is_loopback(parsed.host) or parsed.port is None:
        return None
    for directory in socket_dirs():
        path = directory / f"hub-{parsed.port}.sock"
        if private_dir(directory) and path.is_socket():
            return path
    return None


def _unix_socket(request: web.Request) -> socket.socket | None:
    """The request's socket when it came through a Unix socket (the local socket)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock if sock is not None and sock.family == getattr(socket, "AF_UNIX", None) else None


def is_local_same_user(request: web.Request) -> bool:
    """The request came through the local socket from a process of the hub's own OS user."""
    sock = _unix_socket(request)
    if sock is None:
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
