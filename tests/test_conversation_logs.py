"""Conversation logs (meshhub.builtins.conversation_logs): the ``.log`` and ``.jsonl`` files a
real hub writes for its messages, read back as ``grep`` and ``jq`` would."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from meshhub.builtins.conversation_logs import LogWriter, file_stem, log_line, settings
from meshhub.config import ConfigError

from .helpers import collect


def logs_of(hub) -> Path:  # type: ignore[no-untyped-def]
    return Path(hub.hub.config.home) / "logs" / "conversations"


def jsonl(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("conversation", "pair", "stem"), [
    ("#general", None, "general"),
    ("#backend/db", None, "backend+db"),
    ("@ops", None, "@ops"),
    ("*", None, "@all"),
    ("multi", None, "+multi"),
    ("dm", ("bob", "Ann"), "dm+ann+bob"),
])
def test_file_names_read_like_the_conversation(conversation, pair, stem):
    assert file_stem(conversation, pair) == stem


@pytest.mark.parametrize("hostile", ["#../../etc/passwd", "#.hidden", "#a\x00b", "#" + "x" * 300,
                                     "#", "#a/../../b", "#é"])
def test_a_file_name_never_leaves_the_directory(hostile, tmp_path):
    stem = file_stem(hostile)
    assert "/" not in stem and "\x00" not in stem and stem[0] not in ".-"
    assert 0 < len(stem) <= 130
    assert (tmp_path / (stem + ".log")).resolve().parent == tmp_path.resolve()
    assert file_stem(hostile) != file_stem(hostile + "x")


async def test_messages_land_in_grep_and_jq_friendly_files(inproc, people):
    hub = await inproc()
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b, carl.client(hub.url) as c:
        await b.call("conversation_create", name="ops")
        await c.call("conversation_join", name="ops")
        sent = [
            await a.send("bob", "hello bob"),
            await a.send("#ops", "deploy at 5\nthen \x1b[2Jwatch \u202eit"),
            await a.send("#ops", "only for bob", whisper=["bob"]),
            await a.send("carl", "", kind="decision",
                         data={"decision": "ship", "rationale": "green"}),
        ]
        await collect(b, 3)
        await collect(c, 2)
        await b.send("ann", "hello ann")
        await collect(a, 1)
    await hub.stop()  # the writer writes what is queued before it stops
    root = logs_of(hub)
    assert mode(root) == 0o700
    names = sorted(p.name for p in root.iterdir())
    assert names == ["dm+ann+bob.jsonl", "dm+ann+bob.log", "dm+ann+carl.jsonl",
                     "dm+ann+carl.log", "ops.jsonl", "ops.log"]
    assert all(mode(root / n) == 0o600 for n in names)

    pair = (root / "dm+ann+bob.log").read_text().splitlines()
    assert len(pair) == 2 and "ann -> bob: hello bob" in pair[0]
    assert "bob -> ann: hello ann" in pair[1]

    ops = (root / "ops.log").read_text().splitlines()
    assert len(ops) == 2
    assert sent[1]["id"] in ops[0]
    assert ops[0].endswith("ann -> #ops: deploy at 5\\nthen \\x1b[2Jwatch \\u202eit")
    assert "\x1b" not in (root / "ops.log").read_text()
    assert "[whisper: bob]" in ops[1] and ops[1].endswith(": only for bob")

    views = jsonl(root / "ops.jsonl")
    assert [v["id"] for v in views] == [sent[1]["id"], sent[2]["id"]]
    assert views[0]["text"] == "deploy at 5\nthen \x1b[2Jwatch \u202eit"  # exact, for jq
    assert views[1]["whisper"] == ["bob"]
    assert "\u202e" not in (root / "ops.jsonl").read_text()  # escaped, as \u202e

    decision = (root / "dm+ann+carl.log").read_text()
    assert "ann -> carl [decision]: Decision: ship\\nRationale: green" in decision
    (view,) = jsonl(root / "dm+ann+carl.jsonl")
    assert view["kind"] == "decision" and view["data"] == {"decision": "ship",
                                                           "rationale": "green"}


async def test_files_rotate_by_size(inproc, people):
    hub = await inproc(send_rate=0, raw={"logs": {"max_bytes": 2048, "backups": 2}})
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url, receive=False) as a, bob.client(hub.url, receive=False) as b:
        await b.call("conversation_join", name="general")
        for i in range(60):
            await a.send("#general", f"line {i:03d} " + "x" * 60)
    await hub.stop()
    root = logs_of(hub)
    assert sorted(p.name for p in root.glob("general.log*")) == [
        "general.log", "general.log.1", "general.log.2"]
    for path in root.glob("general.*"):
        assert path.stat().st_size <= 2048 and mode(path) == 0o600
    newest = (root / "general.log").read_text().splitlines()
    assert newest[-1].endswith("line 059 " + "x" * 60)
    kept = [json.loads(line)["text"][:8] for path in sorted(root.glob("general.jsonl*"))
            for line in path.read_text().splitlines()]
    assert "line 059" in kept and "line 000" not in kept  # the oldest rotated away


async def test_logs_can_be_switched_off(inproc, people):
    hub = await inproc(raw={"logs": {"conversations": False}})
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        await a.send("bob", "not logged")
        await collect(b, 1)
    await hub.stop()
    assert not logs_of(hub).exists()


async def test_a_bad_setting_fails_the_plugin_not_the_hub(inproc, people):
    hub = await inproc(raw={"logs": {"max_bytes": "big"}})
    (ann,) = people("ann")
    async with ann.client(hub.url) as a:
        await a.send("ann", "still delivered")
        table = {p["name"]: p for p in await a.call("plugins_list")}
    record = table["conversation_logs"]
    assert record["status"] == "failed" and "max_bytes" in record["error"]


def test_a_line_shows_what_a_reader_needs():
    view = {"id": "01", "from": "ann", "to": "#ops", "kind": "text", "whisper": [],
            "reply_to": "00", "priority": "now", "attachments": [{"name": "a.txt"}],
            "text": "a\tb\\n", "created_at": 0.0}
    assert log_line(view) == ("1970-01-01T00:00:00.000Z 01 ann -> #ops [reply to 00] [now] "
                              "[files: a.txt]: a\\tb\\\\n")


def test_settings_are_checked():
    assert settings({}) == (True, 10 * 1024 * 1024, 5)
    assert settings({"conversations": False, "max_bytes": 4096, "backups": 1}) == (
        False, 4096, 1)
    for bad, word in (({"backups": 0}, "backups"), ({"max_bytes": 10}, "max_bytes"),
                      ({"conversations": "no"}, "conversations")):
        with pytest.raises(ConfigError, match=word):
            settings(bad)


def test_a_long_text_is_cut_in_the_log_line_only():
    view = {"id": "01", "from": "ann", "to": "bob", "kind": "text", "whisper": [],
            "reply_to": None, "priority": "next", "attachments": [],
            "text": "y" * 5000, "created_at": 0.0}
    assert log_line(view).endswith("y" * 4000 + " [... 1000 more characters in the .jsonl]")


def test_the_queue_is_bounded_by_the_bytes_of_its_text(tmp_path):
    writer = LogWriter(tmp_path / "logs", 1 << 20, 1, max_pending_bytes=10_000)
    view = {"id": "m", "created_at": 0.0, "from": "ann", "to": "#general", "kind": "text",
            "whisper": [], "reply_to": None, "priority": "next", "attachments": [],
            "text": "x" * 3000}
    for n in range(3):  # 3000 characters and the overhead each: the third is past 10,000
        writer.put(view | {"id": f"m{n}"}, ["general"])
    assert writer.dropped == 1
    writer.start()
    writer.close()  # writes what was queued
    assert len((tmp_path / "logs" / "general.log").read_text().splitlines()) == 2
    assert writer.pending_bytes == 0


async def test_sends_in_flight_at_a_stop_are_logged(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url, receive=False) as a, bob.client(served.url, receive=False):
        sender = served.hub.directory.peers[a.peer["key"]]
    pending = [await served.hub.prepare_send(sender, "bob", f"late {n}") for n in range(300)]
    # their senders wait for them, as a surface does; the stop comes first
    waiting = [asyncio.ensure_future(p.wait()) for p in pending]
    await served.stop()  # it lets them commit and run their hooks before the logs close
    assert all(w.done() for w in waiting)
    lines = (logs_of(served) / "dm+ann+bob.log").read_text().splitlines()
    assert len(lines) == 300 and lines[-1].endswith(": late 299")
