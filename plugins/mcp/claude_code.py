"""Claude Code set-up: ``hub install/uninstall claude-code`` and ``hub launch``.

``install`` registers the stdio server as ``meshhub`` (user scope: ``mcpServers`` in
``~/.claude.json``; project scope: ``.mcp.json`` in the project directory) and adds four hooks
to ``~/.claude/settings.json``:

* ``UserPromptSubmit`` -> ``hub hook user-prompt-submit``: the session's status becomes
  ``working``;
* ``Stop`` -> ``hub hook stop``: ``idle``;
* ``PostToolUse`` -> ``hub hook post-tool-use``: adds an ``additionalContext`` line naming
  unread messages, never naming a message twice, and, after an edit, reports the file as being
  edited and names an edit conflict over it once (see :mod:`.active_files`);
* ``PostToolUseFailure`` -> ``hub hook post-tool-use-failure``: nothing to add.

``UserPromptSubmit``, ``Stop`` and both tool hooks also close the relayed permission prompts the
terminal answered (see :mod:`.permissions`).

``hub hook`` hands each event to the session's ``hub mcp`` process (see :mod:`.hook_server`).

Writes are idempotent (our entries are found by their ``hub hook``/``hub mcp`` commands and
replaced), keep every unrelated entry, key order and the file's formatting, go through a
temporary file, and save the file as it was before our first entry to ``<file>.meshhub.bak``.
``uninstall`` removes exactly our entries and leaves nothing behind when it can: a file that is
back to what the backup holds gets the backup's bytes and loses the backup, a file ``install``
created is deleted (see :mod:`.config_files`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from . import config_files

SERVER_NAME = "meshhub"
HOOK_EVENTS = {
    "UserPromptSubmit": "user-prompt-submit",
    "Stop": "stop",
    "PostToolUse": "post-tool-use",
    "PostToolUseFailure": "post-tool-use-failure",
}
OUR_COMMAND = re.compile(r"(^|[/\s\"'])hub[\"']?\s+(hook|mcp)\b")


def hub_command() -> str:
    """The ``hub`` executable to write into Claude Code's config (absolute when known)."""
    beside = Path(sys.executable).with_name("hub")
    if beside.exists():
        return str(beside)
    return shutil.which("hub") or "hub"


# -- install ------------------------------------------------------------------------------------
def hub_env() -> dict[str, str]:
    """The settings of this shell that Claude Code's ``hub`` commands must share: the home
    (which also names the session's hook socket) and the hub's URL."""
    env = {k: os.environ[k] for k in ("MESHHUB_HOME", "MESHHUB_URL") if os.environ.get(k)}
    if "MESHHUB_HOME" in env:
        env["MESHHUB_HOME"] = os.path.abspath(os.path.expanduser(env["MESHHUB_HOME"]))
    return env


def hook_command(hub: str, arg: str) -> str:
    """The shell command of one hook: ``hub hook <arg>``, run with :func:`hub_env`."""
    env = "".join(f"{k}={shlex.quote(v)} " for k, v in hub_env().items())
    return f"{env}{shlex.quote(hub)} hook {arg}"


def server_entry(hub: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "stdio", "command": hub, "args": ["mcp"]}
    env = hub_env()
    if env:
        entry["env"] = env
    return entry


def has_server(data: dict[str, Any]) -> bool:
    servers = data.get("mcpServers")
    return isinstance(servers, dict) and SERVER_NAME in servers


def add_server(data: dict[str, Any], hub: str) -> None:
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise ValueError("its mcpServers is not a JSON object; fix it first")
    servers[SERVER_NAME] = server_entry(hub)


def remove_server(data: dict[str, Any], before: dict[str, Any] | None) -> bool:
    """Take our server out; drop ``mcpServers`` if that empties it and ``before`` had none."""
    if not has_server(data):
        return False
    del data["mcpServers"][SERVER_NAME]
    if not data["mcpServers"] and "mcpServers" not in (before or {}):
        del data["mcpServers"]
    return True


def _is_ours(group: Any) -> bool:
    hooks = group.get("hooks") if isinstance(group, dict) else None
    if not isinstance(hooks, list) or not hooks:
        return False
    return all(
        isinstance(h, dict) and OUR_COMMAND.search(str(h.get("command", ""))) for h in hooks
    )


