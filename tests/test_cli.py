"""The `hub` command line as a user runs it: set-up, background server, status, errors."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import tomllib

import pytest
import tomli_w

from .helpers import HUB_BIN, base_env, free_port, read_line


def hub(home, *args, timeout=60, **env):
    return subprocess.run([HUB_BIN, *args], env=base_env(home, **env), capture_output=True,
                          text=True, timeout=timeout)


def test_init_writes_private_files(tmp_path):
    home = tmp_path / "ann"
    out = hub(home, "init", "--name", "ann")
    assert out.returncode == 0 and "ann" in out.stdout
    for name in ("identity.key", "config.toml"):
        assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600
    again = hub(home, "init", "--name", "ann")
    assert "kept the existing" in again.stdout


def test_background_start_status_doctor_stop(tmp_path):
    home = tmp_path / "hubhome"
    port = free_port()
    env = {"MESHHUB_PORT": str(port)}
    started = hub(home, "start", "--background", "--port", str(port), **env)
    try:
        assert started.returncode == 0, started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout
        status = hub(home, "status", "--json", **env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["ok"] is True
        twice = hub(home, "start", "--background", "--port", str(port), **env)
        assert twice.returncode == 1 and "already running" in twice.stderr
        doctor = hub(home, "doctor", "--json", **env)
        checks = {c["check"]: c for c in json.loads(doctor.stdout)}
        assert doctor.returncode == 0, doctor.stdout
        assert checks["hub"]["ok"] and checks["identity mode"]["detail"] == "0o600"
        peers = hub(home, "peers", **env)
        assert peers.returncode == 0 and "name" in peers.stdout
    finally:
        stopped = hub(home, "stop", **env)
    assert stopped.returncode == 0, stopped.stderr
    after = hub(home, "status", **env)
    assert after.returncode == 1 and after.stderr.startswith("error: no hub answers")


def test_stop_is_prompt_with_a_watcher_attached(tmp_path):
    home = tmp_path / "hubhome"
    port = free_port()
    env = {"MESHHUB_PORT": str(port)}
    assert hub(home, "start", "--background", "--port", str(port), **env).returncode == 0
    watcher_home = tmp_path / "ann"
    hub(watcher_home, "init", "--name", "ann")
    watch = subprocess.Popen([HUB_BIN, "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=base_env(watcher_home,
                                                     MESHHUB_URL=f"http://127.0.0.1:{port}"))
    try:
        assert "watching as ann" in read_line(watch)
        stopped = hub(home, "stop", **env)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        watch.kill()
        watch.wait(10)
        if hub(home, "status", **env).returncode == 0:
            hub(home, "stop", **env)


def test_user_errors_are_one_line(tmp_path, hub_factory):
    running = hub_factory()
    home = tmp_path / "ann"
    hub(home, "init", "--name", "ann")
    url = {"MESHHUB_URL": running.url}
    cases = [  # errors exit 1, usage errors (the command line itself is wrong) 2
        (("send", "nobody", "hi"), "no peer named 'nobody'", 1),
        (("send", "ann", "hi", "--priority", "soon"), "priority", 2),
        (("call", "no_such_action"), "unknown action", 1),
        (("call", "send", "text"), "name=value", 2),
    ]
    for args, expected, code in cases:
        out = hub(home, *args, **url)
        assert out.returncode == code, (args, out.stdout)
        assert expected in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    no_identity = hub(tmp_path / "nobody", "send", "ann", "hi", **url)
    assert no_identity.returncode == 1 and "hub init" in no_identity.stderr


def test_start_on_a_busy_port_says_so_in_one_line_and_leaves_no_files(tmp_path, hub_factory):
    taken = hub_factory()  # another hub, from another home, holds the port
    expected = (f"error: cannot listen on 127.0.0.1:{taken.port}: address already in use; "
                "is another hub running? pick another with --port")
    for mode in ([], ["--background"]):
        home = tmp_path / f"second{len(mode)}"
        out = hub(home, "start", "--port", str(taken.port), *mode)
        assert out.returncode == 1, (mode, out.stdout, out.stderr)
        assert out.stderr.splitlines() == [expected], (mode, out.stderr)
        assert "listening" not in out.stdout
        assert not sorted(p.name for p in home.glob("meshhub.db*")), mode
        assert not (home / "hub.pid").exists()


def test_start_prints_where_to_connect_before_any_log_line(tmp_path):
    home = tmp_path / "hubhome"
    proc = subprocess.Popen([HUB_BIN, "start", "--port", "0"], env=base_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = [read_line(proc)]
        while " INFO " not in lines[-1] and lines[-1]:
            lines.append(read_line(proc))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert lines[0].startswith("meshhub ") and " listening on http://127.0.0.1:" in lines[0]
    banner = "".join(lines[:-1])
    for where in ("WebSocket peers: ws://", "HTTP API:", "web page:", "MCP (HTTP):",
                  "local socket:"):
        assert where in banner, banner
    assert " INFO " in lines[-1], lines  # the log follows the banner


def test_start_without_a_storage_plugin_says_how_to_fix_it(tmp_path):
    out = hub(tmp_path / "hubhome", "start", "--port", "0",
              MESHHUB_DISABLE_PLUGINS="sqlite_store")
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: no storage plugin is enabled")
    assert "MESHHUB_DISABLE_PLUGINS" in out.stderr and "Traceback" not in out.stderr


def test_commands_find_the_hub_this_home_started(tmp_path, hub_factory):
    running = hub_factory()  # `hub start --port <free port>`: not the default 7420
    home = running.home
    config = tomllib.loads((home / "config.toml").read_text())
    config.setdefault("hub", {})["url"] = "localhost:1"  # what the home remembers
    (home / "config.toml").write_text(tomli_w.dumps(config))
    status = hub(home, "status")
    assert status.returncode == 0, status.stderr
    assert f"at {running.url}:" in status.stdout  # the running hub wins over [hub] url
    env_wins = hub(home, "status", MESHHUB_URL="localhost:1")
    assert env_wins.returncode == 1 and "http://localhost:1" in env_wins.stderr
    flag_wins = hub(home, "--hub", running.url, "status", MESHHUB_URL="localhost:1")
    assert flag_wins.returncode == 0 and running.url in flag_wins.stdout
    running.stop()
    # a pid file a killed hub left, whose pid the system gave to another process since: it
    # does not count, and `hub stop` leaves that process alone
    other = subprocess.Popen(["sleep", "60"])
    try:
        (home / "hub.pid").write_text(f"{other.pid} {running.url}\n")
        stale = hub(home, "status")
        assert stale.returncode == 1 and "http://localhost:1" in stale.stderr  # then [hub] url
        not_ours = hub(home, "stop")
        assert not_ours.returncode == 1 and "no hub is running" in not_ours.stderr
        assert "holds no lock" in not_ours.stderr and other.poll() is None  # not signalled
        # and a hub starts over that file
        again = hub(home, "start", "--background", "--port", "0")
        assert again.returncode == 0, again.stderr
        assert hub(home, "stop").returncode == 0
    finally:
        other.kill()
        other.wait()


def test_one_hub_per_home(tmp_path):
    from meshhub.config import ConfigError, HubLock, running_hub

    first = HubLock(tmp_path)
    try:
        first.write("http://127.0.0.1:7420")
        assert running_hub(tmp_path) == (os.getpid(), "http://127.0.0.1:7420")
        with pytest.raises(ConfigError, match="already running"):
            HubLock(tmp_path)
    finally:
        first.release()
    assert running_hub(tmp_path) is None
    second = HubLock(tmp_path)  # free again
    second.release()


def test_send_reads_the_message_from_stdin_or_a_file(tmp_path, hub, people):
    ann, bob = people("ann", "bob")
    bob.cli(hub.url, "peers")  # bob is a peer now
    env = base_env(ann.home, MESHHUB_URL=hub.url)

    def send(*args, stdin=""):
        return subprocess.run([HUB_BIN, "send", "bob", *args], env=env, input=stdin,
                              capture_output=True, text=True, timeout=60)

    assert send("-", stdin="from stdin\n").returncode == 0
    note = tmp_path / "note.md"
    note.write_text("from a file\nline two\n")
    assert send("--file", str(note)).returncode == 0
    assert send("--file", "-", stdin="stdin via --file").returncode == 0
    inbox = json.loads(bob.cli(hub.url, "inbox", "--json").stdout)["messages"]
    bodies = [m["text"] for m in inbox]
    assert bodies == ["from stdin", "from a file\nline two", "stdin via --file"]
    for args, stdin, says in ((["-"], "  \n", "empty"), (["--file", str(tmp_path / "none")], "",
                                                         "cannot read")):
        out = send(*args, stdin=stdin)
        assert out.returncode == 1 and says in out.stderr, out.stderr
        assert len(out.stderr.splitlines()) == 1
    not_utf8 = subprocess.run([HUB_BIN, "send", "bob", "-"], env=env, input=b"caf\xe9",
                              capture_output=True, timeout=60)
    assert not_utf8.returncode == 1 and not_utf8.stderr.decode().splitlines() == [
        "error: stdin is not UTF-8 text; nothing was sent"]
    as_argument = subprocess.run([HUB_BIN.encode(), b"send", b"bob", b"caf\xe9"], env=env,
                                 capture_output=True, timeout=60)
    assert as_argument.returncode == 1 and b"not UTF-8" in as_argument.stderr
    assert b"Traceback" not in not_utf8.stderr + as_argument.stderr


def test_actions_show_whole_first_sentences(tmp_path):
    out = hub(tmp_path / "ann", "actions")
    assert out.returncode == 0, out.stderr
    assert ("Ask someone to approve something; the first answer from any of their surfaces "
            "comes back to you as a message of kind ``approval_answer`` (and in "
            "``approvals``).") in out.stdout
    assert "join this hub (`hub join CODE`).\n" in out.stdout
    described = json.loads(hub(tmp_path / "ann", "actions", "--json").stdout)
    for action in described:
        whole = " ".join(action["description"].split())
        assert whole.startswith(action["summary"]), action["name"]
        assert action["summary"].endswith((".", ")")) or action["summary"] == whole
