"""`hub install/uninstall claude-code`, `hub hook`, `hub launch`: real CLI runs on a temporary
HOME, a fake `claude` on PATH, and a real hub for the hooks."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshhub.local import default_session_name, session_socket

from .helpers import HUB_BIN, base_env, free_port

UNRELATED_USER = {
    "numStartups": 7,
    "mcpServers": {"other": {"type": "stdio", "command": "other-server", "args": ["x"]}},
    "projects": {"/some/where": {"allowedTools": ["Bash"]}},
}
UNRELATED_SETTINGS = {
    "model": "opus",
    "hooks": {
        "Stop": [{"hooks": [{"type": "command", "command": "say done"}]}],
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "audit"}]}],
    },
    "permissions": {"allow": ["Read"]},
}


def run_hub(home: Path, *args: str, cwd: Path | None = None, stdin: str = "",
            **env: str) -> subprocess.CompletedProcess[str]:
    full = base_env(home / ".meshhub", HOME=str(home), **env)
    return subprocess.run([HUB_BIN, *args], env=full, cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=60)


def write(path: Path, data: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2) + "\n"
    path.write_text(text)
    return text


def test_install_twice_then_uninstall_keeps_everything_else(tmp_path):
    home, project = tmp_path / "home", tmp_path / "project"
    project.mkdir()
    user_text = write(home / ".claude.json", UNRELATED_USER)
    settings_text = write(home / ".claude" / "settings.json", UNRELATED_SETTINGS)
    (home / ".claude.json").chmod(0o600)  # it can hold secrets: so can its backup
    for _ in range(2):
        out = run_hub(home, "install", "claude-code", cwd=project)
        assert out.returncode == 0, out.stderr
        user = json.loads((home / ".claude.json").read_text())
        assert list(user["mcpServers"]) == ["other", "meshhub"]
        entry = user["mcpServers"]["meshhub"]
        assert entry["args"] == ["mcp"] and entry["command"].endswith("hub")
        settings = json.loads((home / ".claude" / "settings.json").read_text())
        for event, arg in (("UserPromptSubmit", "user-prompt-submit"), ("Stop", "stop"),
                           ("PostToolUse", "post-tool-use"),
                           ("PostToolUseFailure", "post-tool-use-failure")):
            ours = [g for g in settings["hooks"][event]
                    if any(h["command"].endswith(f"hub hook {arg}") for h in g["hooks"])]
            assert len(ours) == 1, (event, settings["hooks"][event])
            command = ours[0]["hooks"][0]["command"]  # the session's home, like the server's
            assert command.startswith(f"MESHHUB_HOME={entry['env']['MESHHUB_HOME']} "), command
        assert settings["hooks"]["Stop"][0] == UNRELATED_SETTINGS["hooks"]["Stop"][0]
        for event in ("PostToolUse", "PostToolUseFailure"):  # every tool, not one of them
            assert [g.get("matcher") for g in settings["hooks"][event]] == ["*"]
        assert settings["model"] == "opus" and settings["permissions"] == {"allow": ["Read"]}
    assert (home / ".claude.json.meshhub.bak").read_text() == user_text  # backup first
    assert (home / ".claude" / "settings.json.meshhub.bak").read_text() == settings_text
    for private in (home / ".claude.json", home / ".claude.json.meshhub.bak"):
        assert private.stat().st_mode & 0o777 == 0o600, private

    out = run_hub(home, "install", "claude-code", "--scope", "project", cwd=project)
    assert out.returncode == 0, out.stderr
    assert list(json.loads((project / ".mcp.json").read_text())["mcpServers"]) == ["meshhub"]

    out = run_hub(home, "uninstall", "claude-code", cwd=project)
    assert out.returncode == 0, out.stderr
    assert (home / ".claude.json").read_text() == user_text  # byte-identical
    assert (home / ".claude" / "settings.json").read_text() == settings_text
    assert not (project / ".mcp.json").exists()  # install created it: gone again
    assert files_under(home) == {".claude.json", ".claude", ".claude/settings.json"}  # no .bak


def files_under(*roots: Path) -> set[str]:
    return {str(p.relative_to(root)) for root in roots for p in root.rglob("*")}


def test_install_then_uninstall_on_an_empty_home_leaves_nothing(tmp_path):
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    for scope in ("user", "project"):
        out = run_hub(home, "install", "claude-code", "--scope", scope, cwd=project)
        assert out.returncode == 0, out.stderr
    assert files_under(home, project) == {".claude.json", ".claude", ".claude/settings.json",
                                          ".mcp.json"}
    assert "meshhub" in json.loads((home / ".claude.json").read_text())["mcpServers"]
    out = run_hub(home, "uninstall", "claude-code", cwd=project)
    assert out.returncode == 0, out.stderr
    assert files_under(home, project) == set(), out.stdout
    assert "created it" in out.stdout
    assert run_hub(home, "uninstall", "claude-code", cwd=project).stdout == "nothing to remove\n"


# files as their owners wrote them: 4 spaces and no final newline, tabs, one compact line
USER_TEXT = json.dumps({"numStartups": 7, "theme": "café",
                        "mcpServers": {"other": {"command": "other-server"}}},
                       indent=4, ensure_ascii=False)
SETTINGS_TEXT = json.dumps(UNRELATED_SETTINGS, indent="\t") + "\n"
PROJECT_TEXT = '{"mcpServers":{"other":{"command":"x"}}}\n'


def test_install_keeps_the_formatting_and_uninstall_restores_the_bytes(tmp_path):
    home, project = tmp_path / "home", tmp_path / "project"
    (home / ".claude").mkdir(parents=True)
    project.mkdir()
    originals = {home / ".claude.json": USER_TEXT, home / ".claude" / "settings.json":
                 SETTINGS_TEXT, project / ".mcp.json": PROJECT_TEXT}
    for path, text in originals.items():
        path.write_text(text)
    for scope in ("user", "project"):
        out = run_hub(home, "install", "claude-code", "--scope", scope, cwd=project)
        assert out.returncode == 0, out.stderr
    user = (home / ".claude.json").read_text()
    assert user.startswith('{\n    "numStartups": 7,\n    "theme": "café",\n    "mcpServers"')
    assert not user.endswith("\n") and '\n        "meshhub": {\n            "type"' in user
    settings = (home / ".claude" / "settings.json").read_text()
    assert settings.startswith('{\n\t"model": "opus",\n\t"hooks": {\n\t\t"Stop": [\n')
    assert settings.endswith("\n}\n") and "  " not in settings
    assert list(json.loads(settings)["hooks"]) == ["Stop", "PreToolUse", "UserPromptSubmit",
                                                   "PostToolUse", "PostToolUseFailure"]
    mcp = (project / ".mcp.json").read_text()
    assert mcp.startswith('{"mcpServers":{"other":{"command":"x"},"meshhub":{"type":"stdio"')
    assert mcp.count("\n") == 1
    for path, text in originals.items():  # the state before install, saved once
        assert Path(f"{path}.meshhub.bak").read_text() == text

    out = run_hub(home, "uninstall", "claude-code", cwd=project)
    assert out.returncode == 0, out.stderr
    for path, text in originals.items():
        assert path.read_text() == text, path
    assert files_under(home, project) == {".claude.json", ".claude", ".claude/settings.json",
                                          ".mcp.json"}


def test_uninstall_after_claude_code_changed_the_file_keeps_its_changes(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".claude.json").write_text(USER_TEXT)
    assert run_hub(home, "install", "claude-code", cwd=tmp_path).returncode == 0
    data = json.loads((home / ".claude.json").read_text())
    data["numStartups"] = 8  # Claude Code rewrites its file all the time
    (home / ".claude.json").write_text(json.dumps(data, indent=4, ensure_ascii=False))
    out = run_hub(home, "uninstall", "claude-code", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (home / ".claude.json").read_text() == USER_TEXT.replace('": 7', '": 8')
    # the backup no longer matches what was restored: it stays, and the output says so
    assert (home / ".claude.json.meshhub.bak").read_text() == USER_TEXT
    assert "kept" in out.stdout and ".claude.json.meshhub.bak" in out.stdout
    assert not (home / ".claude" / "settings.json").exists()


def test_hook_without_a_session_prints_nothing_and_exits_0(tmp_path):
    home = tmp_path / "home"
    assert run_hub(home, "init", "--name", "ann").returncode == 0
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    payload = json.dumps({"hook_event_name": "Stop", "cwd": str(tmp_path)})
    for event in ("stop", "user-prompt-submit", "post-tool-use", "post-tool-use-failure",
                  "no-such-event", ""):
        out = run_hub(home, "hook", *([event] if event else []), stdin=payload,
                      MESHHUB_URL=url)
        assert out.returncode == 0 and out.stdout == "" and out.stderr == "", out
    for stdin in ("not json", "[1, 2]", '{"cwd": 7}', '{"cwd": "rel"}'):  # damaged: still 0
        out = run_hub(home, "hook", "post-tool-use", stdin=stdin, MESHHUB_URL=url)
        assert out.returncode == 0 and out.stdout == "", out


def test_hook_path_loads_no_typer_pluggy_or_client(tmp_path):
    """`hub hook` runs after every tool call: its path imports the standard library only."""
    code = ("import sys\nsys.argv = ['hub', 'hook', 'post-tool-use']\n"
            "from meshhub.cli.entry import main\nmain()\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'typer', 'click', "
            "'pluggy', 'aiohttp', 'nacl', 'asyncio', 'mcp', 'yarl', 'pydantic'} or m in "
            "{'meshhub.client', 'meshhub.config', 'meshhub.cli.main', 'importlib.metadata'})\n"
            "print('loaded:', ','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], env=base_env(tmp_path / "home"),
                         capture_output=True, text=True, timeout=30, input="{}")
    assert out.returncode == 0 and out.stdout.strip() == "loaded:", out  # the hook returned


def test_hook_passes_the_tool_name_to_the_session(tmp_path):
    """The request line names the hook's tool (cut to 200 characters), so the session can close
    the relayed permission prompt of that tool; without one there is no ``tool`` key."""
    home = tmp_path / "home"
    sock_path = session_socket(home, "ann-tools")
    sock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    heard: list[dict[str, Any]] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(sock_path))
        server.listen()
        server.settimeout(20)

        def answer_once() -> None:
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as lines:
                heard.append(json.loads(lines.readline()))
                conn.sendall(b'{"output": null}\n')

        try:
            for payload in ({"tool_name": "Bash", "cwd": str(tmp_path)},
                            {"tool_name": "x" * 300}, {"tool_name": 7}, {}):
                listener = threading.Thread(target=answer_once)
                listener.start()
                out = subprocess.run([HUB_BIN, "hook", "post-tool-use-failure"],
                                     env=base_env(home, MESHHUB_SESSION_NAME="ann-tools"),
                                     input=json.dumps(payload), capture_output=True, text=True,
                                     timeout=30)
                listener.join(timeout=20)
                assert out.returncode == 0 and out.stdout == "", out
        finally:
            sock_path.unlink()
    event = {"v": 1, "event": "post-tool-use-failure"}
    assert heard == [{**event, "tool": "Bash"}, {**event, "tool": "x" * 200}, event, event]


def start_session(home: Path, url: str, name: str, cwd: Path) -> subprocess.Popen[bytes]:
    """`hub mcp` as Claude Code starts it (stdin left open), once its hook socket is up."""
    env = base_env(home, MESHHUB_URL=url, MESHHUB_SESSION_NAME=name, MESHHUB_MODE="off")
    proc = subprocess.Popen([HUB_BIN, "mcp"], env=env, cwd=cwd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sock = session_socket(home, name)
    deadline = time.monotonic() + 20
    while not sock.is_socket():
        assert proc.poll() is None and time.monotonic() < deadline, "no hook socket"
        time.sleep(0.05)
    return proc


def stop_session(proc: subprocess.Popen[Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()  # Claude Code closing the session
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_hooks_set_status_and_name_unread_once(tmp_path, hub, people):
    ann, bob = people("ann", "bob")
    claude_home = tmp_path / "claudehome"
    session = start_session(bob.home, hub.url, "bob-work", tmp_path)

    def hook(event: str, **env: str) -> subprocess.CompletedProcess[str]:
        full = base_env(bob.home, HOME=str(claude_home), **env)
        return subprocess.run([HUB_BIN, "hook", event], env=full, capture_output=True,
                              text=True, timeout=30, input=json.dumps({"cwd": str(tmp_path)}))

    def status() -> list[str]:
        peers = json.loads(ann.cli(hub.url, "peers", "--json").stdout)
        return [p["status"] for p in peers if p["name"] == "bob-work"]

    def until(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    try:
        assert hook("user-prompt-submit", MESHHUB_SESSION_NAME="bob-work").returncode == 0
        until(lambda: status() == ["working"])  # set by the session, in the background
        ann.cli(hub.url, "send", "bob-work", "please review")
        out = hook("post-tool-use", MESHHUB_SESSION_NAME="bob-work")
        line = json.loads(out.stdout)["hookSpecificOutput"]
        assert line["hookEventName"] == "PostToolUse"
        assert "1 new unread" in line["additionalContext"]
        assert "ann" in line["additionalContext"]
        assert "please review" not in line["additionalContext"]  # never the text
        assert hook("post-tool-use", MESHHUB_SESSION_NAME="bob-work").stdout == ""  # named once
        ann.cli(hub.url, "send", "bob-work", "and this")
        assert "1 new unread" in hook("post-tool-use", MESHHUB_SESSION_NAME="bob-work").stdout
        # another session's name does not reach this one
        assert hook("post-tool-use", MESHHUB_SESSION_NAME="bob-other").stdout == ""
        assert hook("stop", MESHHUB_SESSION_NAME="bob-work").returncode == 0
        until(lambda: status() == ["idle"])
    finally:
        stop_session(session)
    assert not session_socket(bob.home, "bob-work").exists()  # the session took it away


def test_a_second_session_of_the_same_name_leaves_the_first_its_hooks(tmp_path, hub, people):
    ann, bob = people("ann", "bob")
    first = start_session(bob.home, hub.url, "bob-twin", tmp_path)
    env = base_env(bob.home, MESHHUB_URL=hub.url, MESHHUB_SESSION_NAME="bob-twin",
                   MESHHUB_MODE="off")
    second = subprocess.Popen([HUB_BIN, "mcp"], env=env, cwd=tmp_path, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert second.stderr is not None
        deadline = time.monotonic() + 20
        said = ""
        while "another live process" not in said:
            assert time.monotonic() < deadline and second.poll() is None, said
            ready, _, _ = select.select([second.stderr], [], [], 0.5)
            said += second.stderr.readline() if ready else ""
        stop_session(second)  # the socket is the first session's: the second leaves it
        ann.cli(hub.url, "send", "bob-twin", "still there?")
        out = subprocess.run([HUB_BIN, "hook", "post-tool-use"], capture_output=True, text=True,
                             env=base_env(bob.home, MESHHUB_SESSION_NAME="bob-twin"),
                             timeout=30, input="{}")
        assert "1 new unread" in out.stdout, out
    finally:
        for proc in (second, first):
            stop_session(proc)


def test_a_status_set_while_the_hub_is_down_reaches_it_once_it_is_up(tmp_path, hub_factory,
                                                                    people):
    (bob,) = people("bob")
    port = free_port()
    session = start_session(bob.home, f"http://127.0.0.1:{port}", "bob-late", tmp_path)
    try:
        out = subprocess.run([HUB_BIN, "hook", "user-prompt-submit"], capture_output=True,
                             env=base_env(bob.home, MESHHUB_SESSION_NAME="bob-late"),
                             text=True, timeout=30, input="{}")
        assert out.returncode == 0 and out.stdout == ""
        hub = hub_factory(port=port)
        deadline = time.monotonic() + 20
        while True:
            peers = json.loads(bob.cli(hub.url, "peers", "--json").stdout)
            if [p["status"] for p in peers if p["name"] == "bob-late"] == ["working"]:
                break
            assert time.monotonic() < deadline, peers
            time.sleep(0.1)
    finally:
        stop_session(session)


def test_hook_finds_the_session_by_its_default_name_from_a_subdirectory(tmp_path, hub, people):
    (bob,) = people("bob")
    project = tmp_path / "my project"
    (project / "src" / "deep").mkdir(parents=True)
    name = default_session_name("bob", project)
    assert name == "bob-my-project"
    session = start_session(bob.home, hub.url, name, project)
    try:
        bob.cli(hub.url, "send", name, "note to self")
        full = base_env(bob.home)
        out = subprocess.run([HUB_BIN, "hook", "post-tool-use"], env=full, capture_output=True,
                             text=True, timeout=30,
                             input=json.dumps({"cwd": str(project / "src" / "deep")}))
        assert "1 new unread" in out.stdout, out
    finally:
        stop_session(session)


def fake_claude(tmp_path: Path) -> tuple[str, Path]:
    """A `claude` on PATH that records how it was run: (PATH, the record file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "claude-run.json"
    fake = bin_dir / "claude"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': {{k: v for k, v in os.environ.items() "
        f"if k.startswith('MESHHUB_')}}}}, open({str(record)!r}, 'w'))\n"
    )
    fake.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}", record