def has_hooks(settings: dict[str, Any]) -> bool:
    hooks = settings.get("hooks")
    return isinstance(hooks, dict) and any(
        isinstance(groups, list) and any(_is_ours(g) for g in groups) for groups in hooks.values()
    )


def add_hooks(settings: dict[str, Any], hub: str) -> dict[str, Any]:
    hooks = settings.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise ValueError("its hooks is not a JSON object; fix it first")
    for event, arg in HOOK_EVENTS.items():
        groups = [g for g in hooks.get(event, []) if not _is_ours(g)]
        group: dict[str, Any] = {
            "hooks": [{"type": "command", "command": hook_command(hub, arg), "timeout": 5}]
        }
        if event in ("PostToolUse", "PostToolUseFailure"):
            group = {"matcher": "*", **group}
        hooks[event] = [*groups, group]
    return settings


def remove_hooks(settings: dict[str, Any], before: dict[str, Any] | None) -> bool:
    """Take our hooks out; drop an event list or ``hooks`` that this empties unless ``before``
    had it."""
    if not has_hooks(settings):
        return False
    hooks = settings["hooks"]
    had = before.get("hooks") if before else None
    had = had if isinstance(had, dict) else {}
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list) or not any(_is_ours(g) for g in groups):
            continue
        hooks[event] = [g for g in groups if not _is_ours(g)]
        if not hooks[event] and event not in had:
            del hooks[event]
    if not hooks and "hooks" not in (before or {}):
        del settings["hooks"]
    return True


def config_paths(scope: str, home: Path, project: Path) -> tuple[Path, Path]:
    """(file holding ``mcpServers``, Claude Code's user settings file)."""
    servers = home / ".claude.json" if scope == "user" else project / ".mcp.json"
    return servers, home / ".claude" / "settings.json"


def install(scope: str = "user", home: Path | None = None,
            project: Path | None = None) -> list[str]:
    home, project = home or Path.home(), project or Path.cwd()
    hub = hub_command()
    servers_path, settings_path = config_paths(scope, home, project)
    changed = config_files.edit(servers_path, lambda data: add_server(data, hub), has_server)
    done = [f"{'updated' if changed else 'kept'} {servers_path}"]
    changed = config_files.edit(settings_path, lambda data: add_hooks(data, hub), has_hooks)
    done.append(f"{'updated' if changed else 'kept'} {settings_path}")
    return done


def uninstall(home: Path | None = None, project: Path | None = None) -> list[str]:
    """Remove our server (both scopes) and our hooks; everything else is left as it was."""
    home, project = home or Path.home(), project or Path.cwd()
    done = []
    for path in (home / ".claude.json", project / ".mcp.json"):
        if (line := config_files.revert(path, remove_server)) is not None:
            done.append(line)
    settings_path = home / ".claude" / "settings.json"
    if (line := config_files.revert(settings_path, remove_hooks)) is not None:
        done.append(line)
        if not settings_path.exists():  # the directory too, if install made it for the file
            with contextlib.suppress(OSError):
                settings_path.parent.rmdir()
    return done or ["nothing to remove"]


def installed(home: Path | None = None, project: Path | None = None) -> bool:
    """Whether Claude Code started here would find our server: in ``~/.claude.json`` (user
    scope, or local scope under ``projects``) or in a ``.mcp.json`` of this directory or one
    above it (project scope)."""
    home, project = home or Path.home(), (project or Path.cwd()).resolve()
    try:
        user = config_files.read(home / ".claude.json")[1]
        if has_server(user):
            return True
        projects = user.get("projects")
        if isinstance(projects, dict) and any(
            isinstance(entry := projects.get(str(d)), dict) and has_server(entry)
            for d in (project, *project.parents)
        ):
            return True
        return any(has_server(config_files.read(d / ".mcp.json")[1])
                   for d in (project, *project.parents))
    except (OSError, ValueError):
        return False


# -- launch -------------------------------------------------------------------------------------
def launch_command(claude_args: list[str]) -> list[str]:
    return ["claude", "--dangerously-load-development-channels", f"server:{SERVER_NAME}",
            *claude_args]


def launch_env(name: str | None, role: str | None, groups: str | None,
               mode: str | None, state: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for var, value in (("MESHHUB_SESSION_NAME", name), ("MESHHUB_ROLE", role),
                       ("MESHHUB_GROUPS", groups), ("MESHHUB_MODE", mode),
                       ("MESHHUB_STATE", state)):
        if value is not None:
            env[var] = value
    return env
