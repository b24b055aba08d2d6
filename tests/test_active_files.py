"""Active files and edit conflicts end to end: the client library, the HTTP API, and real
`hub mcp` sessions whose PostToolUse hooks (`hub hook post-tool-use`) report an edited file,
against a real hub on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from meshhub.builtins.active_files import settings
from meshhub.cli.hook import edited
from meshhub.client import MeshClient
from meshhub.config import ConfigError
from meshhub.errors import InvalidRequest, MeshError, TooLarge
from meshhub.report import build_report
from meshhub_mcp.active_files import ActiveFiles, repo_identity

from .helpers import HUB_BIN, api_call, base_env, eventually, free_port, make_identity, token_for
from .test_mcp import Session, mcp_params, stdio_session
from .test_mcp_install import start_session, stop_session

FILE = "github.com/acme/app:src/app.py"
MARKED = "example.com/acme/app:marker.py"


MARKER = "/srv/marker.py"


async def conflicts_before_marker(client: MeshClient) -> list[dict[str, Any]]:
    """The ``file_conflicts`` record events the client receives before the one over
    :data:`MARKER` (made after the actions under test: the feed tells changes in order)."""
    found = []
    while (event := await next_conflict(client))["value"]["file"] != MARKER:
        found.append(event)
    return found


async def next_conflict(client: MeshClient) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            event = await client.events.get()
            if event.get("event") == "record" and event.get("collection") == "file_conflicts":
                return event


async def test_one_conflict_per_pair_and_file_through_the_client_and_http(inproc, tmp_path):
    served = await inproc()
    since = time.time() - 1
    ann, bob, cy, dee = (make_identity(tmp_path / "people", n) for n in ("ann", "bob", "cy", "dee"))
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            cy.client(served.url, groups={"ops": "member"}) as c, \
            dee.client(served.url, groups={"ops": "member"}) as d:
        first = await a.call("files_editing", paths=["src/app.py"], repo="github.com/acme/app")
        assert first == {"files": [FILE], "conflicts": []}
        token = await token_for(b)
        second = await api_call(served.url, token, "files_editing", paths=["./src/app.py"],
                                repo="github.com/acme/app")
        (conflict,) = second["conflicts"]
        assert conflict["file"] == FILE and conflict["path"] == "src/app.py"
        assert sorted(p["name"] for p in conflict["peers"]) == ["ann", "bob"]
        for client in (a, b):  # both hear of it, naming the other and since when
            event = await next_conflict(client)
            assert event["op"] == "put" and event["value"] == conflict
            assert all(p["since"] > since for p in event["value"]["peers"])

        again = await b.call("files_editing", paths=["src/app.py"], repo="github.com/acme/app")
        assert again["conflicts"] == []  # told once per pair and file
        await a.call("files_editing", paths=["src/app.py"], repo="github.com/acme/app")
        other = await c.call("files_editing", paths=["src/app.py"], repo="github.com/acme/app")
        assert other["conflicts"] == []  # cy shares no group with ann and bob
        before_marker = time.time()
        for one, two in ((a, b), (c, d)):
            for client in (one, two):
                await client.call("files_editing", paths=[MARKER])
        for client in (a, b, c):
            assert await conflicts_before_marker(client) == []
        await d.call("files_done")

        for client in (a, b, c):
            await client.call("files_done", paths=[MARKER])

        seen = await a.call("files_active")
        assert [(f["peer"], f["file"]) for f in seen["files"]] == [("ann", FILE), ("bob", FILE)]
        assert [f["peer"] for f in (await c.call("files_active"))["files"]] == ["cy"]
        assert (await c.call("files_active", group="ops"))["files"][0]["peer"] == "cy"
        assert (await a.call("files_active", group="ops"))["files"] == []

        peers = served.hub.directory.peers
        report = await build_report(served.hub, peers[a.peer["key"]], since, time.time() + 1)
        assert "## Active files" in report and r"github\.com/acme/app:src/app\.py" in report
        assert "ann (since" in report and "bob (since" in report
        report = await build_report(served.hub, peers[c.peer["key"]], since, before_marker)
        assert "Active files" not in report

        assert await b.call("files_done") == {"done": 1}
        assert [f["peer"] for f in (await a.call("files_active"))["files"]] == ["ann"]
        done = await api_call(served.url, token, "files_done", paths=["src/app.py"],
                              repo="github.com/acme/app")
        assert done == {"done": 0}


async def test_bad_paths_are_refused_naming_the_field(inproc, tmp_path):
    served = await inproc()
    ann = make_identity(tmp_path / "people", "ann")
    async with ann.client(served.url) as a:
        with pytest.raises(InvalidRequest, match="not absolute"):
            await a.call("files_editing", paths=["src/app.py"])
        with pytest.raises(InvalidRequest, match="inside the repository"):
            await a.call("files_editing", paths=["../etc/passwd"], repo="github.com/acme/app")
        with pytest.raises(InvalidRequest, match="paths"):
            await a.call("files_editing", paths=["/srv/a\nb"])
        with pytest.raises(InvalidRequest, match="paths.0 is over its limit: at most 1024"):
            await a.call("files_editing", paths=["/" + "x" * 2000])
        with pytest.raises(InvalidRequest):
            await a.call("files_editing", paths=[])
        assert (await a.call("files_active"))["files"] == []


async def test_a_peer_has_at_most_200_active_files(inproc, tmp_path):
    served = await inproc()
    ann = make_identity(tmp_path / "people", "ann")
    async with ann.client(served.url) as a:
        for start in range(0, 200, 20):
            await a.call("files_editing", paths=[f"/srv/{n}.py" for n in range(start, start + 20)])
        await a.call("files_editing", paths=["/srv/0.py", "/srv/199.py"])  # again: still 200
        with pytest.raises(TooLarge, match="at most 200"):
            await a.call("files_editing", paths=["/srv/0.py", "/srv/200.py"])
        assert len((await a.call("files_active"))["files"]) == 200
        await a.call("files_done", paths=["/srv/0.py"])
        await a.call("files_editing", paths=["/srv/200.py"])


def test_a_remote_names_the_repository_without_scheme_user_or_git():
    for remote in ("git@github.com:acme/app.git", "https://github.com/acme/app",
                   "ssh://git@GitHub.com:22/acme/app.git/",
                   "https://ann:secret@github.com/acme/app.git"):
        assert repo_identity(remote) == "github.com/acme/app", remote
    assert repo_identity("/srv/git/app.git") == "/srv/git/app"


def clone(root: Path, remote: str) -> Path:
    """A git checkout with ``remote`` as its origin and a file ``src/app.py``."""
    root.mkdir(parents=True)
    for args in (["init", "-q"], ["remote", "add", "origin", remote]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('hi')\n")
    return root


def edit_hook(home: Path, session: str, cwd: Path, path: str) -> str:
    """`hub hook post-tool-use` as Claude Code runs it after an Edit of ``path``."""
    payload = {"hook_event_name": "PostToolUse", "cwd": str(cwd), "tool_name": "Edit",
               "tool_input": {"file_path": path, "old_string": "hi", "new_string": "ho"}}
    out = subprocess.run([HUB_BIN, "hook", "post-tool-use"], input=json.dumps(payload),
                         env=base_env(home, MESHHUB_SESSION_NAME=session), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and out.stderr == "", out
    return out.stdout


def context_of(stdout: str) -> str:
    return str(json.loads(stdout)["hookSpecificOutput"]["additionalContext"])


async def hook(home: Path, session: str, cwd: Path, path: str) -> str:
    return await anyio.to_thread.run_sync(edit_hook, home, session, cwd, path)


async def ready(s: Session) -> None:
    await s.call("mesh_whoami")


async def test_two_sessions_editing_one_file_each_get_one_conflict(hub, people, tmp_path):
    ann, bob, cy, dee = people("ann", "bob", "cy", "dee")
    one = clone(tmp_path / "one", "git@example.com:acme/app.git")
    two = clone(tmp_path / "two", "https://bob:secret@example.com/acme/app")
    three = clone(tmp_path / "three", "https://example.com/acme/app.git")
    params = [mcp_params(ann, hub.url, MESHHUB_SESSION_NAME="ann-one"),
              mcp_params(bob, hub.url, MESHHUB_SESSION_NAME="bob-two"),
              mcp_params(cy, hub.url, MESHHUB_SESSION_NAME="cy-three", MESHHUB_GROUPS="ops")]
    for item, cwd in zip(params, (one, two, three), strict=True):
        item.cwd = cwd
    async with stdio_session(params[0]) as s1, stdio_session(params[1]) as s2, \
            stdio_session(params[2]) as s3:
        for s in (s1, s2, s3):
            await ready(s)
        assert await hook(ann.home, "ann-one", one, str(one / "src" / "app.py")) == ""
        found = await told_in_a_hook_answer(bob.home, "bob-two", two)
        assert "ann-one (since" in found and "example.com/acme/app:src/app.py" in found
        for s, other in ((s1, "bob-two"), (s2, "ann-one")):  # each is told of the other
            (note,) = await s.pushes.wait(1)
            assert note.meta == {"kind": "file_conflict",
                                 "file": "example.com/acme/app:src/app.py"}
            assert f"{other} (since" in note.content
        # ann's next tool call names it once; the edits after that repeat nothing
        assert "bob-two (since" in context_of(await hook(ann.home, "ann-one", one, "src/app.py"))
        assert await hook(ann.home, "ann-one", one, "src/app.py") == ""
        assert await hook(bob.home, "bob-two", two, "src/app.py") == ""
        # cy, in a group neither shares, edits it too: nobody is told
        assert await hook(cy.home, "cy-three", three, "src/app.py") == ""
        await marker_conflicts(hub.url, (ann, one, "ann-one"), (bob, two, "bob-two"),
                               (cy, three, "cy-three"), dee)
        for s in (s1, s2):  # the marker's notification comes after any of cy's edit
            assert len(await pushes_before_marker(s)) == 1
            await s.call("mesh_files_done", paths=["marker.py"], repo="example.com/acme/app")
        assert await pushes_before_marker(s3) == []

        active = await s1.call("mesh_files_active")
        assert sorted(f["peer"] for f in active["files"]) == ["ann-one", "bob-two"]
        assert {f["file"] for f in active["files"]} == {"example.com/acme/app:src/app.py"}
        assert (await s2.call("mesh_files_done"))["done"] == 1
    async with ann.client(hub.url) as a:  # the sessions that ended said files_done
        assert await eventually(lambda: _none_active(a))


async def told_in_a_hook_answer(home: Path, session: str, cwd: Path) -> str:
    """The first hook answer of the session's edits of src/app.py that names a conflict (it
    comes in the answer of the edit that found it, or of a later one); the answers before it
    are empty."""
    with anyio.fail_after(30):
        while not (answer := await hook(home, session, cwd, "src/app.py")):
            pass
    return context_of(answer)


async def marker_conflicts(url: str, *sessions: Any) -> None:
    """Each of ``sessions`` (identity, checkout, name) and the last item, an identity in
    group ops, edits :data:`MARKED`: ann and bob conflict, and so do cy and the last."""
    *editors, ops = sessions
    for identity, cwd, name in editors:
        (cwd / "marker.py").write_text("")
        await hook(identity.home, name, cwd, "marker.py")
    async with ops.client(url, groups={"ops": "member"}) as d:
        await d.call("files_editing", paths=["marker.py"], repo="example.com/acme/app")
        await d.call("files_done")


async def pushes_before_marker(s: Session) -> list[Any]:
    """The session's channel notifications before the one over :data:`MARKED`."""
    n = 1
    while (await s.pushes.wait(n))[n - 1].meta.get("file") != MARKED:
        n += 1
    return s.pushes.items[:n - 1]


