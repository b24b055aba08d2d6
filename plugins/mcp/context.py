"""The context snapshot ``hub mcp`` attaches to the structured messages its session sends.

A decision, a handoff or a review request means more with where it was made: the git branch,
the working directory, the files changed there lately and the session's one-line summary. The
snapshot rides in the message's ``data["context"]`` (docs/protocol.md, "Structured messages");
plain text messages get none, and a ``context`` the model wrote itself is left as it is.

``git status --porcelain=v1 --branch -z`` runs as an asyncio subprocess (never blocking the
event loop) at most once every :data:`CACHE_SECONDS`. Outside a git repository the snapshot has
no branch and no files; without a git binary, or when git is slow, the same, quietly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from meshhub.kinds import CONTEXT_MAX_CHARS, CONTEXT_MAX_FILES

from .git import git_output

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
MAX_ENTRIES = 1000  # changed paths looked at (the newest CONTEXT_MAX_FILES are kept)


def parse_status(output: bytes) -> tuple[str | None, list[str]]:
    """``(branch, changed paths)`` from ``git status --porcelain=v1 --branch -z``."""
    entries = output.decode(errors="replace").split("\0")
    branch, paths = None, []
    skip = False
    for entry in entries:
        if skip or not entry:
            skip = False
            continue
        if entry.startswith("## "):
            branch = _branch(entry[3:])
            continue
        paths.append(entry[3:])
        skip = bool(set(entry[:2]) & set("RC"))  # a rename or copy: its source path follows
        if len(paths) >= MAX_ENTRIES:
            break
    return branch, paths


def _branch(header: str) -> str:
    for prefix in ("No commits yet on ", "Initial commit on "):
        if header.startswith(prefix):
            return header[len(prefix):]
    return header.split("...", 1)[0].split(" ", 1)[0]


def newest_first(cwd: Path, paths: list[str]) -> list[str]:
    """``paths`` (git's, relative to the top of the repository holding ``cwd``) most recently
    modified first, at most :data:`CONTEXT_MAX_FILES`; a deleted path counts as the newest (it
    just changed)."""
    root = next((d for d in (cwd, *cwd.parents) if (d / ".git").exists()), cwd)

    def mtime(path: str) -> float:
        try:
            return (root / path).stat().st_mtime
        except OSError:
            return float("inf")

    fitting = [p for p in paths if len(p) <= CONTEXT_MAX_CHARS]
    return sorted(fitting, key=mtime, reverse=True)[:CONTEXT_MAX_FILES]


class ContextSnapshot:
    """The snapshot of one session's working directory, cached for :data:`CACHE_SECONDS`."""

    def __init__(self, cwd: Path | None = None) -> None:
        self.cwd = cwd or Path.cwd()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def attach(self, params: dict[str, Any], summary: str) -> dict[str, Any]:
        """``params`` of a ``send`` with the snapshot in ``data["context"]`` when it is a
        structured kind that has none yet."""
        data = params.get("data")
        if params.get("kind", "text") == "text" or not isinstance(data, dict) \
                or "context" in data:
            return params
        context = dict(await self.snapshot())
        if summary:
            context["summary"] = summary
        return {**params, "data": {**data, "context": context}}

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > CACHE_SECONDS:
                self._cached = (now, await self._take())
            return self._cached[1]

    async def _take(self) -> dict[str, Any]:
        context: dict[str, Any] = {}
        cwd = str(self.cwd)
        if len(cwd) <= CONTEXT_MAX_CHARS:
            context["cwd"] = cwd
        output = await self._git_status()
        if output is not None:
            branch, paths = parse_status(output)
            if branch and len(branch) <= CONTEXT_MAX_CHARS:
                context["branch"] = branch
            context["changed_files"] = await asyncio.to_thread(newest_first, self.cwd, paths)
        return context

    async def _git_status(self) -> bytes | None:
        return await git_output(self.cwd, "status", "--porcelain=v1", "--branch",
                                "--untracked-files=all", "-z")
