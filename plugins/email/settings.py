"""The gateway's settings: the ``[email]`` table of the config, overridden by environment
variables (which is how containers and tests pass the secrets).

=========================  ==================================  ===================================
config key                 environment variable                meaning
=========================  ==================================  ===================================
``domain``                 ``MESHHUB_EMAIL_DOMAIN``            the mail domain the gateway answers
                                                               for; without one it is idle
``listen``                 ``MESHHUB_EMAIL_LISTEN``            ``host:port`` of the SMTP listener
                                                               (``127.0.0.1:2525``)
``relay``                  ``MESHHUB_EMAIL_RELAY``             ``host:port`` of the relay that
                                                               sends mail out; none: no mail out
``relay_user``             ``MESHHUB_EMAIL_RELAY_USER``        the relay's login
``relay_password``         ``MESHHUB_EMAIL_RELAY_PASSWORD``    and password
``relay_tls``              ``MESHHUB_EMAIL_RELAY_TLS``         ``starttls`` (default), ``tls`` or
                                                               ``none``
``relay_ca``               ``MESHHUB_EMAIL_RELAY_CA``          a PEM file of the CA to trust for
                                                               the relay (else the system's)
``from``                   ``MESHHUB_EMAIL_FROM``              the From address of mail out
                                                               (``meshhub@<domain>``)
``allow``                  ``MESHHUB_EMAIL_ALLOW``             addresses or ``@domain`` s let in
                                                               without pairing (comma-separated)
``trusted_authserv``       ``MESHHUB_EMAIL_TRUSTED_AUTHSERV``  the authserv-id of the MTA in front
                                                               of the gateway: its SPF/DKIM/DMARC
                                                               verdict must pass
``tls_cert``, ``tls_key``  ``MESHHUB_EMAIL_TLS_CERT``, _KEY    PEM files: the listener offers
                                                               STARTTLS
``auth_user``,             ``MESHHUB_EMAIL_AUTH_USER``,        when set, the listener wants SMTP
``auth_password``          ``MESHHUB_EMAIL_AUTH_PASSWORD``     AUTH (over TLS) before any mail
``digest_minutes``         ``MESHHUB_EMAIL_DIGEST_MINUTES``    0 (default): a mail per message;
                                                               N: one mail per person every N min
``max_message_bytes``                                          largest mail taken (10 MB)
``max_file_bytes``                                             largest attachment taken (the file
                                                               store's limit)
``relay_timeout``                                              seconds per relay conversation (30)
``max_sessions``                                               SMTP clients served at once (100)
``max_sessions_per_address``                                   of them from one address (20)
=========================  ==================================  ===================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshhub.config import Config

IDLE_REASON = "no mail domain: set MESHHUB_EMAIL_DOMAIN or [email] domain"
DEFAULT_LISTEN = "127.0.0.1:2525"
TLS_MODES = ("starttls", "tls", "none")

_ENV = {
    "domain": "MESHHUB_EMAIL_DOMAIN",
    "listen": "MESHHUB_EMAIL_LISTEN",
    "relay": "MESHHUB_EMAIL_RELAY",
    "relay_user": "MESHHUB_EMAIL_RELAY_USER",
    "relay_password": "MESHHUB_EMAIL_RELAY_PASSWORD",
    "relay_tls": "MESHHUB_EMAIL_RELAY_TLS",
    "relay_ca": "MESHHUB_EMAIL_RELAY_CA",
    "from": "MESHHUB_EMAIL_FROM",
    "allow": "MESHHUB_EMAIL_ALLOW",
    "trusted_authserv": "MESHHUB_EMAIL_TRUSTED_AUTHSERV",
    "tls_cert": "MESHHUB_EMAIL_TLS_CERT",
    "tls_key": "MESHHUB_EMAIL_TLS_KEY",
    "auth_user": "MESHHUB_EMAIL_AUTH_USER",
    "auth_password": "MESHHUB_EMAIL_AUTH_PASSWORD",
    "digest_minutes": "MESHHUB_EMAIL_DIGEST_MINUTES",
}


class SettingsError(ValueError):
    """A setting a person has to fix; the message says which and how."""


def host_port(value: str, what: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``, or a bare host with ``default_port``)."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise SettingsError(f"[email] {what} must be host:port, not {value!r}") from None
    if not host or not 0 < port < 65536:
        raise SettingsError(f"[email] {what} must be host:port, not {value!r}")
    return host, port


def _number(raw: dict[str, Any], key: str, kind: type[int] | type[float],
            default: float) -> Any:
    value = raw.get(key)
    try:
        return kind(default if value is None or value == "" else value)
    except (TypeError, ValueError):
        raise SettingsError(f"[email] {key} must be a number, not {raw.get(key)!r}") from None


def _allow_list(value: Any) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return frozenset(str(item).strip().lower() for item in items if str(item).strip())


@dataclass
class EmailSettings:
    domain: str | None = None
    listen: str = DEFAULT_LISTEN
    relay: str | None = None
    relay_user: str | None = None
    relay_password: str | None = field(default=None, repr=False)  # secrets stay out of a repr
    relay_tls: str = "starttls"
    relay_ca: Path | None = None
    from_address: str = ""
    allow: frozenset[str] = frozenset()
    trusted_authserv: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_user: str | None = None
    auth_password: str | None = field(default=None, repr=False)
    digest_minutes: float = 0.0
    max_message_bytes: int = 10 * 1024 * 1024
    max_file_bytes: int = 20 * 1024 * 1024
    relay_timeout: float = 30.0
    max_sessions: int = 100
    max_sessions_per_address: int = 20

    @property
    def enabled(self) -> bool:
        return bool(self.domain)

    @property
    def listen_at(self) -> tuple[str, int]:
        return host_port(self.listen, "listen", 2525)

    @property
    def relay_at(self) -> tuple[str, int] | None:
        if not self.relay:
            return None
        return host_port(self.relay, "relay", 465 if self.relay_tls == "tls" else 587)

    def allows(self, address: str) -> bool:
        """Whether ``address`` is let in by the allow-list, without pairing."""
        address = address.lower()
        return address in self.allow or "@" + address.rpartition("@")[2] in self.allow

    @classmethod
    def load(cls, config: Config) -> EmailSettings:
        raw: dict[str, Any] = dict(config.section("email"))
        for key, var in _ENV.items():
            if os.environ.get(var):
                raw[key] = os.environ[var]
        domain = str(raw.get("domain") or "").strip().lower().rstrip(".") or None
        settings = cls(
            domain=domain,
            listen=str(raw.get("listen") or DEFAULT_LISTEN),
            relay=str(raw.get("relay") or "").strip() or None,
            relay_user=raw.get("relay_user") or None,
            relay_password=raw.get("relay_password") or None,
            relay_tls=str(raw.get("relay_tls") or "starttls").lower(),
            relay_ca=Path(raw["relay_ca"]) if raw.get("relay_ca") else None,
            from_address=str(raw.get("from") or (f"meshhub@{domain}" if domain else "")).strip(),
            allow=_allow_list(raw.get("allow")),
            trusted_authserv=str(raw.get("trusted_authserv") or "").strip() or None,
            tls_cert=Path(raw["tls_cert"]) if raw.get("tls_cert") else None,
            tls_key=Path(raw["tls_key"]) if raw.get("tls_key") else None,
            auth_user=raw.get("auth_user") or None,
            auth_password=raw.get("auth_password") or None,
            digest_minutes=_number(raw, "digest_minutes", float, 0),
            max_message_bytes=_number(raw, "max_message_bytes", int, cls.max_message_bytes),
            max_file_bytes=_number(raw, "max_file_bytes", int, cls.max_file_bytes),
            relay_timeout=_number(raw, "relay_timeout", float, cls.relay_timeout),
            max_sessions=_number(raw, "max_sessions", int, cls.max_sessions),
            max_sessions_per_address=_number(raw, "max_sessions_per_address", int,
                                             cls.max_sessions_per_address),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.relay_tls not in TLS_MODES:
            raise SettingsError(f"[email] relay_tls must be one of {', '.join(TLS_MODES)}, "
                                f"not {self.relay_tls!r}")
        if not self.enabled:
            return
        self.listen_at  # noqa: B018 (raises SettingsError when unreadable)
        self.relay_at  # noqa: B018
        if "@" not in self.from_address:
            raise SettingsError(f"[email] from must be an address, not {self.from_address!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("[email] STARTTLS needs both tls_cert and tls_key (PEM files)")
        if bool(self.auth_user) != bool(self.auth_password):
            raise SettingsError("[email] SMTP AUTH needs both auth_user and auth_password")
        if self.auth_user and not self.tls_cert:
            raise SettingsError("[email] auth_user needs tls_cert and tls_key: passwords are "
                                "only taken over TLS")
        if bool(self.relay_user) != bool(self.relay_password):
            raise SettingsError("[email] the relay's login needs both relay_user and "
                                "relay_password")
        if self.digest_minutes < 0:
            raise SettingsError("[email] digest_minutes must be 0 (off) or more")
        if self.max_sessions < 1 or self.max_sessions_per_address < 1:
            raise SettingsError("[email] max_sessions and max_sessions_per_address must be at "
                                "least 1")
        if self.max_message_bytes < 1024:
            raise SettingsError("[email] max_message_bytes must be at least 1024")
