"""git, as `hub mcp` asks it things (the context snapshot's status, the repository an edited
file belongs to): an asyncio subprocess with a time limit, never a reason to fail.

The directory may be any the session or an edited path names, so git takes no optional lock
there (a status must not hold the index lock against the person's own git) and runs no
fsmonitor program that repository's config may name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("meshhub_mcp")

GIT_TIMEOUT = 2.0  # seconds


async def git_output(cwd: Path | str, *args: str, timeout: float = GIT_TIMEOUT) -> bytes | None:
    """What ``git <args>`` prints in ``cwd``, or ``None``: not a repository, no git, or git
    slower than ``timeout``."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", "-c", "core.fsmonitor=false", *args, cwd=cwd, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
    except OSError as exc:  # no git binary, or the directory has gone
        log.debug("git %s not run in %s: %s", args[0] if args else "", cwd, exc)
        return None
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        log.debug("git %s took over %s s in %s", args[0] if args else "", timeout, cwd)
        return None
    return output if proc.returncode == 0 else None
