"""Hook latency: how long Claude Code waits for ``hub hook <event>`` after a tool call, with the
hub up and with it down, against ``python -c pass`` run by the same interpreter in the same run
(the floor for any Python command).

    python bench/hook_latency.py [--n 40] [--quick] [--summary-json]

What runs (all on this machine; every child stopped by handle at the end, even on error): a real
``hub start`` child and a real ``hub mcp`` session process (stdin held open, as Claude Code does),
one temporary ``MESHHUB_HOME`` and a private socket directory. One message waits for the
session, so the first ``post-tool-use`` names it and every later one asks the hub's inbox and
finds nothing new: the path Claude Code takes after almost every tool call. Each sample runs the
``hub`` executable as Claude Code does (a new process, the hook's JSON on stdin); the samples of
the rows of one phase are interleaved, so a noisy moment hits them all alike.

Rows: ``python -c pass``; ``hub hook post-tool-use`` (after a Bash call, and after an Edit: the
session also reports the edited file, in a git checkout, to the hub within the answer's budget)
and ``user-prompt-submit`` with the hub up;
``post-tool-use`` with the hub stopped (the session still running) and with no session at all;
``hub --version`` (the full command line, for reference: what a hook cost before it had its own
entry point). Goals: the ``post-tool-use`` p50s (hub up, after Bash and after Edit; hub down)
<= 100 ms.

A hook that did nothing (a dead session, no socket) answers just as fast, so after each phase
the bench checks, untimed, that the hooks did their work, and exits non-zero if not: with the
hub up, hub and session still run, the hub shows the session ``working`` (user-prompt-submit),
the edited file active (``files_active``) and post-tool-use names a newly sent message; with
the hub down, the session still runs and answers on its hook socket.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from goals import Goal, report
from ws_throughput import free_port, health

from meshhub.config import init_home
from meshhub.local import session_socket

HUB = str(Path(sys.executable).with_name("hub"))
SESSION = "ann-bench"
GOAL_MS = 100.0


def eventually(check: Callable[[], bool], timeout: float) -> bool:
    """``check()`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    if not eventually(check, timeout):
        raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timed(argv: list[str], env: dict[str, str], stdin: bytes) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, input=stdin, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])} exited {out.returncode}")
    return elapsed, out.stdout


def sample(rows: dict[str, list[str]], n: int, env: dict[str, str], stdin: bytes,
           inputs: dict[str, bytes] | None = None) -> dict[str, list[float]]:
    """``n`` runs of each command, interleaved; seconds per run. ``inputs``: the rows given
    another stdin than ``stdin``."""
    times: dict[str, list[float]] = {label: [] for label in rows}
    for _ in range(n):
        for label, argv in rows.items():
            times[label].append(timed(argv, env, (inputs or {}).get(label, stdin))[0])
    return times


def fail(what: str) -> None:
    """End the run: a hook that answers fast because it did nothing must not pass its goal."""
    raise SystemExit(f"hook_latency: {what}; the timings would not measure a working hook")


def alive(proc: subprocess.Popen[bytes], what: str) -> None:
    if proc.poll() is not None:
        fail(f"{what} exited (code {proc.returncode}) during the run")


def status_on_hub(env: dict[str, str]) -> str | None:
    """The session's status as the hub shows it (``hub peers --json``)."""
    out = subprocess.run([HUB, "peers", "--json"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, check=True).stdout
    return next((p["status"] for p in json.loads(out) if p["name"] == SESSION), None)


def edited_on_hub(env: dict[str, str]) -> bool:
    """The session's edited file is active on the hub (``hub call files_active``)."""
    out = subprocess.run([HUB, "call", "files_active"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
    return any(f["peer"] == SESSION and f["path"] == "src/app.py"
               for f in json.loads(out)["files"])


def checkout(root: Path) -> Path:
    """A git checkout with an origin remote and the file the Edit rows edit."""
    root.mkdir()
    for args in (["init", "-q"], ["remote", "add", "origin", "git@example.com:acme/app.git"]):
        subprocess.run(["git", *args], cwd=root, check=True, stdout=subprocess.DEVNULL)
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('hi')\n")
    return root


def socket_answers(path: Path) -> bool:
    """The session process answers a hook request on its socket (with the hub down the hook
    prints nothing either way, so its output cannot tell an answer from no session)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(path))
        s.sendall(json.dumps({"v": 1, "event": "post-tool-use"}).encode() + b"\n")
        return s.makefile("rb").readline().startswith(b'{"output"')
    return False


def p50_p99(samples: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in samples)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def run(n: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="meshhub-hook-bench-") as tmp:
        root = Path(tmp)
        sockets = root / "sockets"
        sockets.mkdir(mode=0o700)
        os.environ["MESHHUB_SOCKET_DIR"] = str(sockets)  # for session_socket() below too
        home = root / "home"
        init_home(home, "ann")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHHUB_")}
        env.update(MESHHUB_HOME=str(home), MESHHUB_SOCKET_DIR=str(sockets),
                   MESHHUB_SESSION_NAME=SESSION)
        stdin = json.dumps({
            "session_id": "0" * 36, "hook_event_name": "PostToolUse", "cwd": str(root),
            "tool_name": "Bash", "tool_input": {"command": "ls -la"},
            "tool_response": {"stdout": "x" * 2000, "stderr": ""},
        }).encode()
        repo = checkout(root / "app")
        edit = json.dumps({
            "session_id": "0" * 36, "hook_event_name": "PostToolUse", "cwd": str(repo),
            "tool_name": "Edit", "tool_input": {"file_path": str(repo / "src" / "app.py"),
                                                "old_string": "hi", "new_string": "ho"},
            "tool_response": {"filePath": str(repo / "src" / "app.py"), "success": True},
        }).encode()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            hub = subprocess.Popen([HUB, "start", "--host", "127.0.0.1", "--port", str(port),
                                    "--log-level", "warning"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(hub)
            wait_for(lambda: health(url) is not None, "the hub's start")
            session = subprocess.Popen([HUB, "mcp", "--mode", "off"], env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, cwd=root)
            procs.append(session)
            wait_for(session_socket(home, SESSION).is_socket, "the session's hook socket")
            hook = [HUB, "hook", "post-tool-use"]

            def named() -> bool:
                return b"new unread" in timed(hook, env, stdin)[1]

            def message() -> None:
                subprocess.run([HUB, "send", SESSION, "waiting for the bench"], env=env,
                               check=True, stdout=subprocess.DEVNULL)

            message()
            wait_for(named, "the first post-tool-use naming the message")
            if status_on_hub(env) == "working":
                fail("the session shows 'working' before any user-prompt-submit")
            up = sample({"python -c pass": [sys.executable, "-c", "pass"],
                         "hook post-tool-use, hub up": hook,
                         "hook post-tool-use Edit, hub up": hook,
                         "hook user-prompt-submit, hub up": [HUB, "hook", "user-prompt-submit"],
                         "hub --version (full CLI)": [HUB, "--version"]}, n, env, stdin,
                        {"hook post-tool-use Edit, hub up": edit})
            # untimed: the hooks reached the session and, through it, the hub
            alive(hub, "the hub")
            alive(session, "the session (hub mcp)")
            if not eventually(lambda: status_on_hub(env) == "working", 5):
                fail("user-prompt-submit did not make the session 'working' on the hub (it is "
                     f"{status_on_hub(env)})")
            if not edited_on_hub(env):
                fail("post-tool-use after an Edit did not report the file to the hub")
            message()
            if not eventually(named, 10):
                fail("post-tool-use did not name a new message after the timed phase")
            stop(hub)
            down = sample({"python -c pass (hub down)": [sys.executable, "-c", "pass"],
                           "hook post-tool-use, hub down": hook}, n, env, stdin)
            alive(session, "the session (hub mcp)")
            if not socket_answers(session_socket(home, SESSION)):
                fail("the session did not answer on its hook socket with the hub down")
            stop(session)
            alone = sample({"hook post-tool-use, no session": hook}, n, env, stdin)
        finally:
            for proc in procs:
                stop(proc)
    return {**up, **down, **alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="runs of each command")
    parser.add_argument("--quick", action="store_true", help="a brief run (--n 15)")
    parser.add_argument("--summary-json", action="store_true",
                        help="also print the GOALS line bench/run-all reads")
    args = parser.parse_args()
    n = 15 if args.quick else args.n
    times = run(n)
    print(f"hub hook: {n} runs of each command, p50 / p99 in ms")
    for label, samples in times.items():
        p50, p99 = p50_p99(samples)
        print(f"  {label:<34} {p50:7.1f} {p99:8.1f}")
    base_up = p50_p99(times["python -c pass"])[0]
    base_down = p50_p99(times["python -c pass (hub down)"])[0]
    goals = [
        Goal("hook", "post-tool-use p50, hub up", p50_p99(times["hook post-tool-use, hub up"])[0],
             "ms", GOAL_MS, baseline=base_up, ratio_goal=False),
        Goal("hook", "post-tool-use after Edit p50, hub up",
             p50_p99(times["hook post-tool-use Edit, hub up"])[0], "ms", GOAL_MS,
             baseline=base_up, ratio_goal=False),
        Goal("hook", "post-tool-use p50, hub down",
             p50_p99(times["hook post-tool-use, hub down"])[0], "ms", GOAL_MS,
             baseline=base_down, ratio_goal=False),
    ]
    report(goals, args.summary_json)


if __name__ == "__main__":
    main()
