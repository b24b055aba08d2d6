"""The connector's settings: the ``[telegram]`` table of the config, overridden by environment
variables (which is how tests and containers pass the token).

=====================  ===============================  ==========================================
config key             environment variable             meaning
=====================  ===============================  ==========================================
``token``              ``MESHHUB_TELEGRAM_TOKEN``       the bot token; without one the connector
                                                        stays idle
``base_url``           ``MESHHUB_TELEGRAM_BASE_URL``    Bot API base (``https://api.telegram.org/
                                                        bot``), for a self-hosted Bot API server
``base_file_url``      ``MESHHUB_TELEGRAM_BASE_FILE_    file download base
                       URL``
``mode``               ``MESHHUB_TELEGRAM_MODE``        ``polling`` (default) or ``webhook``
``webhook_url``        ``MESHHUB_TELEGRAM_WEBHOOK_URL`` public URL Telegram posts to; its path
                                                        (under ``/telegram/``) is served by the hub
``webhook_secret``     ``MESHHUB_TELEGRAM_WEBHOOK_      checked against the
                       SECRET``                         ``X-Telegram-Bot-Api-Secret-Token`` header;
                                                        generated and kept if not set
``poll_timeout``       ``MESHHUB_TELEGRAM_POLL_TIMEOUT`` long-poll seconds (default 25)
``max_file_bytes``                                      largest file taken from a chat (20 MB)
``chat_rate``,                                          Bot API calls per second to one chat (1),
``chat_burst``                                          and how many may go at once (10):
                                                        Telegram's limits; a self-hosted Bot API
                                                        server may allow more
``bot_rate``,                                           calls per second for the whole bot (30)
``bot_burst``                                           and at once (30)
=====================  ===============================  ==========================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from meshhub.config import Config

IDLE_REASON = "no bot token: set MESHHUB_TELEGRAM_TOKEN or [telegram] token"
WEBHOOK_PREFIX = "/telegram/"
DEFAULT_WEBHOOK_PATH = "/telegram/webhook"

_ENV = {
    "token": "MESHHUB_TELEGRAM_TOKEN",
    "base_url": "MESHHUB_TELEGRAM_BASE_URL",
    "base_file_url": "MESHHUB_TELEGRAM_BASE_FILE_URL",
    "mode": "MESHHUB_TELEGRAM_MODE",
    "webhook_url": "MESHHUB_TELEGRAM_WEBHOOK_URL",
    "webhook_secret": "MESHHUB_TELEGRAM_WEBHOOK_SECRET",
    "poll_timeout": "MESHHUB_TELEGRAM_POLL_TIMEOUT",
}


class SettingsError(ValueError):
    """A setting a person has to fix; the message says which and how."""


@dataclass
class TelegramSettings:
    token: str | None = None
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    mode: str = "polling"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    poll_timeout: float = 25.0
    max_file_bytes: int = 20 * 1024 * 1024
    chat_rate: float = 1.0
    chat_burst: float = 10.0
    bot_rate: float = 30.0
    bot_burst: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    @property
    def webhook_path(self) -> str:
        if not self.webhook_url:
            return DEFAULT_WEBHOOK_PATH
        return urlparse(self.webhook_url).path or DEFAULT_WEBHOOK_PATH

    @classmethod
    def load(cls, config: Config) -> TelegramSettings:
        raw: dict[str, Any] = dict(config.section("telegram"))
        for key, var in _ENV.items():
            if os.environ.get(var):
                raw[key] = os.environ[var]
        settings = cls(
            token=raw.get("token") or None,
            base_url=raw.get("base_url") or cls.base_url,
            base_file_url=raw.get("base_file_url") or cls.base_file_url,
            mode=str(raw.get("mode") or "polling").lower(),
            webhook_url=raw.get("webhook_url") or None,
            webhook_secret=raw.get("webhook_secret") or None,
            poll_timeout=float(raw.get("poll_timeout", 25.0)),
            max_file_bytes=int(raw.get("max_file_bytes", cls.max_file_bytes)),
            **{key: _positive(raw, key, getattr(cls, key))
               for key in ("chat_rate", "chat_burst", "bot_rate", "bot_burst")},
        )
        if settings.mode not in ("polling", "webhook"):
            raise SettingsError(
                f"[telegram] mode must be polling or webhook, not {settings.mode!r}")
        if settings.mode == "webhook":
            if not settings.webhook_url:
                raise SettingsError("[telegram] mode = webhook needs webhook_url (the public URL "
                                    "Telegram posts to, e.g. https://hub.example/telegram/webhook)")
            if not settings.webhook_path.startswith(WEBHOOK_PREFIX):
                raise SettingsError(f"[telegram] webhook_url's path must start with "
                                    f"{WEBHOOK_PREFIX} (the hub serves it there)")
        return settings


def _positive(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise SettingsError(f"[telegram] {key} must be a number above 0, not {value!r}")
    return float(value)
