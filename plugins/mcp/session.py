"""Who a Claude Code session is on the mesh: its options and its WebSocket client.

Kept free of the ``mcp`` SDK so ``hub hook`` (which acts as the same session) starts fast.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from meshhub.client import MeshClient
from meshhub.config import default_name, home_dir, load_config, load_signing_key
from meshhub.directory import parse_groups

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


def default_session_name(member: str) -> str:
    """``<member>-<current directory>``: stable across restarts of a session in one project."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path.cwd().name).strip("-.") or "session"
    return f"{member}-{base}"[:40]


def session_options(name: str | None = None, role: str | None = None,
                    groups: str | None = None, mode: str | None = None) -> SessionOptions:
    """Flags win over ``MESHHUB_SESSION_NAME`` / ``MESHHUB_ROLE`` / ``MESHHUB_GROUPS`` /
    ``MESHHUB_MODE``."""
    cfg = load_config(home_dir())
    env = os.environ
    mode = (mode or env.get("MESHHUB_MODE") or "push").lower()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return SessionOptions(
        member=cfg.name or default_name(),
        name=name or env.get("MESHHUB_SESSION_NAME")
        or default_session_name(cfg.name or default_name()),
        role=role if role is not None else env.get("MESHHUB_ROLE"),
        groups=parse_groups(groups if groups is not None else env.get("MESHHUB_GROUPS")),
        mode=mode,
        url=cfg.url,
        home=cfg.home,
    )


def session_client(opts: SessionOptions, *, receive: bool, reconnect: bool) -> MeshClient:
    return MeshClient(
        opts.url, load_signing_key(opts.home), name=opts.name, kind="agent", connector="mcp",
        session=opts.name, role=opts.role, groups=opts.groups, receive=receive,
        reconnect=reconnect, member_name=opts.member,
    )
