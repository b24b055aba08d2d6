"""README.md's quick start, run step by step as a new user would: two homes, `hub watch` in the
background, and every line the README shows compared with what the commands print."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from .helpers import HUB_BIN, base_env, free_port, read_line

README = Path(__file__).resolve().parent.parent / "README.md"

# what a user can never reproduce byte for byte: message ids, peer keys, clock times
_VARYING = [
    (re.compile(r"\b[0-9a-f]{24}\b"), "<id>"),
    (re.compile(r"\b[0-9a-f]{8}\b"), "<key>"),
    (re.compile(r"\b\d\d:\d\d:\d\d\b"), "<time>"),
]


def normal(text: str) -> list[str]:
    for pattern, placeholder in _VARYING:
        text = pattern.sub(placeholder, text)
    return [line.rstrip() for line in text.strip().splitlines()]


def quick_start_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("## Quick start")
    section = text[start:text.index("\n## ", start + 1)]
    return re.findall(r"```\n(.*?)```", section, flags=re.S)


def commands(block: str) -> list[list[str]]:
    """The commands of a README block, as argument lists (comments dropped)."""
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_readme_quick_start_prints_what_it_says(tmp_path: Path) -> None:
    blocks = quick_start_blocks()
    # the scenario below runs exactly these commands, in this order: a README edit that
    # changes them fails here first
    assert [commands(b) for b in blocks if b.startswith(("hub ", "export "))] == [
        [["hub", "init", "--name", "ann"], ["hub", "start", "--background"], ["hub", "watch"]],
        [["export", "MESHHUB_HOME=~/.meshhub-bob"], ["hub", "init", "--name", "bob"],
         ["hub", "peers"]],
        [["hub", "send", "ann", "hello from bob"]],
        [["hub", "send", "bob", "hi bob"]],
        [["hub", "inbox"]],
    ]
    shown = [b for b in blocks if not b.startswith(("hub ", "export "))]
    peers_shown, sent_shown, watch_shown, reply_shown, inbox_shown = shown

    port = str(free_port())
    ann_home, bob_home = tmp_path / ".meshhub", tmp_path / ".meshhub-bob"

    def hub(home: Path, *args: str) -> str:
        out = subprocess.run([HUB_BIN, *args], env=base_env(home, MESHHUB_PORT=port),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        return out.stdout

    hub(ann_home, "init", "--name", "ann")
    hub(ann_home, "start", "--background")
    try:
        watch = subprocess.Popen([HUB_BIN, "watch"], env=base_env(ann_home, MESHHUB_PORT=port),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = read_line(watch)  # watching: ann is connected from here on
            hub(bob_home, "init", "--name", "bob")
            assert normal(hub(bob_home, "peers")) == normal(peers_shown)
            assert normal(hub(bob_home, "send", "ann", "hello from bob")) == normal(sent_shown)
            seen = [first]
            while len(seen) < len(normal(watch_shown)):
                seen.append(read_line(watch))
            assert normal("".join(seen)) == normal(watch_shown)
        finally:
            watch.terminate()
            watch.wait(10)
        assert normal(hub(ann_home, "send", "bob", "hi bob")) == normal(reply_shown)
        assert normal(hub(bob_home, "inbox")) == normal(inbox_shown)
        assert normal(hub(bob_home, "inbox")) == ["no unread messages"]  # read as shown
    finally:
        subprocess.run([HUB_BIN, "stop"], env=base_env(ann_home, MESHHUB_PORT=port),
                       capture_output=True, timeout=60)
