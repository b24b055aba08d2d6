"""The files a Claude Code session edits, reported to the hub, and the conflicts the hub finds.

The PostToolUse hook names the file an Edit, Write, MultiEdit or NotebookEdit touched (see
:mod:`meshhub.cli.hook`). :class:`ActiveFiles` names it as the hub does (``files_editing``): a
repository identity and the path inside it, or the absolute path outside a repository. The
identity is the ``origin`` remote without its scheme, user, port and ``.git``
(``git@github.com:acme/app.git`` and ``https://github.com/acme/app`` are both
``github.com/acme/app``), so two checkouts of one repository on two machines name a file alike;
a repository without a remote is named by its top-level directory. git runs as an asyncio
subprocess, once per directory for :data:`CACHE_SECONDS`.

A conflict reaches the session twice, each once: as a channel notification (from the hub's
``record`` event of ``file_conflicts``) and as an ``additionalContext`` line of the next hook
answer (or of the answer to the edit that found it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from meshhub.builtins.active_files import clock
from meshhub.fields import MAX_PATH, MAX_REPO
from meshhub.sanitize import for_terminal

from .git import git_output

log = logging.getLogger("meshhub_mcp")

CACHE_SECONDS = 60.0
REMEMBER = 500  # conflicts remembered as already told
COLLECTION = "file_conflicts"
_SCP = re.compile(r"^[^/@:]+@([^/:]+):(.+)$")  # git@host:owner/name

Call = Callable[..., Awaitable[Any]]
SendChannel = Callable[[str, dict[str, str]], Awaitable[None]]
Where = tuple[str | None, str]  # (repo identity or None, path inside it or absolute path)


def repo_identity(remote: str) -> str:
    """The remote's host and path, lower-case host, without user, password, port and
    ``.git``; a local remote (a path) as it is, without ``.git``."""
    remote = remote.strip()
    if match := _SCP.match(remote):
        host, path = match.groups()
    else:
        parts = urlsplit(remote)
        host, path = (parts.hostname or "", parts.path) if parts.scheme else ("", remote)
    path = path.strip("/").removesuffix(".git").rstrip("/")
    return f"{host.lower()}/{path}" if host else "/" + path


async def _git(cwd: Path, *args: str) -> str | None:
    """git's one-line answer in ``cwd``, or ``None``."""
    output = await git_output(cwd, *args)
    text = output.decode(errors="replace").strip() if output is not None else ""
    return text or None


def conflict_line(doc: dict[str, Any], me: str) -> str:
    """What the session is told of a conflict: who else edits which file, since when."""
    others = [p for p in doc.get("peers", []) if p.get("key") != me]
    mine = [p for p in doc.get("peers", []) if p.get("key") == me]
    who = ", ".join(f"{p.get('name')} (since {clock(p.get('since'))})" for p in others)
    you = f"; you since {clock(mine[0].get('since'))}" if mine else ""
    return for_terminal(f"meshhub: {who} is also editing {doc.get('file')}{you}. Agree with "
                        "them (mesh_send) on who changes it before editing it further.",
                        one_line=True)


def spawn(tasks: set[asyncio.Task[Any]], work: Awaitable[Any], what: str) -> asyncio.Task[Any]:
    """Run ``work`` in the background (held in ``tasks`` until it ends), logging why it
    failed: the hub went away or refused, and the next tool call tries again."""

    async def run() -> None:
        try:
            await work
        except Exception as exc:
            log.info("could not %s: %s", what, exc)

    task = asyncio.create_task(run())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


class ActiveFiles:
    """Reports the session's edited files (``call`` runs an action over the session's
    connection) and tells the session of conflicts, each once per surface."""

    def __init__(self, call: Call, me: Callable[[], str]) -> None:
        self._call = call
        self._me = me
        self._send: SendChannel | None = None
        self._roots: dict[Path, tuple[float, Path | None, str | None]] = {}
        self._notified: deque[str] = deque(maxlen=REMEMBER)
        self._named: deque[str] = deque(maxlen=REMEMBER)
        self._untold: dict[str, dict[str, Any]] = {}  # conflicts no hook answer named yet
        self._reported = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def channel(self, send: SendChannel) -> None:
        """Conflicts become channel notifications from now on."""
        self._send = send

    async def locate(self, path: Path) -> Where:
        """``(repo, path inside it)`` for a file in a git repository, else ``(None, path)``."""
        path = Path(os.path.realpath(path))
        root, repo = await self._root(path.parent)
        if root is None or repo is None:
            return None, str(path)
        return repo, path.relative_to(root).as_posix()

    async def _root(self, directory: Path) -> tuple[Path | None, str | None]:
        now = time.monotonic()
        cached = self._roots.get(directory)
        if cached is None or now - cached[0] > CACHE_SECONDS:
            top = await _git(directory, "rev-parse", "--show-toplevel")
            root = Path(os.path.realpath(top)) if top else None
            remote = await _git(root, "config", "--get", "remote.origin.url") if root else None
            repo = repo_identity(remote) if remote else str(root) if root else None
            if repo is not None and len(repo) > MAX_REPO:
                root = repo = None
            self._roots[directory] = cached = (now, root, repo)
        return cached[1], cached[2]

    async def edited(self, files: list[str], cwd: str | None) -> None:
        """Report ``files`` (relative ones are in ``cwd``); the conflicts the hub names are
        held for :meth:`untold` and notified."""
        base = Path(cwd) if cwd else Path.cwd()
        by_repo: dict[str | None, list[str]] = {}
        for name in files:
            repo, inside = await self.locate(base / name)
            if len(inside) <= MAX_PATH:
                by_repo.setdefault(repo, []).append(inside)
        for repo, paths in by_repo.items():
            result = await self._call("files_editing", paths=paths, repo=repo)
            self._reported = True
            for doc in result.get("conflicts", []):
                self.offer_conflict(doc)

    def offer(self, frame: dict[str, Any]) -> None:
        """Take one hub event: a new conflict of this session's is told."""
        if frame.get("event") == "record" and frame.get("collection") == COLLECTION \
                and frame.get("op") == "put" and isinstance(frame.get("value"), dict):
            self.offer_conflict(frame["value"])

    def offer_conflict(self, doc: dict[str, Any]) -> None:
        """Tell a conflict once per surface. It is known by its pair, file and the time the
        hub found it: the hub tells a pair again once it has forgotten the last conflict, and
        so does the session."""
        key = " ".join([*sorted(str(p.get("key")) for p in doc.get("peers", [])),
                        str(doc.get("file")), str(doc.get("at"))])
        if key not in self._named:
            self._named.append(key)
            self._untold[key] = doc
        if key not in self._notified and self._send is not None:
            self._notified.append(key)
            send = self._send(conflict_line(doc, self._me()),
                              {"kind": "file_conflict",
                               "file": for_terminal(str(doc.get("file")), one_line=True)})
            spawn(self._tasks, send, "notify the session of a conflict")

    def untold(self) -> str | None:
        """The conflicts no hook answer has named yet, as lines (each named once)."""
        lines = [conflict_line(doc, self._me()) for doc in self._untold.values()]
        self._untold.clear()
        return "\n".join(lines) if lines else None

    async def done(self) -> None:
        """The session ends: its files are no longer being edited."""
        if self._reported:
            await self._call("files_done")

