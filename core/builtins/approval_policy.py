"""The approval policy: who answers a member's requests, which tools need no one, and when
people are not disturbed. Read from the hub's config file, ``[approvals]``:

.. code-block:: toml

    [approvals]
    expire_after = 3600            # seconds a request waits for an answer (default 1 h)
    quiet_hours = "22:00-07:00"    # the hub's local time; non-urgent requests wait for the end
    timezone = "Europe/Berlin"     # optional: the zone quiet hours are read in

    [approvals.members."*"]        # everyone; a member's own table overrides it key by key
    auto_allow = ["Read", "Grep", "Glob"]

    [approvals.members.ann]
    approver = "@ops"              # default: the member itself (its phone, web page, terminal)
    auto_deny = ["WebFetch"]
    urgent = ["Bash"]              # tool requests quiet hours never hold
    sessions = { "ann-deploy" = "bob" }   # per session
    tools = { "Bash" = "@ops", "mcp__*" = "ann" }   # per tool (shell-style patterns)

A tool-permission request goes to, in this order: the approver its tool names, the one its
session names, the member's ``approver``, else the member itself. ``auto_allow`` and
``auto_deny`` settle a request at once without asking anyone (deny wins when both match).
Quiet hours are the approver's: a request that is not urgent, whose approvers are all in their
quiet hours, is held (its card is sent when the first of them ends; the asker sees
``held_until``). A permission request is urgent when its tool is in the asking member's
``urgent``, a question when the asker says so; approval requests are never held.

A setting of the wrong type stops the hub's start with a message naming it
(:class:`meshhub.config.ConfigError`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meshhub.config import ConfigError

DEFAULT_EXPIRE = 3600.0
_HOURS = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")
_LISTS = ("auto_allow", "auto_deny", "urgent")
_MAPS = ("sessions", "tools")
_KEYS = frozenset({"approver", "expire_after", "quiet_hours", *_LISTS, *_MAPS})


@dataclass(frozen=True)
class QuietHours:
    start: dt.time
    end: dt.time
    zone: ZoneInfo | None = None

    def ends_after(self, now: float) -> float | None:
        """When the quiet hours around ``now`` end (a timestamp), ``None`` outside them."""
        here = dt.datetime.fromtimestamp(now, self.zone or dt.datetime.now().astimezone().tzinfo)
        start = here.replace(hour=self.start.hour, minute=self.start.minute, second=0,
                             microsecond=0)
        end = here.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if self.start <= self.end:  # within one day: 13:00-14:00
            return end.timestamp() if start <= here < end else None
        if here >= start:  # overnight, before midnight: ends tomorrow
            return (end + dt.timedelta(days=1)).timestamp()
        return end.timestamp() if here < end else None

    def text(self) -> str:
        zone = f" ({self.zone.key})" if self.zone else ""
        return f"{self.start:%H:%M}-{self.end:%H:%M}{zone}"


@dataclass(frozen=True)
class Policy:
    """One member's effective policy."""

    approver: str | None = None  # None: the member itself
    expire_after: float = DEFAULT_EXPIRE
    quiet_hours: QuietHours | None = None
    auto_allow: tuple[str, ...] = ()
    auto_deny: tuple[str, ...] = ()
    urgent: tuple[str, ...] = ()
    sessions: dict[str, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)

    def automatic(self, tool: str) -> str | None:
        """``deny`` or ``allow`` when the tool is settled without asking, else ``None``."""
        if _matches(tool, self.auto_deny):
            return "deny"
        return "allow" if _matches(tool, self.auto_allow) else None

    def approver_for(self, tool: str | None, session: str | None) -> str | None:
        if tool is not None:
            for pattern, who in self.tools.items():
                if fnmatch.fnmatchcase(tool, pattern):
                    return who
        if session is not None and session in self.sessions:
            return self.sessions[session]
        return self.approver

    def is_urgent(self, tool: str | None) -> bool:
        return tool is not None and _matches(tool, self.urgent)

    def public(self, member: str) -> dict[str, Any]:
        return {
            "member": member, "approver": self.approver or member,
            "expire_after": self.expire_after,
            "quiet_hours": self.quiet_hours.text() if self.quiet_hours else None,
            "auto_allow": list(self.auto_allow), "auto_deny": list(self.auto_deny),
            "urgent": list(self.urgent), "sessions": dict(self.sessions),
            "tools": dict(self.tools),
        }


def _matches(tool: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(tool, p) for p in patterns)


class PolicyBook:
    """Every member's policy, from ``[approvals]`` of the hub's config."""

    def __init__(self, section: dict[str, Any]) -> None:
        where = "[approvals]"
        self.zone = _zone(section.get("timezone"), where)
        self.base = _layer(
            {k: v for k, v in section.items() if k not in ("members", "timezone")}, where,
            self.zone, allowed=frozenset({"expire_after", "quiet_hours"}))
        members = section.get("members", {})
        if not isinstance(members, dict):
            raise ConfigError(f"{where} members must be a table of member names")
        self.members = {name: _layer(value, f"[approvals.members.{name}]", self.zone)
                        for name, value in members.items()}

    def for_member(self, name: str) -> Policy:
        merged: dict[str, Any] = dict(self.base)
        for layer in (self.members.get("*"), self.members.get(name)):
            merged.update(layer or {})
        return Policy(**merged)


def _layer(raw: Any, where: str, zone: ZoneInfo | None,
           allowed: frozenset[str] = _KEYS) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(allowed))}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "approver":
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where} approver must be a name or @group")
            out[key] = value.strip()
        elif key == "expire_after":
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{where} expire_after must be a number of seconds above 0")
            out[key] = float(value)
        elif key == "quiet_hours":
            out[key] = _hours(value, where, zone)
        elif key in _LISTS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} {key} must be a list of tool names or patterns")
            out[key] = tuple(value)
        else:
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ConfigError(f"{where} {key} must map names to an approver (a name or "
                                  "@group)")
            out[key] = dict(value)
    return out


def _hours(value: Any, where: str, zone: ZoneInfo | None) -> QuietHours | None:
    if value in ("", None, False):
        return None
    found = _HOURS.match(value) if isinstance(value, str) else None
    if found is None:
        raise ConfigError(f"{where} quiet_hours must read like \"22:00-07:00\", not {value!r}")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    return QuietHours(dt.time(h1, m1), dt.time(h2, m2), zone)


def _zone(value: Any, where: str) -> ZoneInfo | None:
    if value is None:
        return None
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where} timezone {value!r} is not a time zone name such as "
                          "\"Europe/Berlin\"") from None
