"""Artifacts end to end: the client library, the HTTP API and real `hub mcp` sessions against
a real hub on 127.0.0.1: versions with optimistic concurrency, paging, history, the kept
versions, who may do what, notifications, the report and the storage quota."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest

from meshhub.client import MeshClient
from meshhub.errors import Forbidden, InvalidRequest, MeshError, NotFound, TooLarge
from meshhub.report import build_report

from .coordination_support import before_marker
from .helpers import api_call, collect, token_for
from .test_mcp import mcp_params, stdio_session


async def next_head(client: MeshClient, artifact_id: str) -> dict[str, Any]:
    """The next ``record`` event of the artifacts collection for this artifact."""
    with anyio.fail_after(10):
        while True:
            event = await client.events.get()
            if event.get("event") == "record" and event["collection"] == "artifacts" \
                    and event["key"] == artifact_id:
                return event


async def ops(a: MeshClient, *others: MeshClient) -> None:
    await a.call("conversation_create", name="ops")
    for other in others:
        await other.call("conversation_join", name="#ops")


async def test_create_update_read_list_history_and_delete(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, cy = people("ann", "bob", "cy")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            cy.client(served.url) as c:
        await ops(a, b)
        made = await a.call("artifact_create", conversation="ops", name="plan.md",
                            content="step one\n", kind="plan", title="The plan")
        assert made["version"] == 1 and made["conversation"] == "#ops"
        assert made["created_by"] == "ann" and made["kind"] == "plan" and made["size"] == 9
        event = await next_head(b, made["id"])
        assert event["op"] == "put" and event["value"]["version"] == 1
        assert "content" not in str(event["value"]["versions"])
        (note,) = await collect(b, 1)
        assert note["kind"] == "artifact" and note["from"] == "ann"
        assert note["data"] == {"id": made["id"], "version": 1, "conversation": "#ops",
                                "name": "plan.md"}
        assert await before_marker(a, c) == []  # never the author itself

        second = await b.call("artifact_update", conversation="#ops", name="plan.md",
                              content="step one\nstep two\n", base_version=1, note="two")
        assert second["version"] == 2 and second["updated_by"] == "bob"
        assert (await collect(a, 1))[0]["data"]["version"] == 2
        with pytest.raises(MeshError) as stale:
            await a.call("artifact_update", id=made["id"], content="mine\n", base_version=1)
        err = stale.value
        assert err.code == "conflict" and err.details["version"] == 2
        assert err.details["author"] == "bob" and "+step two" in err.details["diff"]
        assert "at version 2 now (by bob" in str(err)

        old = await b.call("artifact_get", id=made["id"], version=1)
        assert old["content"] == "step one\n" and old["latest_version"] == 2
        listed = await b.call("artifacts", conversation="ops")
        assert [(x["name"], x["version"], x["updated_by"]) for x in listed["artifacts"]] == [
            ("plan.md", 2, "bob")]
        history = await a.call("artifact_history", id=made["id"])
        assert [(v["n"], v["author"], v["note"], v["size"]) for v in history["versions"]] == [
            (2, "bob", "two", 18), (1, "ann", "", 9)]

        # non-members: refused, or an artifact they cannot see is absent
        with pytest.raises(Forbidden, match="for its members"):
            await c.call("artifacts", conversation="#ops")
        with pytest.raises(Forbidden):
            await c.call("artifact_create", conversation="#ops", name="x", content="x")
        for call, args in (("artifact_get", {}), ("artifact_history", {}),
                           ("artifact_update", {"content": "x", "base_version": 2}),
                           ("artifact_delete", {})):
            with pytest.raises(NotFound):
                await c.call(call, id=made["id"], **args)

        token_c = await token_for(c, "read")
        refused = await api_call(served.url, token_c, "artifacts", conversation="#ops")
        assert refused["code"] == "forbidden"
        refused = await api_call(served.url, token_c, "artifact_get", id=made["id"])
        assert refused["code"] == "not_found"

        with pytest.raises(MeshError) as taken:
            await b.call("artifact_create", conversation="#ops", name="plan.md", content="")
        assert taken.value.code == "conflict" and taken.value.details["id"] == made["id"]
        with pytest.raises(Forbidden, match="only ann"):
            await b.call("artifact_delete", id=made["id"])
        assert await a.call("artifact_delete", id=made["id"]) == {"id": made["id"],
                                                                  "deleted": True}
        gone = await next_head(b, made["id"])
        while gone["op"] != "delete":
            gone = await next_head(b, made["id"])
        with pytest.raises(NotFound):
            await a.call("artifact_get", id=made["id"])
        assert (await a.call("artifacts", conversation="#ops"))["artifacts"] == []
        again = await b.call("artifact_create", conversation="#ops", name="plan.md",
                             content="fresh")
        assert again["id"] != made["id"]
        (row,) = await served.hub.audit.entries(event="artifact_deleted")
        assert row["subject"] == made["id"] and row["actor"] == a.peer["key"]


async def test_concurrent_updates_from_one_base_exactly_one_wins(inproc, people):
    """Through the client library and the HTTP API, two peers write from the same base at
    the same moment, many rounds: one wins, the other is told the version that won."""
    served = await inproc(send_rate=0, action_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        await ops(a, b)
        made = await a.call("artifact_create", conversation="#ops", name="race", content="0")
        token_a, token_b = await token_for(a), await token_for(b)

        async def by_client(client: MeshClient, base: int) -> Any:
            try:
                return await client.call("artifact_update", id=made["id"], base_version=base,
                                         content=f"{client.peer['name']} {base}")
            except MeshError as lost:
                return lost

        async def by_http(token: str, base: int) -> Any:
            return await api_call(served.url, token, "artifact_update", id=made["id"],
                                  base_version=base, content=f"{token[:6]} {base}")

        base = 1
        for round_ in range(30):
            if round_ % 2:
                one, two = await asyncio.gather(by_http(token_a, base), by_http(token_b, base))
                results = [(r, "code" not in r) for r in (one, two)]
            else:
                one, two = await asyncio.gather(by_client(a, base), by_client(b, base))
                results = [(r, not isinstance(r, MeshError)) for r in (one, two)]
            won = [r for r, ok in results if ok]
            lost = [r for r, ok in results if not ok]
            assert len(won) == 1 and len(lost) == 1, results
            details = lost[0]["details"] if isinstance(lost[0], dict) else lost[0].details
            code = lost[0]["code"] if isinstance(lost[0], dict) else lost[0].code
            assert code == "conflict" and details["version"] == base + 1
            assert won[0]["version"] == base + 1
            got = await a.call("artifact_get", id=made["id"])
            assert got["content"].endswith(f" {base}") and got["version"] == base + 1
            base += 1
        history = await b.call("artifact_history", id=made["id"])
        assert [v["n"] for v in history["versions"]] == list(range(base, 0, -1))


async def test_paging_is_whole_and_old_versions_go(inproc, people):
    served = await inproc(send_rate=0, action_rate=0,
                          raw={"artifacts": {"keep_versions": 50, "max_bytes": 300_000}})
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url, receive=False) as b:
        await ops(a, b)
        text = "".join(f"line {n} ünïcødé ✓ \U0001f600\r\n" for n in range(9000))
        made = await a.call("artifact_create", conversation="#ops", name="big.txt",
                            content=text, kind="code")
        token = await token_for(b, "read")
        for fetch in ("client", "http"):
            parts, offset = [], 0
            while offset is not None:
                if fetch == "client":
                    page = await b.call("artifact_get", id=made["id"], offset=offset,
                                        limit=7777)
                else:
                    page = await api_call(served.url, token, "artifact_get", id=made["id"],
                                          offset=offset, limit=7777)
                assert page["total"] == len(text) and page["offset"] == offset
                parts.append(page["content"])
                offset = page["next_offset"]
            assert "".join(parts).encode() == text.encode() and len(parts) > 5
        with pytest.raises(TooLarge, match="max_bytes"):
            await a.call("artifact_update", id=made["id"], content="x" * 300_001,
                         base_version=1)

        for n in range(2, 56):
            await a.call("artifact_update", id=made["id"], content=f"v{n}", base_version=n - 1)
        history = await a.call("artifact_history", id=made["id"])
        assert [v["n"] for v in history["versions"]] == list(range(55, 5, -1))
        with pytest.raises(NotFound, match="keeps versions 6 to 55"):
            await a.call("artifact_get", id=made["id"], version=5)
        assert (await a.call("artifact_get", id=made["id"], version=6))["content"] == "v6"
        with pytest.raises(MeshError, match="not kept any more") as stale:
            await a.call("artifact_update", id=made["id"], content="x", base_version=3)
        assert stale.value.details["version"] == 55
        assert len(await served.hub.records.all("artifact_versions")) == 50
        # the big first version's bytes were given back to its author's quota
        assert served.hub.limits.storage.total < len(text.encode()) // 2


async def test_bad_input_changes_nothing(inproc, people):
    served = await inproc()
    (ann,) = people("ann")
    async with ann.client(served.url, receive=False) as a:
        await a.call("conversation_create", name="ops")
        for name in ("", " lead", "a\nb", "x" * 201):
            with pytest.raises(InvalidRequest, match="name"):
                await a.call("artifact_create", conversation="#ops", name=name, content="")
        with pytest.raises(InvalidRequest, match="kind"):
            await a.call("artifact_create", conversation="#ops", name="a", content="",
                         kind="Not A Kind")
        with pytest.raises(InvalidRequest, match="id, or conversation and name"):
            await a.call("artifact_update", content="x", base_version=1)
        with pytest.raises(InvalidRequest, match="id"):
            await a.call("artifact_history", id="x" * 65)
        with pytest.raises(InvalidRequest, match="offset"):
            await a.call("artifact_get", id="x", offset=-1)
        with pytest.raises(MeshError, match="no conversation #nowhere"):
            await a.call("artifacts", conversation="#nowhere")
        assert (await a.call("artifacts", conversation="#ops"))["artifacts"] == []


async def test_quota_and_restart(inproc, people):
    served = await inproc(member_quota_bytes=1000)
    (ann,) = people("ann")
    async with ann.client(served.url, receive=False) as a:
        await a.call("conversation_create", name="ops")
        made = await a.call("artifact_create", conversation="#ops", name="a", content="x" * 600)
        with pytest.raises(MeshError) as full:
            await a.call("artifact_update", id=made["id"], content="y" * 500, base_version=1)
        assert full.value.code == "quota_exceeded"
        assert (await a.call("artifact_get", id=made["id"]))["version"] == 1
        with pytest.raises(MeshError):  # refused before the name is taken: it stays free
            await a.call("artifact_create", conversation="#ops", name="b", content="z" * 500)
        assert (await a.call("artifact_create", conversation="#ops", name="b",
                             content="z"))["version"] == 1
    await served.stop()
    again = await inproc(member_quota_bytes=1000)  # counted again at start
    async with ann.client(again.url, receive=False) as a:
        got = await a.call("artifact_get", conversation="#ops", name="a")
        assert got["content"] == "x" * 600
        with pytest.raises(MeshError) as full:
            await a.call("artifact_update", id=made["id"], content="y" * 500, base_version=1)
        assert full.value.code == "quota_exceeded"
        # a version an update left behind when the hub stopped (never named by the head) goes
        # with the artifact, and every byte comes back
        records = again.hub.records
        await records.create("artifact_versions", f"{made['id']}:0000000002:left", {
            "artifact": made["id"], "n": 2, "content": "y", "author_key": a.peer["key"],
            "size": 1})
        again.hub.limits.storage.add(a.peer["key"], 1)
        before = again.hub.limits.storage.total
        await a.call("artifact_delete", id=made["id"])
        left = {r.value["artifact"] for r in await records.all("artifact_versions")}
        assert made["id"] not in left and again.hub.limits.storage.total == before - 601


async def test_report_section_shows_the_viewers_conversations(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, cy = people("ann", "bob", "cy")
    since = time.time() - 1
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False) as b, cy.client(served.url) as c:
        await ops(a, b)
        made = await a.call("artifact_create", conversation="#ops", name="plan",
                            content="a", kind="plan", title="Ship *it* [now]")
        await b.call("artifact_update", id=made["id"], content="b", base_version=1)
        await c.call("conversation_create", name="secret")
        await c.call("artifact_create", conversation="#secret", name="hidden", content="z")
        hub = served.hub
        viewer = hub.directory.peers[a.peer["key"]]
        report = await build_report(hub, viewer, since, time.time() + 1)
        assert "## Artifacts" in report and "hidden" not in report
        assert ("\\#ops: plan Ship \\*it\\* \\[now\\] (created), 2 version(s) by ann, bob, "
                "now version 2") in report
        later = await build_report(hub, viewer, time.time() + 5, time.time() + 10)
        assert "## Artifacts" not in later


async def test_mcp_tools_race_page_and_refuse(inproc, people):
    """Two real `hub mcp` sessions: concurrent updates from one base (one wins, the other's
    tool error names the current version), paging, history, and a non-member refused."""
    served = await inproc(send_rate=0, action_rate=0)
    ann, bob, cy = people("ann", "bob", "cy")
    async with stdio_session(mcp_params(ann, served.url, "--name", "ann-s")) as s, \
            stdio_session(mcp_params(bob, served.url, "--name", "bob-s")) as t, \
            stdio_session(mcp_params(cy, served.url, "--name", "cy-s")) as u:
        assert {"mesh_artifact_create", "mesh_artifact_update", "mesh_artifact_get",
                "mesh_artifacts", "mesh_artifact_history",
                "mesh_artifact_delete"} <= await s.tool_names()
        await s.call("mesh_conversation_create", name="ops")
        await t.call("mesh_conversation_join", name="#ops")
        text = "α" * 5000 + "\n" + "b" * 3001
        made = await s.call("mesh_artifact_create", conversation="#ops", name="doc",
                            content=text)
        for round_ in range(6):
            base = round_ + 1

            async def attempt(session: Any, who: str, at: int = base) -> tuple[bool, Any]:
                res = await session.session.call_tool("mesh_artifact_update", {
                    "id": made["id"], "base_version": at, "content": f"{who} {at}"})
                return res.is_error, res.content[0].text

            one, two = await asyncio.gather(attempt(s, "ann"), attempt(t, "bob"))
            assert sorted([one[0], two[0]]) == [False, True]
            refused = one[1] if one[0] else two[1]
            assert f"at version {base + 1} now" in refused
        history = await t.call("mesh_artifact_history", id=made["id"])
        assert [v["n"] for v in history["versions"]] == list(range(7, 0, -1))
        parts, offset = [], 0
        while offset is not None:
            page = await t.call("mesh_artifact_get", id=made["id"], version=1, offset=offset,
                                limit=2000)
            parts.append(page["content"])
            offset = page["next_offset"]
        assert "".join(parts) == text
        assert "for its members" in await u.error("mesh_artifacts", conversation="#ops")
        assert "no artifact" in await u.error("mesh_artifact_get", id=made["id"])
