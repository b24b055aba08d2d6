"""Structured messages (meshhub.kinds): each kind sent through the client library and the HTTP
API, checked, stored with its fields in ``data`` and shown as readable text on the CLI and
Telegram."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any, get_args

import aiohttp
import pytest

from meshhub.client import MeshClient
from meshhub.errors import InvalidRequest, MeshError, TooLarge
from meshhub.kinds import KIND_NAMES, KINDS, Kind, body_of, prepare
from meshhub.render import to_text
from meshhub_mcp.context import parse_status

from .fakes.telegram_api import TgUser
from .helpers import Identity, collect
from .test_mcp import mcp_params, stdio_session

ANN = TgUser(5101, "Ann", "Smith", username="ann_s")

SAMPLES: dict[str, tuple[dict[str, object], list[str]]] = {
    "question": ({"question": "Which port does the hub use?", "format": "a number"},
                 ["Question: Which port does the hub use?", "Expected answer: a number"]),
    "decision": ({"decision": "Keep SQLite", "rationale": "one file, WAL, enough"},
                 ["Decision: Keep SQLite", "Rationale: one file, WAL, enough"]),
    "context_share": ({"summary": "auth is half done"}, ["Context: auth is half done"]),
    "review_request": ({"path": "core/__init__.py", "description": "the new hook"},
                       ["Review requested: core/__init__.py", "Description: the new hook"]),
    "handoff": ({"completed": "the parser", "remaining": "the docs",
                 "files_modified": ["core/a_b.py", "docs/x.md"], "decisions": ["no regex"]},
                ["Handoff", "Completed: the parser", "Remaining: the docs", "Files modified:",
                 "- core/a_b.py", "- docs/x.md", "Decisions:", "- no regex"]),
}


def test_every_kind_has_a_sample_and_the_literal_matches_the_table():
    assert KIND_NAMES == get_args(Kind) == ("text", *KINDS)
    assert set(SAMPLES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_each_kind_reads_as_plain_lines(kind):
    data, lines = SAMPLES[kind]
    body, fields = prepare(kind, data, "", 64 * 1024)
    assert fields == data
    shown = [line for line in to_text(body).splitlines() if line]
    assert shown == lines


def test_a_value_cannot_run_into_the_next_label():
    fields = {"completed": "- one\n- two", "remaining": "three", "files_modified": [],
              "decisions": []}
    shown = to_text(body_of("handoff", fields)).splitlines()
    assert "- two" in shown and "Remaining: three" in shown
    assert "Files modified: none" in shown


@pytest.mark.parametrize(("kind", "data", "field", "words"), [
    ("decision", {"decision": "x"}, "rationale", "needs rationale"),
    ("question", {"format": "yes or no"}, "question", "needs question"),
    ("decision", {"decision": "x", "rationale": 5}, "rationale", "as a string"),
    ("decision", {"decision": "  ", "rationale": "y"}, "decision", "empty"),
    ("handoff", {"completed": "a", "remaining": "b", "files_modified": "a.py",
                 "decisions": []}, "files_modified", "list of strings"),
    ("context_share", {"summary": "s", "origin": {"connector": "telegram"}}, "origin",
     "no field"),
    ("context_share", {"summary": "s", "context": {"branch": ["x"]}}, "context", "branch"),
    ("text", {"summary": "s"}, "data", "carries no data"),
    ("decision", None, "data", "needs data"),
    ("review_request", {"path": "src/a.py\nDescription: approved", "description": "d"},
     "path", "on one line"),
    ("review_request", {"path": "src/a.py\u2028Description: approved", "description": "d"},
     "path", "no line break"),
    ("handoff", {"completed": "a", "remaining": "b", "files_modified": ["a.py\rDecisions:"],
                 "decisions": []}, "files_modified", "on one line"),
])
def test_refusals_name_the_field_and_the_kind(kind, data, field, words):
    with pytest.raises(InvalidRequest, match=words) as refused:
        prepare(kind, data, "", 64 * 1024)
    assert refused.value.details == {"field": field, "kind": kind}
    assert field in refused.value.message


def test_the_size_limit_holds_for_text_and_data_together():
    data = {"decision": "d" * 600, "rationale": "r"}
    prepare("decision", data, "", 2000)
    with pytest.raises(TooLarge, match="its text and its data"):
        prepare("decision", data, "", 1000)


async def test_each_kind_through_the_client_library(inproc, people):
    hub = await inproc()
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        for kind, (data, lines) in SAMPLES.items():
            sent = await a.send("bob", "see the PR", kind=kind, data=data)
            got = (await collect(b, 1))[0]
            assert got["id"] == sent["id"] and got["kind"] == kind and got["data"] == data
            shown = [line for line in to_text(got["text"]).splitlines() if line]
            assert shown == [*lines, "see the PR"]
        with pytest.raises(MeshError) as refused:
            await a.send("bob", "", kind="decision", data={"decision": "x"})
        assert refused.value.code == "invalid_request"
        assert refused.value.details == {"field": "rationale", "kind": "decision"}
        with pytest.raises(MeshError) as unknown:
            await a.send("bob", "hi", kind="approval", data={"approval_id": "x"})
        assert unknown.value.code == "invalid_request"
        plain = await a.send("bob", "just words")
        got = (await collect(b, 1))[0]
        assert got["id"] == plain["id"] and got["kind"] == "text" and got["data"] is None


async def test_each_kind_through_the_http_api(inproc, people):
    hub = await inproc()
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url, receive=False) as b:
        token = (await a.call("token_create", label="bot", cap="send"))["token"]
        await b.call("whoami")
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        for kind, (data, _) in SAMPLES.items():
            async with http.post(hub.url + "/api/send", headers=auth,
                                 json={"to": "bob", "kind": kind, "data": data}) as resp:
                assert resp.status == 200, await resp.text()
        async with http.post(hub.url + "/api/send", headers=auth, json={
                "to": "bob", "kind": "review_request", "data": {"path": "a.py"}}) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert error["code"] == "invalid_request" and "description" in error["message"]
            assert error["details"] == {"field": "description", "kind": "review_request"}
    async with bob.client(hub.url, receive=False) as b:
        inbox = await b.call("inbox", limit=10)
    assert [m["kind"] for m in inbox["messages"]] == list(SAMPLES)
    assert [m["data"] for m in inbox["messages"]] == [d for d, _ in SAMPLES.values()]
    assert inbox["messages"][1]["text"] == "Decision: Keep SQLite\nRationale: one file, WAL, enough"


async def test_the_cli_shows_the_fields(inproc, people):
    hub = await inproc()
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url, receive=False):
        await a.send("bob", "", kind="decision",
                     data={"decision": "Keep \x1b[2J SQLite", "rationale": "one file"})
    shown = (await asyncio.to_thread(bob.cli, hub.url, "inbox")).stdout  # the hub is in this loop
    assert "ann: Decision: Keep \\x1b[2J SQLite\n    Rationale: one file" in shown


async def test_telegram_shows_the_fields_and_no_approval_buttons(tg_hub, tmp_path):
    from .helpers import make_identity

    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await c.send("Ann-Smith", "", kind="question",
                     data={"question": "Ship <it> today?", "format": "yes or no"})
        out = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == ANN.id
                                and "Ship" in m["text"])
    assert "Question: Ship &lt;it&gt; today?" in out["text"]
    assert "Expected answer: yes or no" in out["text"]
    assert "reply_markup" not in out or not out["reply_markup"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


async def _decision_from(session_dir: Path, ann: Identity, hub_url: str, b: MeshClient,
                         **env: str) -> dict[str, Any]:
    """The data of a decision the session in ``session_dir`` sends bob."""
    params = mcp_params(ann, hub_url, "--name", "ann-s", **env)
    params.cwd = session_dir
    async with stdio_session(params) as s:
        await s.call("mesh_set_summary", summary="wiring the parser")
        await s.call("mesh_send", to="bob", kind="decision",
                     data={"decision": "ship", "rationale": "green"})
        await s.call("mesh_send", to="bob", text="plain words")
        decision, plain = await collect(b, 2)
    assert plain["data"] is None and decision["kind"] == "decision"
    assert decision["text"] == "Decision: ship\nRationale: green"
    return dict(decision["data"])


async def test_hub_mcp_attaches_a_context_snapshot(inproc, people, tmp_path):
    hub = await inproc()
    ann, bob = people("ann", "bob")
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("one")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    _git(repo, "checkout", "-q", "-b", "feature/x")
    (repo / "a.txt").write_text("two")
    (repo / "sub" / "b_c.py").write_text("new")
    plain = tmp_path / "plain"
    plain.mkdir()
    no_git = tmp_path / "bin-without-git"
    no_git.mkdir()
    async with bob.client(hub.url) as b:
        data = await _decision_from(repo, ann, hub.url, b)
        context = data.pop("context")
        assert data == {"decision": "ship", "rationale": "green"}
        assert context.pop("changed_files") in (["a.txt", "sub/b_c.py"], ["sub/b_c.py", "a.txt"])
        assert context == {"cwd": str(repo), "branch": "feature/x",
                           "summary": "wiring the parser"}
        outside = (await _decision_from(plain, ann, hub.url, b))["context"]
        assert outside == {"cwd": str(plain), "summary": "wiring the parser"}
        without = (await _decision_from(repo, ann, hub.url, b, PATH=str(no_git)))["context"]
        assert without == {"cwd": str(repo), "summary": "wiring the parser"}


@pytest.mark.parametrize(("output", "branch", "paths"), [
    (b"## main...origin/main [ahead 1]\0 M a.py\0R  new.py\0old.py\0?? b c.txt\0",
     "main", ["a.py", "new.py", "b c.txt"]),
    (b"## No commits yet on trunk\0A  x\0", "trunk", ["x"]),
    (b"## HEAD (no branch)\0", "HEAD", []),
    # renamed in the work tree (second column), and a copy in either: the source follows
    (b"## main\0 R new.py\0old.py\0RM moved.py\0from.py\0 C dup.py\0orig.py\0 M z.py\0",
     "main", ["new.py", "moved.py", "dup.py", "z.py"]),
])
def test_git_status_is_read_with_renames_and_odd_branches(output, branch, paths):
    assert parse_status(output) == (branch, paths)
