"""Tasks over a real hub on 127.0.0.1, through the client library, the HTTP API and the MCP
tools: concurrent claims (exactly one wins), the status machine, who is told, group tasks,
what non-members never see, the history and the report's part."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from meshhub.errors import Forbidden, InvalidRequest, MeshError, NotFound
from meshhub.report import build_report

from .coordination_support import before_marker
from .helpers import api_call, collect, token_for
from .test_mcp import mcp_params, stdio_session

TEAM = {"team": "member"}


async def task_notes(client: Any, n: int) -> list[dict[str, Any]]:
    """The next ``n`` ``task`` messages (other kinds are skipped)."""
    out = []
    while len(out) < n:
        message = (await collect(client, 1))[0]
        if message["kind"] == "task":
            out.append(message)
    return out


async def test_two_claimers_at_the_same_moment_exactly_one_wins(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, groups=TEAM, receive=False) as b, \
            carl.client(served.url, groups=TEAM, receive=False) as c:
        names = {"bob": b, "carl": c}
        winners = set()
        for _ in range(25):
            task = await a.call("task_create", title="fix the build", assignee="@team")
            results = await asyncio.gather(b.call("task_claim", id=task["id"]),
                                           c.call("task_claim", id=task["id"]),
                                           return_exceptions=True)
            won = [r for r in results if isinstance(r, dict)]
            lost = [r for r in results if isinstance(r, MeshError)]
            assert len(won) == 1 and len(lost) == 1, results
            holder = won[0]["claimed_by"]
            assert won[0]["status"] == "claimed" and holder in names
            assert lost[0].code == "conflict" and lost[0].details["held_by"] == holder
            assert f"held by {holder}" in lost[0].message
            winners.add(holder)
            got = await a.call("task_get", id=task["id"])
            assert [e["action"] for e in got["history"]] == ["create", "claim"]

        # the same race through the HTTP API: one 200, one 409 naming the holder
        tokens = [await token_for(b), await token_for(c)]
        for _ in range(10):
            task = await a.call("task_create", title="deploy", assignee="@team")
            results = await asyncio.gather(
                *(api_call(served.url, t, "task_claim", id=task["id"]) for t in tokens))
            assert sorted("code" in r for r in results) == [False, True], results
            won = next(r for r in results if "code" not in r)
            lost = next(r for r in results if "code" in r)
            assert lost["code"] == "conflict"
            assert lost["details"]["held_by"] == won["claimed_by"]
    assert len(await served.hub.audit.entries(event="task_claimed")) == 35
    assert len(await served.hub.audit.entries(event="task_created")) == 35
    assert (await served.hub.audit.verify()).ok


async def test_the_status_machine_the_notes_and_the_history(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c:
        task = await a.call("task_create", title="write the docs",
                            description="protocol and storage", assignee="bob")
        assert (task["status"], task["assignee"], task["created_by"]) == ("open", "bob", "ann")
        (note,) = await task_notes(b, 1)
        assert note["from"] == "ann" and note["data"] == {"task_id": task["id"],
                                                          "status": "open"}
        assert "write the docs" in note["text"]
        assert await before_marker(a, c) == []  # never the actor
        bob_token = await token_for(b)
        inbox = await api_call(served.url, bob_token, "inbox")
        assert [(m["kind"], m["data"]) for m in inbox["messages"]] == [
            ("task", {"task_id": task["id"], "status": "open"})]

        with pytest.raises(NotFound):
            await c.call("task_get", id=task["id"])  # not his
        with pytest.raises(NotFound):
            await c.call("task_claim", id=task["id"])
        with pytest.raises(InvalidRequest, match="in_progress"):
            await b.call("task_update", id=task["id"], status="in_progress")  # claim first

        claimed = await b.call("task_claim", id=task["id"])
        assert claimed["claimed_by"] == "bob"
        (note,) = await task_notes(a, 1)
        assert note["data"] == {"task_id": task["id"], "status": "claimed"}
        await b.call("task_update", id=task["id"], status="in_progress", note="started")
        blocked = await b.call("task_block", id=task["id"], reason="waiting for the schema")
        assert blocked["status"] == "blocked"
        assert blocked["blocked_reason"] == "waiting for the schema"
        notes = await task_notes(a, 2)
        assert [n["data"]["status"] for n in notes] == ["in_progress", "blocked"]
        assert "blocked" in notes[1]["text"]
        done = await b.call("task_complete", id=task["id"], result="merged in docs/")
        assert (done["status"], done["result"]) == ("done", "merged in docs/")
        assert done["blocked_reason"] is None  # it holds only while the task is blocked
        assert (await task_notes(a, 1))[0]["data"]["status"] == "done"

        with pytest.raises(MeshError) as err:
            await b.call("task_update", id=task["id"], status="in_progress")
        assert err.value.code == "invalid_move" and "final" in err.value.message
        with pytest.raises(InvalidRequest, match="status"):
            await b.call("task_update", id=task["id"], status="finished")
        with pytest.raises(MeshError) as err:
            await a.call("task_claim", id=task["id"])
        assert err.value.code == "conflict" and err.value.details["held_by"] == "bob"

        got = await a.call("task_get", id=task["id"])
        assert [(e["action"], e["status"], e["by"]) for e in got["history"]] == [
            ("create", "open", "ann"), ("claim", "claimed", "bob"),
            ("update", "in_progress", "bob"), ("block", "blocked", "bob"),
            ("complete", "done", "bob")]
        assert got["history"][3]["note"] == "waiting for the schema"
        assert all(e["at"] > 0 for e in got["history"])

        # release gives it back; the creator (not the actor) hears of every change
        other = await a.call("task_create", title="review", assignee="bob")
        await b.call("task_claim", id=other["id"])
        released = await b.call("task_release", id=other["id"], note="no time")
        assert (released["status"], released["claimed_by"]) == ("open", None)
        cancelled = await a.call("task_update", id=other["id"], status="cancelled")
        assert cancelled["status"] == "cancelled"
        notes = await task_notes(b, 2)  # ann created it, then cancelled it
        assert [n["data"]["status"] for n in notes] == ["open", "cancelled"]
        assert [n["data"]["status"] for n in await task_notes(a, 2)] == ["claimed", "open"]

        with pytest.raises(MeshError, match="title"):
            await a.call("task_create", title="")
        with pytest.raises(MeshError, match="no peer named"):
            await a.call("task_create", title="x", assignee="nobody")
        with pytest.raises(MeshError, match="@ghosts"):
            await a.call("task_create", title="x", assignee="@ghosts")


async def test_a_group_task_is_claimed_by_one_of_its_peers(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl, dave = people("ann", "bob", "carl", "dave")
    async with ann.client(served.url) as a, bob.client(served.url, groups=TEAM) as b, \
            carl.client(served.url, groups={"team/db": "member"}) as c, \
            dave.client(served.url) as d:
        task = await a.call("task_create", title="migrate", assignee="@team")
        assert task["assignee"] == "@team"
        for peer in (b, c):  # every peer of the group (subgroups too) hears of it
            (note,) = await task_notes(peer, 1)
            assert note["data"] == {"task_id": task["id"], "status": "open"}
        with pytest.raises(NotFound):
            await d.call("task_claim", id=task["id"])
        with pytest.raises(Forbidden):
            await c.call("task_update", id=task["id"], status="cancelled")  # claim first
        assert [t["id"] for t in (await c.call("tasks", assignee="@team"))["tasks"]] == \
            [task["id"]]

        claimed = await c.call("task_claim", id=task["id"])
        assert claimed["claimed_by"] == "carl" and claimed["assignee"] == "@team"
        (note,) = await task_notes(a, 1)
        assert note["data"]["status"] == "claimed" and note["from"] == "carl"
        with pytest.raises(Forbidden):
            await b.call("task_complete", id=task["id"], result="me neither")
        assert (await c.call("task_complete", id=task["id"]))["status"] == "done"
        assert [t["id"] for t in (await b.call("tasks", mine=True))["tasks"]] == [task["id"]]
        assert (await d.call("tasks"))["tasks"] == []


async def test_listing_paging_and_conversations(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False) as b, \
            carl.client(served.url, receive=False) as c:
        await a.call("conversation_create", name="ops")
        await b.call("conversation_join", name="ops")
        with pytest.raises(Forbidden, match="join #ops"):
            await c.call("task_create", title="sneak", conversation="ops")
        ops = await a.call("task_create", title="rotate keys", conversation="#ops")
        assert ops["conversation"] == "#ops"
        made = [await a.call("task_create", title=f"t{i}") for i in range(55)]
        for_bob = await a.call("task_create", title="for bob", assignee="bob")

        first = await a.call("tasks")
        assert len(first["tasks"]) == 50 and first["more"] is True
        assert first["tasks"][0]["id"] == for_bob["id"]  # newest first
        second = await a.call("tasks", after=first["tasks"][-1]["id"])
        ids = [t["id"] for t in first["tasks"] + second["tasks"]]
        assert second["more"] is False
        assert ids == [for_bob["id"], *reversed([t["id"] for t in made]), ops["id"]]

        seen_by_bob = [t["id"] for t in (await b.call("tasks"))["tasks"]]
        assert seen_by_bob == [for_bob["id"], ops["id"]]
        assert [t["id"] for t in (await b.call("tasks", mine=True))["tasks"]] == \
            [for_bob["id"]]
        assert [t["id"] for t in (await b.call("tasks", created_by="ann",
                                               assignee="bob"))["tasks"]] == [for_bob["id"]]
        # carl is in none of it: the conversation's task is not his to see, on any surface
        assert (await c.call("tasks"))["tasks"] == []
        token = await token_for(c, cap="read")
        assert (await api_call(served.url, token, "tasks"))["tasks"] == []
        refused = await api_call(served.url, token, "task_get", id=ops["id"])
        assert refused["code"] == "not_found"
        await b.call("task_claim", id=ops["id"])  # any member may claim an unassigned one
        assert [t["id"] for t in (await b.call("tasks", status="claimed"))["tasks"]] == \
            [ops["id"]]
        await b.call("conversation_leave", name="ops")
        assert (await b.call("task_get", id=ops["id"]))["claimed_by"] == "bob"  # he holds it


async def test_the_report_shows_what_the_viewer_may_see(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    since = time.time() - 1
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False) as b, \
            carl.client(served.url, receive=False) as c:
        task = await a.call("task_create", title="ship *it*", assignee="bob")
        await b.call("task_claim", id=task["id"])
        await b.call("task_block", id=task["id"], reason="CI down")
        await b.call("task_complete", id=task["id"], result="shipped")
        await c.call("task_create", title="carl's secret")
        hub = served.hub
        report = await build_report(hub, hub.directory.find("ann"), since, time.time() + 1)
        assert "## Tasks" in report
        assert "- ann created task “ship \\*it\\*”" in report
        assert "- bob claimed task" in report and "- bob completed task" in report
        assert "- bob blocked task “ship \\*it\\*”: CI down" in report
        assert "secret" not in report
        later = await build_report(hub, hub.directory.find("ann"), time.time() + 1,
                                   time.time() + 2)
        assert "## Tasks" not in later


async def test_the_mcp_tools_create_claim_complete_and_tell(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    async with stdio_session(mcp_params(ann, served.url, "--name", "ann-s")) as s, \
            stdio_session(mcp_params(bob, served.url, "--name", "bob-s",
                                     "--groups", "team")) as t, \
            stdio_session(mcp_params(carl, served.url, "--name", "carl-s")) as u:
        assert {"mesh_task_create", "mesh_task_claim", "mesh_task_update", "mesh_task_block",
                "mesh_task_complete", "mesh_task_release", "mesh_task_get",
                "mesh_tasks"} <= await s.tool_names()
        await u.call("mesh_whoami")
        task = await s.call("mesh_task_create", title="bench it", assignee="@team")
        (note,) = await t.pushes.wait(1)  # the group's peer is told, in its session
        assert note.meta["kind"] == "task" and note.meta["from"] == "ann-s"
        assert "bench it" in note.content
        first, second = await asyncio.gather(
            t.session.call_tool("mesh_task_claim", {"id": task["id"]}),
            s.session.call_tool("mesh_task_claim", {"id": task["id"]}))
        assert sorted((first.is_error, second.is_error)) == [False, True]
        lost = second if second.is_error else first
        assert "held by" in lost.content[0].text  # type: ignore[union-attr]
        holder = (await s.call("mesh_task_get", id=task["id"]))["claimed_by"]
        holder_session = t if holder == "bob-s" else s
        done = await holder_session.call("mesh_task_complete", id=task["id"], result="ok")
        assert done["status"] == "done"
        assert "cannot become" in await holder_session.error(
            "mesh_task_update", id=task["id"], status="blocked")
        listed = await t.call("mesh_tasks", mine=True)
        assert [x["id"] for x in listed["tasks"]] == [task["id"]]

        # carl is neither in the group nor in #plan: he sees none of it
        await s.call("mesh_conversation_create", name="plan")
        planned = await s.call("mesh_task_create", title="plan it", conversation="#plan")
        assert (await u.call("mesh_tasks"))["tasks"] == []
        assert "no task" in await u.error("mesh_task_get", id=planned["id"])
        assert "no task" in await u.error("mesh_task_claim", id=task["id"])
