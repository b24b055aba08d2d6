"""Decisions and tasks at scale over a real hub on 127.0.0.1: histories kept outside the
board's documents (small heads in the feed, paged, pruned), the decisions list queried by
what the caller may see, and the tasks list and report sections bounded by the query."""

from __future__ import annotations

import json
import time
from typing import Any

from meshhub.builtins import decisions as decisions_mod
from meshhub.builtins import report_window
from meshhub.builtins.histories import History
from meshhub.report import build_report

from .helpers import api_call, token_for
from .test_mcp import mcp_params, stdio_session

BIG = "x" * 3990


async def test_decision_history_lives_outside_the_head_paged_and_pruned(inproc, people,
                                                                         monkeypatch):
    monkeypatch.setattr(decisions_mod, "HISTORY", History("decision_history", keep=4,
                                                          indexes=("audience",)))
    monkeypatch.setattr(decisions_mod, "HISTORY_PAGE", 2)
    served = await inproc(send_rate=0)
    hub = served.hub
    (ann,) = people("ann")
    async with ann.client(served.url, receive=False) as a:
        for n in range(6):
            await a.call("decision_post", key="db/engine", value=f"{n}{BIG}", rationale=BIG)
        head = await hub.records.get("decisions", "db/engine")
        assert head is not None and "history" not in head.value
        assert len(json.dumps(head.value)) < 3 * len(BIG) and head.value["changes"] == 6
        changes = [c for c in await hub.records.changes(limit=10000)
                   if c.collection == "decisions"]
        assert changes and all(len(json.dumps(c.public())) < 3 * len(BIG) for c in changes)

        # the newest 4 are kept, read 2 at a time
        first = await a.call("decision_get", key="db/engine")
        assert [e["seq"] for e in first["history"]] == [3, 4] and first["history_more"]
        assert first["history"][0]["value"].startswith("2") and first["history"][0]["by"] == "ann"
        token = await token_for(a, cap="read")
        rest = await api_call(served.url, token, "decision_get", key="db/engine",
                              after=first["history"][-1]["seq"])
        assert [e["seq"] for e in rest["history"]] == [5, 6] and not rest["history_more"]
        assert await hub.records.count("decision_history", {"parent": "db/engine"}) == 4
    async with stdio_session(mcp_params(ann, served.url, "--name", "ann-s")) as s:
        got = await s.call("mesh_decision_get", key="db/engine", after=4)
        assert [e["seq"] for e in got["history"]] == [5, 6]


async def _put_decisions(hub: Any, scope: str, n: int) -> None:
    """``n`` decisions of ``scope`` written as the board keeps them (quicker than posting)."""
    for i in range(n):
        key = f"k{i:05d}"
        await hub.records.put("decisions", f"{scope} {key}", {
            "name": key, "scope": scope, "audience": scope, "value": "v", "rationale": "",
            "category": "aaa", "group": None, "author": "nobody", "posted_at": time.time(),
            "revoked": None, "live": True, "changes": 1})


async def test_a_busy_conversation_hides_nothing_and_the_list_pages(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False) as b:
        await a.call("conversation_create", name="busy")
        await _put_decisions(served.hub, "#busy", 1001)
        await b.call("decision_post", key="zzz", value="mesh-wide", category="zzz")
        # bob is not in #busy: its 1001 decisions never crowd out the mesh-wide one
        seen = await b.call("decisions")
        assert [d["key"] for d in seen["decisions"]] == ["zzz"] and not seen["more"]
        token = await token_for(b, cap="read")
        over_http = await api_call(served.url, token, "decisions")
        assert [d["key"] for d in over_http["decisions"]] == ["zzz"]

        # ann is: she pages through all 1002, 100 at a time
        keys: list[str] = []
        page = await a.call("decisions")
        while True:
            keys += [d["key"] for d in page["decisions"]]
            if not page["more"]:
                break
            page = await a.call("decisions", after=page["cursor"])
        assert len(keys) == 1002 and len(set(keys)) == 1002 and keys[-1] == "zzz"
    async with stdio_session(mcp_params(bob, served.url, "--name", "bob-s")) as s:
        got = await s.call("mesh_decisions")
        assert [d["key"] for d in got["decisions"]] == ["zzz"]


async def test_report_sections_are_capped_with_a_count(inproc, people, monkeypatch):
    monkeypatch.setattr(report_window, "CAP", 3)
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False):
        since = time.time() - 1
        for n in range(5):
            await a.call("decision_post", key=f"k{n}", value=f"v{n}")
        await a.call("conversation_create", name="quiet")
        await a.call("decision_post", key="hidden", value="secret", conversation="quiet")
        for n in range(5):
            await a.call("task_create", title=f"t{n}", assignee="bob")
        until = time.time() + 1
        hub = served.hub
        text = await build_report(hub, hub.directory.find("bob"), since, until)
        assert "k0 = v0" in text and "k2 = v2" in text and "k3" not in text
        assert "… and 2 more" in text and "secret" not in text
        assert "t2" in text and "t3" not in text and "… and more" in text
        before = await build_report(hub, hub.directory.find("bob"), since - 100, since)
        assert "k0" not in before and "t0" not in before


async def test_tasks_list_queries_the_callers_tasks(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False) as b, \
            carl.client(served.url, receive=False, groups={"ops": "member"}) as c:
        for n in range(120):
            await a.call("task_create", title=f"ann's {n}")
        mine = await b.call("task_create", title="bob's")
        for_ops = await a.call("task_create", title="for ops", assignee="@ops")
        assert [t["id"] for t in (await b.call("tasks"))["tasks"]] == [mine["id"]]
        assert [t["id"] for t in (await c.call("tasks"))["tasks"]] == [for_ops["id"]]
        listed = (await a.call("tasks"))
        assert len(listed["tasks"]) == 50 and listed["more"]
        token = await token_for(a, cap="read")
        seen: list[str] = []
        after = None
        while True:
            page = await api_call(served.url, token, "tasks", after=after) if after else \
                await api_call(served.url, token, "tasks")
            seen += [t["id"] for t in page["tasks"]]
            if not page["more"]:
                break
            after = seen[-1]
        assert len(seen) == len(set(seen)) == 121
    async with stdio_session(mcp_params(carl, served.url, "--name", "carl-s",
                                        "--groups", "ops")) as s:
        got = await s.call("mesh_tasks", mine=True)
        assert [t["id"] for t in got["tasks"]] == [for_ops["id"]]