def test_launch_runs_claude_with_channel_flag_and_identity(tmp_path):
    home = tmp_path / "home"
    path, record = fake_claude(tmp_path)
    assert run_hub(home, "install", "claude-code", cwd=tmp_path).returncode == 0
    out = run_hub(home, "launch", "--name", "ann-api", "--role", "reviewer", "--groups",
                  "backend:lead,ops", "--", "--model", "opus", PATH=path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    ran = json.loads(record.read_text())
    assert ran["argv"] == ["--dangerously-load-development-channels", "server:meshhub",
                           "--model", "opus"]
    assert ran["env"]["MESHHUB_SESSION_NAME"] == "ann-api"
    assert ran["env"]["MESHHUB_ROLE"] == "reviewer"
    assert ran["env"]["MESHHUB_GROUPS"] == "backend:lead,ops"


def test_launch_without_the_server_installed_says_how_and_does_not_start_claude(tmp_path):
    home, project, elsewhere = tmp_path / "home", tmp_path / "project", tmp_path / "elsewhere"
    for d in (home, project / "src", elsewhere):
        d.mkdir(parents=True)
    path, record = fake_claude(tmp_path)
    (home / ".claude.json").write_text(json.dumps(UNRELATED_USER))  # other servers only
    for cwd in (project, elsewhere):
        out = run_hub(home, "launch", "--name", "ann-api", PATH=path, cwd=cwd)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
        assert "`hub install claude-code`" in out.stderr
        assert not record.exists()  # claude was not started

    # installed for the project only: launching in it (or below it) works, elsewhere not
    assert run_hub(home, "install", "claude-code", "--scope", "project",
                   cwd=project).returncode == 0
    out = run_hub(home, "launch", "--name", "ann-api", PATH=path, cwd=project / "src")
    assert out.returncode == 0, out.stderr
    assert json.loads(record.read_text())["argv"][:2] == [
        "--dangerously-load-development-channels", "server:meshhub"]
    record.unlink()
    out = run_hub(home, "launch", "--name", "ann-api", PATH=path, cwd=elsewhere)
    assert out.returncode == 1 and not record.exists()


def test_install_writes_through_a_symlinked_config(tmp_path):
    home = tmp_path / "home"
    dotfiles = tmp_path / "dotfiles"
    real = dotfiles / "claude.json"
    text = write(real, UNRELATED_USER)
    home.mkdir(parents=True, exist_ok=True)
    (home / ".claude.json").symlink_to(real)
    assert run_hub(home, "install", "claude-code").returncode == 0
    assert (home / ".claude.json").is_symlink()  # still the user's link, now with our entry
    assert "meshhub" in json.loads(real.read_text())["mcpServers"]
    assert run_hub(home, "uninstall", "claude-code").returncode == 0
    assert (home / ".claude.json").is_symlink() and real.read_text() == text