async def _none_active(client: MeshClient) -> bool:
    return (await client.call("files_active"))["files"] == []


def test_the_edit_hook_exits_0_with_no_hub(tmp_path, people):
    (ann,) = people("ann")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    session = start_session(ann.home, url, "ann-lone", tmp_path)
    try:
        assert edit_hook(ann.home, "ann-lone", tmp_path, str(tmp_path / "a.py")) == ""
        assert edit_hook(ann.home, "nobody", tmp_path, "x" * 5000) == ""
    finally:
        stop_session(session)


async def expire(hub: Any, collection: str) -> None:
    """Make every document of ``collection`` expired, as the clock would."""
    for record in await hub.records.all(collection):
        await hub.records.put(collection, record.key, record.value, expires_at=time.time() - 1)


async def test_reports_expire_and_a_pair_is_told_again_once_forgotten(inproc, tmp_path):
    served = await inproc()
    ann, bob = (make_identity(tmp_path / "people", n) for n in ("ann", "bob"))
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        await a.call("files_editing", paths=["/srv/app/main.py"])
        (told,) = (await b.call("files_editing", paths=["/srv/app/main.py"]))["conflicts"]
        for collection in ("active_files", "file_conflicts"):  # past ttl and remember
            await expire(served.hub, collection)
        assert (await a.call("files_active"))["files"] == []
        await a.call("files_editing", paths=["/srv/app/main.py"])
        (again,) = (await b.call("files_editing", paths=["/srv/app/main.py"]))["conflicts"]
        assert again["file"] == told["file"] == "/srv/app/main.py"

        # a session tells each once, the one found again too
        sent: list[str] = []

        async def send(text: str, meta: dict[str, str]) -> None:
            sent.append(text)

        session = ActiveFiles(a.call, lambda: str(a.peer["key"]))
        session.channel(send)
        lines = []
        for doc in (told, told, again, again):
            session.offer_conflict(doc)
            lines.append(session.untold())
        assert [line is not None for line in lines] == [True, False, True, False]
        await eventually(lambda: _count(sent, 2))
        assert all("bob (since" in line for line in sent)


