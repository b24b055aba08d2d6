"""Who a Claude Code session is on the mesh: its options and its WebSocket client.

The session's default name (:func:`meshhub.local.default_session_name`) is shared with
``hub hook``, which finds the session's process by it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from meshhub.client import MeshClient
from meshhub.config import load_config, load_signing_key
from meshhub.directory import parse_groups
from meshhub.local import default_name, default_session_name, home_dir

from .push import state_setting
from .tools import MODES


@dataclass
class SessionOptions:
    member: str  # the member's own name (config), for a first connection that enrolls it
    name: str
    role: str | None
    groups: dict[str, str] | None
    mode: str
    url: str
    home: Path
    permission_relay: bool = True  # relay Claude Code's permission prompts to the hub
    state: tuple[str, ...] = ("",)  # key prefixes of the shared state told as notifications


def session_options(name: str | None = None, role: str | None = None,
                    groups: str | None = None, mode: str | None = None,
                    state: str | None = None) -> SessionOptions:
    """Flags win over ``MESHHUB_SESSION_NAME`` / ``MESHHUB_ROLE`` / ``MESHHUB_GROUPS`` /
    ``MESHHUB_MODE`` / ``MESHHUB_STATE``. ``MESHHUB_PERMISSION_RELAY=off`` keeps permission
    prompts in the terminal."""
    cfg = load_config(home_dir())
    env = os.environ
    mode = (mode or env.get("MESHHUB_MODE") or "push").lower()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return SessionOptions(
        member=cfg.name or default_name(),
        name=name or env.get("MESHHUB_SESSION_NAME")
        or default_session_name(cfg.name or default_name(), Path.cwd()),
        role=role if role is not None else env.get("MESHHUB_ROLE"),
        groups=parse_groups(groups if groups is not None else env.get("MESHHUB_GROUPS")),
        mode=mode,
        url=cfg.url,
        home=cfg.home,
        permission_relay=env.get("MESHHUB_PERMISSION_RELAY", "on").lower()
        not in ("off", "0", "false", "no"),
        state=state_setting(state or env.get("MESHHUB_STATE")),
    )


def session_client(opts: SessionOptions, *, receive: bool, reconnect: bool) -> MeshClient:
    return MeshClient(
        opts.url, load_signing_key(opts.home), name=opts.name, kind="agent", connector="mcp",
        session=opts.name, role=opts.role, groups=opts.groups, receive=receive,
        reconnect=reconnect, member_name=opts.member,
    )
