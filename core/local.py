"""What processes of one OS user on one machine share, with the standard library only: where
their local sockets live, and the default member name.

Kept free of every import beyond the standard library so that ``hub hook`` (which Claude Code
runs around every tool call) can use it without paying for the rest of meshhub.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import socket
import stat
from pathlib import Path


def home_dir() -> Path:
    """``MESHHUB_HOME``, else ``~/.meshhub``."""
    return Path(os.environ.get("MESHHUB_HOME") or Path.home() / ".meshhub").expanduser()


def socket_dirs() -> list[Path]:
    """Where the hubs of this OS user put their local sockets (mode 0700), first choice first:
    ``MESHHUB_SOCKET_DIR`` alone when set, else ``$XDG_RUNTIME_DIR/meshhub`` and
    ``/tmp/meshhub-<uid>`` (a client looks in both: a hub started from a desktop session and
    a command run from cron see different environments)."""
    if os.environ.get("MESHHUB_SOCKET_DIR"):
        return [Path(os.environ["MESHHUB_SOCKET_DIR"])]
    dirs = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        dirs.append(Path(runtime) / "meshhub")
    usual = Path("/run/user") / str(os.getuid()) / "meshhub"  # XDG_RUNTIME_DIR's usual value
    if usual not in dirs:
        dirs.append(usual)
    return [*dirs, Path("/tmp") / f"meshhub-{os.getuid()}"]


def socket_dir() -> Path:
    """The directory a process started now puts its local socket in: the first of
    :func:`socket_dirs` whose parent exists (the runtime directory, else ``/tmp``)."""
    dirs = socket_dirs()
    return next((d for d in dirs if d.parent.is_dir()), dirs[0])


def private_dir(path: Path) -> bool:
    """The directory is ours, a real directory (not a link) and closed to everyone else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and info.st_mode & 0o077 == 0)


def default_name() -> str:
    """The member name ``hub init`` proposes: the OS user's name, made safe."""
    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (containers)
        user = "me"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip("-._")[:40] or "me"
    return f"{name[:36]}-me" if re.fullmatch(r"[0-9A-Fa-f]{8}", name) else name


def default_session_name(member: str, directory: Path) -> str:
    """``<member>-<directory name>``: an agent session's name when none is given, stable across
    restarts of a session in one project."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.name).strip("-.") or "session"
    return f"{member}-{base}"[:40]


def session_socket(home: Path, session: str) -> Path:
    """Where the connector process of agent session ``session`` of ``home`` (``hub mcp``)
    listens for its hooks (``hub hook``): a Unix socket in :func:`socket_dir`, named by a hash
    so any home path and session name fit the short limit on socket paths."""
    digest = hashlib.sha256(f"{os.path.abspath(home)}\0{session}".encode()).hexdigest()[:24]
    return socket_dir() / f"session-{digest}.sock"


def claim_socket(path: Path) -> str | None:
    """Make ``path`` ready for a Unix socket server of this user: its directory exists with mode
    0700 and is private (:func:`private_dir`), and no live process listens there (a socket left
    by a killed one is removed). Returns why it cannot be used, or ``None`` when it can."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {directory} ({exc.strerror})"
    if not private_dir(directory):
        return f"{directory} is not a private directory of this user (mode 0700)"
    if path.is_socket() and socket_answers(path):
        return f"another live process serves {path}"
    try:
        if path.is_socket():
            path.unlink()  # only this user can write here
    except OSError as exc:
        return f"cannot clear {path} ({exc.strerror})"
    return None


def socket_answers(path: Path) -> bool:
    """Something accepts connections on the Unix socket ``path`` right now."""
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