async def _count(items: list[str], n: int) -> bool:
    return len(items) == n


async def test_other_teams_files_do_not_hide_a_peers_own(inproc, tmp_path):
    served = await inproc()
    ann, cy = (make_identity(tmp_path / "people", n) for n in ("ann", "cy"))
    async with ann.client(served.url) as a, cy.client(served.url, groups={"ops": "member"}) as c:
        key = c.peer["key"]
        for n in range(1001):  # more than files_active lists, all before ann's in file order
            doc = {"peer": key, "file": f"/a/{n:04}.py", "repo": None, "path": f"/a/{n:04}.py",
                   "since": time.time(), "last_at": time.time()}
            await served.hub.records.put("active_files", f"{key} {doc['file']}", doc)
        await a.call("files_editing", paths=["/z/main.py"])
        mine = await a.call("files_active")
        assert [f["file"] for f in mine["files"]] == ["/z/main.py"] and mine["more"] is False
        token = await token_for(a)
        assert (await api_call(served.url, token, "files_active"))["files"] == mine["files"]
        theirs = await c.call("files_active")
        assert len(theirs["files"]) == 1000 and theirs["more"] is True
    async with stdio_session(mcp_params(ann, served.url, MESHHUB_SESSION_NAME="ann-s")) as s:
        assert await s.call("mesh_files_active") == mine


