"""``hub hook <event>``: what an agent tool runs around every prompt and tool call (Claude Code's
hooks, which ``hub install claude-code`` adds).

The hook does not talk to the hub. It hands the event to the session's own connector process
(``hub mcp``, which already holds the session's live, authenticated connection) over that
process's local socket (:func:`meshhub.local.session_socket`), and prints what the process
answers. The session is found the way ``hub mcp`` names itself: ``MESHHUB_SESSION_NAME``, else
``<member>-<directory>`` for the hook's ``cwd`` or, for a session that moved into a
subdirectory, the nearest parent that has a session.

Claude Code waits for this command after every tool call, so it imports the standard library and
:mod:`meshhub.local` only (no typer, pluggy, asyncio or client), and ``hub`` dispatches it before
loading anything else (:mod:`meshhub.cli.entry`). It always exits 0, and prints nothing when no
session process of this user answers within :data:`ANSWER_WAIT`.

The socket speaks one JSON line each way: ``{"v": 1, "event": "<event>"}`` (plus ``"tool"``,
the hook's ``tool_name``, when it has one: the session closes the relayed permission prompt of
that tool; and for a tool that edits a file, ``"files"``, the path it names, and ``"cwd"``, the
hook's: the session reports the file as being edited), then ``{"output": <hook output object
or null>}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from meshhub.local import default_name, default_session_name, home_dir, private_dir, session_socket

ANSWER_WAIT = 1.5  # seconds for the session's answer (it gives the hub 0.8 s of them)
STDIN_WAIT = 0.2  # seconds to wait for the hook's JSON when stdin is left open
MAX_ANSWER = 256 * 1024  # bytes: an answer is one short line
MAX_TOOL = 200  # meshhub.fields.MAX_TOOL, written here: this module loads nothing of meshhub
MAX_PATH = 1024  # meshhub.fields.MAX_PATH: a longer path is left out, not cut into another one
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # refused in paths by the hub (files_editing) as here
EDIT_TOOLS = {"Edit": "file_path", "Write": "file_path", "MultiEdit": "file_path",
              "NotebookEdit": "notebook_path"}  # Claude Code's tools that edit a file


def read_stdin(timeout: float = STDIN_WAIT) -> str:
    """The hook's JSON input, without blocking when stdin is a terminal or left open."""
    import select

    if sys.stdin is None or sys.stdin.closed:
        return ""
    with contextlib.suppress(Exception):
        if sys.stdin.isatty():
            return ""
        chunks = []
        deadline = time.monotonic() + timeout
        fd = sys.stdin.fileno()
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode(errors="replace")
    return ""


def member_name(home: Path) -> str:
    """``[identity] name`` of the home's config, as ``hub mcp`` reads it, else the default."""
    import tomllib  # only for a session without MESHHUB_SESSION_NAME (`hub launch` sets it)

    try:
        with (home / "config.toml").open("rb") as fh:
            identity = tomllib.load(fh).get("identity")
    except (OSError, tomllib.TOMLDecodeError):
        identity = None
    name = identity.get("name") if isinstance(identity, dict) else None
    return str(name) if name else default_name()


def session_names(home: Path, cwd: Path) -> list[str]:
    """The names the session may have, most likely first. Claude Code gives its hooks the
    project's directory (``CLAUDE_PROJECT_DIR``), where it started ``hub mcp``: that names the
    session exactly, so a hook run after a ``cd`` into another session's directory never
    reaches (and closes the prompts of) that other session."""
    if os.environ.get("MESHHUB_SESSION_NAME"):
        return [os.environ["MESHHUB_SESSION_NAME"]]
    member = member_name(home)
    project = os.environ.get("CLAUDE_PROJECT_DIR", "")
    if os.path.isabs(project):
        return [default_session_name(member, Path(project))]
    names = [default_session_name(member, d) for d in (cwd, *cwd.parents)]
    return list(dict.fromkeys(names))


def ask(path: Path, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """One request to a session's socket; ``None`` when it does not answer in time."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(str(path))
            conn.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while b"\n" not in data and len(data) < MAX_ANSWER:
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:  # no such process any more, or it did not answer in time
            return None
    try:
        answer = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def request_line(event: str, payload: Any) -> dict[str, Any]:
    """What the session is asked: the event, the tool it was about when the hook says, and
    the file that tool edited."""
    request: dict[str, Any] = {"v": 1, "event": event}
    tool = payload.get("tool_name") if isinstance(payload, dict) else None
    if isinstance(tool, str) and tool:
        request["tool"] = tool[:MAX_TOOL]
        if event == "post-tool-use":
            request.update(edited(payload, tool))
    return request


def edited(payload: dict[str, Any], tool: str) -> dict[str, Any]:
    """``files`` and ``cwd`` for a tool that edited a file (nothing for the others, or for a
    path that is not a short line of text: the session runs git in the directory it names)."""
    tool_input = payload.get("tool_input")
    path = tool_input.get(EDIT_TOOLS[tool]) if tool in EDIT_TOOLS \
        and isinstance(tool_input, dict) else None
    if not _line(path):
        return {}
    cwd = payload.get("cwd")
    fits = _line(cwd) and os.path.isabs(str(cwd))
    return {"files": [path], **({"cwd": cwd} if fits else {})}


def _line(text: Any) -> bool:
    """Whether ``text`` is a path the hub takes: a short line without control characters."""
    return isinstance(text, str) and 0 < len(text) <= MAX_PATH and not CONTROL.search(text)


def run(event: str, stdin_text: str) -> str:
    """What ``hub hook <event>`` prints (empty: nothing)."""
    try:
        payload = json.loads(stdin_text) if stdin_text.strip() else {}
    except ValueError:
        payload = {}
    cwd_text = payload.get("cwd") if isinstance(payload, dict) else None
    cwd = Path(cwd_text) if isinstance(cwd_text, str) and os.path.isabs(cwd_text) else Path.cwd()
    home = home_dir()
    for name in session_names(home, cwd):
        path = session_socket(home, name)
        if not path.is_socket():
            continue
        if not private_dir(path.parent):  # someone else's directory: not our session
            return ""
        answer = ask(path, request_line(event, payload), ANSWER_WAIT)
        output = answer.get("output") if answer else None
        return json.dumps(output) if isinstance(output, dict) else ""
    return ""


def main(argv: list[str] | None = None) -> int:
    """``hub hook [EVENT]``; always 0 (a hook must never get in the session's way)."""
    args = sys.argv[2:] if argv is None else argv
    event = (args[0] if args else "").lower().replace("_", "-")
    try:
        out = run(event, read_stdin())
    except Exception:  # nothing a hook meets may stop the session's tool call
        out = ""
    if out:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    return 0
