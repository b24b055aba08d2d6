"""The connector's settings: the ``[slack]`` table of the config, overridden by environment
variables (which is how containers and tests pass the secrets).

==========================  ================================  ====================================
config key                  environment variable              meaning
==========================  ================================  ====================================
``bot_token``               ``MESHHUB_SLACK_BOT_TOKEN``       the app's bot token (``xoxb-``);
                                                              without one the connector is idle
``signing_secret``          ``MESHHUB_SLACK_SIGNING_SECRET``  verifies every HTTP request Slack
                                                              makes (Events API mode)
``app_token``               ``MESHHUB_SLACK_APP_TOKEN``       app-level token (``xapp-``), for
                                                              Socket Mode
``mode``                    ``MESHHUB_SLACK_MODE``            ``events`` (default: Slack posts to
                                                              the hub) or ``socket``
``api_url``                 ``MESHHUB_SLACK_API_URL``         Web API base
                                                              (``https://slack.com/api/``)
``allow``                   ``MESHHUB_SLACK_ALLOW``           ``TEAM`` or ``TEAM/USER`` ids let
                                                              in without pairing (comma-separated)
``public_url``              ``MESHHUB_SLACK_PUBLIC_URL``      the Request URL configured at Slack;
                                                              its host is accepted as a hub name
``events_path``                                               where events arrive
                                                              (``/slack/events``)
``interactivity_path``                                        where button presses arrive (same)
``commands_path``                                             where the slash command arrives
                                                              (same)
``command``                                                   the slash command's name (``/hub``)
``links``                                                     ``{channel id = "#conversation"}``:
                                                              channels linked at start
``max_file_bytes``                                            largest file taken from Slack (20 MB)
==========================  ================================  ====================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from meshhub.config import Config

IDLE_REASON = "no bot token: set MESHHUB_SLACK_BOT_TOKEN or [slack] bot_token"
PATH_PREFIX = "/slack/"
DEFAULT_PATH = "/slack/events"

_ENV = {
    "bot_token": "MESHHUB_SLACK_BOT_TOKEN",
    "signing_secret": "MESHHUB_SLACK_SIGNING_SECRET",
    "app_token": "MESHHUB_SLACK_APP_TOKEN",
    "mode": "MESHHUB_SLACK_MODE",
    "api_url": "MESHHUB_SLACK_API_URL",
    "allow": "MESHHUB_SLACK_ALLOW",
    "public_url": "MESHHUB_SLACK_PUBLIC_URL",
}


class SettingsError(ValueError):
    """A setting a person has to fix; the message says which and how."""


def _allow_list(value: Any) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return frozenset(str(item).strip().upper() for item in items if str(item).strip())


@dataclass
class SlackSettings:
    bot_token: str | None = field(default=None, repr=False)  # secrets stay out of any repr
    signing_secret: str | None = field(default=None, repr=False)
    app_token: str | None = field(default=None, repr=False)
    mode: str = "events"
    api_url: str = "https://slack.com/api/"
    allow: frozenset[str] = frozenset()
    public_url: str | None = None
    events_path: str = DEFAULT_PATH
    interactivity_path: str = DEFAULT_PATH
    commands_path: str = DEFAULT_PATH
    command: str = "/hub"
    links: dict[str, str] = field(default_factory=dict)
    max_file_bytes: int = 20 * 1024 * 1024

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token)

    @property
    def paths(self) -> frozenset[str]:
        return frozenset((self.events_path, self.interactivity_path, self.commands_path))

    def allows(self, team: str, user: str, *, guest: bool = False) -> bool:
        """Whether ``team``/``user`` is let in by the allow-list, without pairing. A guest of
        the workspace (a restricted account) is let in only when named one by one."""
        named = f"{team}/{user}".upper() in self.allow
        return named or (not guest and team.upper() in self.allow)

    @classmethod
    def load(cls, config: Config) -> SlackSettings:
        raw: dict[str, Any] = dict(config.section("slack"))
        for key, var in _ENV.items():
            if os.environ.get(var):
                raw[key] = os.environ[var]
        settings = cls(
            bot_token=raw.get("bot_token") or None,
            signing_secret=raw.get("signing_secret") or None,
            app_token=raw.get("app_token") or None,
            mode=str(raw.get("mode") or "events").lower(),
            api_url=str(raw.get("api_url") or cls.api_url),
            allow=_allow_list(raw.get("allow")),
            public_url=raw.get("public_url") or None,
            events_path=str(raw.get("events_path") or DEFAULT_PATH),
            interactivity_path=str(raw.get("interactivity_path") or DEFAULT_PATH),
            commands_path=str(raw.get("commands_path") or DEFAULT_PATH),
            command=str(raw.get("command") or "/hub"),
            links={str(k): str(v) for k, v in dict(raw.get("links") or {}).items()},
            max_file_bytes=int(raw.get("max_file_bytes", cls.max_file_bytes)),
        )
        if not settings.api_url.endswith("/"):
            settings.api_url += "/"
        settings.check()
        return settings

    def check(self) -> None:
        if self.mode not in ("events", "socket"):
            raise SettingsError(f"[slack] mode must be events or socket, not {self.mode!r}")
        if not self.enabled:
            return
        if self.mode == "events" and not self.signing_secret:
            raise SettingsError("[slack] mode = events needs the app's signing secret "
                                "(MESHHUB_SLACK_SIGNING_SECRET), so forged requests are refused")
        if self.mode == "socket" and not self.app_token:
            raise SettingsError("[slack] mode = socket needs an app-level token "
                                "(MESHHUB_SLACK_APP_TOKEN, xapp-...) with connections:write")
        for path in self.paths:
            if not path.startswith(PATH_PREFIX):
                raise SettingsError(f"[slack] paths must start with {PATH_PREFIX} (the hub "
                                    f"serves them there), not {path!r}")
        if self.public_url and not urlparse(self.public_url).hostname:
            raise SettingsError(f"[slack] public_url {self.public_url!r} is not a URL")