def test_settings_that_are_not_seconds_are_refused_naming_them():
    for bad, name in (({"ttl": "soon"}, "ttl"), ({"remember": 0}, "remember"),
                      ({"ttl": True}, "ttl"), ({"remember": "1d"}, "remember")):
        hub = SimpleNamespace(config=SimpleNamespace(section=lambda _name, bad=bad: bad))
        with pytest.raises(ConfigError, match=rf"\[active_files\] {name} must be a number"):
            settings(hub)  # type: ignore[arg-type]
    good = SimpleNamespace(config=SimpleNamespace(section=lambda _name: {"ttl": 60}))
    assert settings(good) == (60.0, 86400.0)  # type: ignore[arg-type]


async def test_a_bad_setting_is_named_at_start_and_to_a_caller(inproc, tmp_path):
    served = await inproc(raw={"active_files": {"ttl": "soon"}})
    assert "[active_files] ttl" in str(served.hub.plugins.records["active_files"].error)
    ann = make_identity(tmp_path / "people", "ann")
    async with ann.client(served.url) as a:
        with pytest.raises(MeshError, match=r"the hub's \[active_files\] ttl must be a number"):
            await a.call("files_editing", paths=["/srv/a.py"])
        token = await token_for(a)
        error = await api_call(served.url, token, "files_editing", paths=["/srv/a.py"])
        assert error["code"] == "error" and "[active_files] ttl" in error["message"]


def test_the_hook_leaves_out_paths_with_control_characters():
    for path in ("/srv/a\rb.py", "/srv/a\x00b.py", "/srv/a\nb.py", "/srv/a\x1bb.py"):
        assert edited({"tool_input": {"file_path": path}, "cwd": "/srv"}, "Edit") == {}
    assert edited({"tool_input": {"file_path": "a.py"}, "cwd": "/srv/\r"}, "Edit") == {
        "files": ["a.py"]}
    assert edited({"tool_input": {"file_path": "a.py"}, "cwd": "/srv"}, "Edit") == {
        "files": ["a.py"], "cwd": "/srv"}


async def test_git_runs_without_fsmonitor(tmp_path, monkeypatch):
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    files = ActiveFiles(_no_call, lambda: "")
    assert await files.locate(tmp_path / "a.py") == (None, str(tmp_path / "a.py"))
    (line,) = calls.read_text().splitlines()
    assert line.startswith("-c core.fsmonitor=false ")


async def _no_call(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("no hub call expected")


async def test_sessions_are_told_again_of_a_conflict_found_again(inproc, tmp_path):
    served = await inproc()
    ann, bob = (make_identity(tmp_path / "people", n) for n in ("ann", "bob"))
    one = clone(tmp_path / "one", "git@example.com:acme/app.git")
    two = clone(tmp_path / "two", "https://example.com/acme/app")
    params = [mcp_params(ann, served.url, MESHHUB_SESSION_NAME="ann-one"),
              mcp_params(bob, served.url, MESHHUB_SESSION_NAME="bob-two")]
    for item, cwd in zip(params, (one, two), strict=True):
        item.cwd = cwd
    async with stdio_session(params[0]) as s1, stdio_session(params[1]) as s2:
        for s in (s1, s2):
            await ready(s)
        for told in (1, 2):
            await hook(ann.home, "ann-one", one, "src/app.py")
            await hook(bob.home, "bob-two", two, "src/app.py")
            for s in (s1, s2):
                assert [p.meta["kind"] for p in await s.pushes.wait(told)] == [
                    "file_conflict"] * told
            for collection in ("active_files", "file_conflicts"):  # the hub forgets both
                await expire(served.hub, collection)
