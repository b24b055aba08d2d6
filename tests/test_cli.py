"""The `hub` command line as a user runs it: set-up, background server, status, errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from .helpers import HUB_BIN, base_env, free_port


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
        assert watch.stdout is not None and "watching as ann" in watch.stdout.readline()
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
    cases = [
        (("send", "nobody", "hi"), "no peer named 'nobody'"),
        (("send", "ann", "hi", "--priority", "soon"), "priority"),
        (("call", "no_such_action"), "unknown action"),
        (("call", "send", "text"), "name=value"),
    ]
    for args, expected in cases:
        out = hub(home, *args, **url)
        assert out.returncode == 1, (args, out.stdout)
        assert expected in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    no_identity = hub(tmp_path / "nobody", "send", "ann", "hi", **url)
    assert no_identity.returncode == 1 and "hub init" in no_identity.stderr
