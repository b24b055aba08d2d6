"""The decisions board over a real hub on 127.0.0.1, through the client library, the HTTP API
and the MCP tools: history kept across updates (concurrent posts included), revoke, who is told,
and what non-members of a conversation never see."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from meshhub.errors import Forbidden, MeshError, NotFound
from meshhub.report import build_report

from .coordination_support import before_marker
from .helpers import api_call, collect, token_for
from .test_mcp import mcp_params, stdio_session


async def board(client: Any, **args: Any) -> list[dict[str, Any]]:
    """The decisions ``client`` sees (one page)."""
    return (await client.call("decisions", **args))["decisions"]


async def board_over_http(url: str, token: str, **args: Any) -> list[dict[str, Any]]:
    return (await api_call(url, token, "decisions", **args))["decisions"]


async def decision_notes(client: Any, n: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < n:
        message = (await collect(client, 1))[0]
        if message["kind"] == "decision_board":
            out.append(message)
    return out


async def test_history_is_kept_across_updates_and_revoke(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False) as b:
        first = await a.call("decision_post", key="db/engine", value="sqlite",
                             rationale="one machine", category="architecture")
        assert (first["value"], first["author"], first["revoked"]) == ("sqlite", "ann", False)
        second = await b.call("decision_post", key="db/engine", value="postgres",
                              rationale="several hubs", category="architecture")
        assert second["author"] == "bob" and second["revision"] > first["revision"]

        # two posts to one key at the same moment: both land in the history, in order
        results = await asyncio.gather(
            a.call("decision_post", key="db/engine", value="nats", category="architecture"),
            b.call("decision_post", key="db/engine", value="both", category="architecture"))
        got = await a.call("decision_get", key="db/engine")
        values = [e["value"] for e in got["history"]]
        assert values[:2] == ["sqlite", "postgres"] and sorted(values[2:]) == ["both", "nats"]
        assert got["value"] == values[-1] == max(results, key=lambda r: r["revision"])["value"]
        assert [e["by"] for e in got["history"][:2]] == ["ann", "bob"]
        assert got["history"][1]["rationale"] == "several hubs"
        assert all(e["at"] > 0 for e in got["history"])

        author = got["author"]
        other = b if author == "ann" else a
        with pytest.raises(Forbidden, match=f"only {author}"):
            await other.call("decision_revoke", key="db/engine", reason="no")
        revoker = a if author == "ann" else b
        revoked = await revoker.call("decision_revoke", key="db/engine", reason="too early")
        assert revoked["revoked"] is True and revoked["revoke_reason"] == "too early"
        with pytest.raises(MeshError) as err:
            await revoker.call("decision_revoke", key="db/engine", reason="again")
        assert err.value.code == "invalid_move"
        assert await board(a) == []
        listed = await board(a, include_revoked=True)
        assert [(d["key"], d["revoked"]) for d in listed] == [("db/engine", True)]
        history = (await b.call("decision_get", key="db/engine"))["history"]
        assert history[-1]["event"] == "revoked" and history[-1]["reason"] == "too early"
        assert len(history) == 5

        again = await a.call("decision_post", key="db/engine", value="sqlite",
                             category="architecture")
        assert again["revoked"] is False
        await b.call("decision_post", key="review", value="two approvals", category="process")
        token = await token_for(b, cap="read")
        by_category = await board_over_http(served.url, token, category="process")
        assert [d["key"] for d in by_category] == ["review"]
        by_key = await board_over_http(served.url, token, key="db/engine")
        assert [d["value"] for d in by_key] == ["sqlite"]
        assert [d["key"] for d in await board(b)] == ["db/engine", "review"]
        # the same over HTTP: an update kept in the history, then a revoke
        ann_token = await token_for(a)
        posted = await api_call(served.url, ann_token, "decision_post", key="review",
                                value="one approval", rationale="small team",
                                category="process")
        assert posted["author"] == "ann"
        history = (await api_call(served.url, token, "decision_get", key="review"))["history"]
        assert [(e["value"], e["by"]) for e in history] == [("two approvals", "bob"),
                                                            ("one approval", "ann")]
        refused = await api_call(served.url, await token_for(b), "decision_revoke",
                                 key="review", reason="mine")
        assert refused["code"] == "forbidden"
        gone = await api_call(served.url, ann_token, "decision_revoke", key="review",
                              reason="back to two")
        assert gone["revoked"] is True and gone["revoked_by"] == "ann"
        with pytest.raises(NotFound):
            await a.call("decision_get", key="nothing/here")
        with pytest.raises(MeshError, match="key"):
            await a.call("decision_post", key="has space", value="x")
        with pytest.raises(MeshError, match="category"):
            await a.call("decision_post", key="ok", value="x", category="two words")
    assert len(await served.hub.audit.entries(event="decision_posted")) == 7
    assert len(await served.hub.audit.entries(event="decision_revoked")) == 2


async def test_who_is_told_and_non_members_never_see(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl, dave = people("ann", "bob", "carl", "dave")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url, groups={"ops": "member"}) as c, \
            dave.client(served.url) as d:
        await a.call("conversation_create", name="design")
        await b.call("conversation_join", name="design")
        posted = await a.call("decision_post", key="ui/theme", value="dark",
                              rationale="eyes", conversation="design")
        assert posted["scope"] == "#design"
        (note,) = await decision_notes(b, 1)
        assert note["from"] == "ann" and "ui/theme" in note["text"]
        assert note["data"] == {"key": "ui/theme", "scope": "#design", "revoked": False}

        # carl and dave are not members: never told, never shown, refused outright
        for outsider in (c, d):
            assert await board(outsider) == []
            with pytest.raises(Forbidden, match="#design"):
                await outsider.call("decision_get", key="ui/theme", conversation="design")
            with pytest.raises(Forbidden):
                await outsider.call("decisions", conversation="#design")
        token = await token_for(d, cap="read")
        refused = await api_call(served.url, token, "decision_get", key="ui/theme",
                                 conversation="#design")
        assert refused["code"] == "forbidden"
        assert [x["key"] for x in await board(b)] == ["ui/theme"]
        assert [x["scope"] for x in await board(b, conversation="design")] == \
            ["#design"]

        # mesh-wide with a group: its peers are told; without: nobody by message
        await b.call("decision_post", key="oncall", value="carl", group="@ops")
        (note,) = await decision_notes(c, 1)
        assert note["from"] == "bob" and note["data"]["scope"] is None
        await b.call("decision_post", key="freeze", value="friday")
        assert await before_marker(d, b) == [] and await before_marker(a, b) == []
        assert [x["key"] for x in await board(d)] == ["freeze", "oncall"]
        with pytest.raises(MeshError, match="group"):
            await a.call("decision_post", key="x", value="y", conversation="design",
                         group="ops")

        # the report: each viewer sees what it may
        hub = served.hub
        until = time.time() + 1
        for_ann = await build_report(hub, hub.directory.find("ann"), until - 60, until)
        for_dave = await build_report(hub, hub.directory.find("dave"), until - 60, until)
        assert "## Decisions" in for_ann and "- ann decided ui/theme (\\#design) = dark" in \
            for_ann
        assert "ui/theme" not in for_dave and "- bob decided freeze = friday" in for_dave
        await a.call("decision_revoke", key="ui/theme", reason="too dark",
                     conversation="design")
        assert (await decision_notes(b, 1))[0]["data"]["revoked"] is True
        later = await build_report(hub, hub.directory.find("bob"), until - 60, time.time() + 1)
        assert "- ann revoked ui/theme (\\#design): too dark" in later


async def test_the_mcp_tools_post_get_and_revoke(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with stdio_session(mcp_params(ann, served.url, "--name", "ann-s")) as s, \
            stdio_session(mcp_params(bob, served.url, "--name", "bob-s")) as t:
        assert {"mesh_decision_post", "mesh_decision_get", "mesh_decision_revoke",
                "mesh_decisions"} <= await s.tool_names()
        await s.call("mesh_decision_post", key="lint", value="ruff", category="tooling")
        await t.call("mesh_decision_post", key="lint", value="ruff and mypy",
                     rationale="types", category="tooling")
        got = await t.call("mesh_decision_get", key="lint")
        assert [(e["value"], e["by"]) for e in got["history"]] == [
            ("ruff", "ann-s"), ("ruff and mypy", "bob-s")]
        assert "only bob-s" in await s.error("mesh_decision_revoke", key="lint", reason="x")
        revoked = await t.call("mesh_decision_revoke", key="lint", reason="superseded")
        assert revoked["revoked"] is True
        assert (await s.call("mesh_decisions", category="tooling"))["decisions"] == []

        # a conversation's decisions: bob-s is not a member and never sees them
        await s.call("mesh_conversation_create", name="design")
        await s.call("mesh_decision_post", key="ui/theme", value="dark", conversation="design")
        assert "join it first" in await t.error("mesh_decision_get", key="ui/theme",
                                                conversation="#design")
        assert (await t.call("mesh_decisions"))["decisions"] == []
        assert [d["key"] for d in (await s.call("mesh_decisions"))["decisions"]] == ["ui/theme"]
