"""Proposals and votes over a real hub on 127.0.0.1, through the client library, the HTTP API
and a real `hub mcp` session: resolving at the threshold, by a rejection majority and at the
deadline (also across a restart), concurrent votes, who may vote, the report section, and a
Telegram person voting with a button."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from meshhub.errors import Forbidden, InvalidRequest, MeshError, NotFound
from meshhub.report import build_report

from .fakes.telegram_api import TgUser
from .helpers import api_call, eventually, make_identity, token_for
from .telegram_support import paired_name
from .test_mcp import mcp_params, stdio_session


async def next_of_kind(client: Any, kind: str) -> dict[str, Any]:
    """The next message of ``kind`` (others, such as a vote's own notices, are acked and
    skipped)."""
    while True:
        message = await client.next_message(10)
        await client.ack(message["id"])
        if message["kind"] == kind:
            return dict(message)


async def test_threshold_two_resolves_on_the_second_approval_and_tells_everyone(
        inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl, dave, erin = people("ann", "bob", "carl", "dave", "erin")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c, dave.client(served.url) as d, \
            erin.client(served.url) as e:
        await a.call("conversation_create", name="release")
        for peer in (b, c, e):
            await peer.call("conversation_join", name="release")
        made = await a.call("propose", title="ship 2.0 friday", to=["#release"], threshold=2,
                            description="tests are green")
        assert (made["state"], made["conversation"]) == ("open", "#release")
        assert sorted(made["electorate"]) == ["bob", "carl", "erin"]
        card = await next_of_kind(b, "proposal")
        assert card["data"]["proposal_id"] == made["id"]
        assert card["data"]["options"] == ["approve", "reject"]

        with pytest.raises(NotFound, match="may vote on"):
            await d.call("vote", id=made["id"], vote="approve")  # not in #release: unseen
        with pytest.raises(NotFound, match="may vote on"):
            await d.call("proposal_get", id=made["id"])  # the same answer as a read
        with pytest.raises(Forbidden, match="electorate"):
            await a.call("vote", id=made["id"], vote="approve")  # the proposer

        first = await b.call("vote", id=made["id"], vote="reject", reason="not sure")
        assert (first["state"], first["changed_from"]) == ("open", None)
        again = await b.call("vote", id=made["id"], vote="approve", reason="fine now")
        assert (again["changed_from"], again["tally"]) == ("reject", {"approve": 1,
                                                                     "reject": 0})
        token = await token_for(c)
        second = await api_call(served.url, token, "vote", id=made["id"], vote="approve",
                                reason="ok")
        assert second["state"] == "approved"
        assert second["tally"] == {"approve": 2, "reject": 0}
        assert {(v["voter"], v["reason"]) for v in second["votes"]} == {("bob", "fine now"),
                                                                       ("carl", "ok")}
        result = await next_of_kind(a, "proposal_result")
        assert result["data"]["proposal_id"] == made["id"]
        assert result["data"]["state"] == "approved"
        assert (await next_of_kind(b, "proposal_result"))["data"]["approvals"] == 2

        late = await api_call(served.url, token, "vote", id=made["id"], vote="reject")
        assert late["code"] == "conflict" and "approved" in late["message"]
        with pytest.raises(MeshError) as refused:
            await e.call("vote", id=made["id"], vote="reject")
        assert refused.value.code == "conflict"
        got = await c.call("proposal_get", id=made["id"])
        assert got["state"] == "approved" and got["resolved_at"] >= got["opened_at"]
        assert [p["id"] for p in await a.call("proposals", state="approved", mine=True)] == \
            [made["id"]]
        assert await d.call("proposals") == []
        audit = await served.hub.records.all("audit")
        assert [e.value["event"] for e in audit].count("proposal_resolved") == 1
        assert (await served.hub.audit.verify()).ok

        report = await build_report(served.hub, served.hub.directory.find("bob"),
                                    time.time() - 60, time.time() + 1)
        assert "## Proposals" in report and "Approved: ship 2\\.0 friday" in report
        assert "Proposals" not in await build_report(
            served.hub, served.hub.directory.find("dave"), time.time() - 60, time.time() + 1)


async def test_a_rejection_majority_rejects_and_bad_input_is_refused(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl, dave = people("ann", "bob", "carl", "dave")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c, dave.client(served.url):
        with pytest.raises(InvalidRequest, match="threshold: 1 to 3"):
            await a.call("propose", title="x", to=["bob", "carl", "dave"], threshold=4)
        with pytest.raises(InvalidRequest, match="deadline"):
            await a.call("propose", title="x", to=["bob"], threshold=1, deadline="0s")
        assert await a.call("proposals") == []
        made = await a.call("propose", title="rewrite in rust", to=["bob", "carl", "dave"],
                            threshold=2)
        await b.call("vote", id=made["id"], vote="reject", reason="no time")
        done = await c.call("vote", id=made["id"], vote="reject", reason="no")
        assert done["state"] == "rejected" and done["tally"]["reject"] == 2
        assert (await next_of_kind(a, "proposal_result"))["data"]["state"] == "rejected"


async def test_concurrent_votes_are_all_counted(inproc, people):
    served = await inproc(send_rate=0)
    names = [f"p{i}" for i in range(6)]
    ids = people("ann", *names)
    clients = [who.client(served.url) for who in ids]
    for client in clients:
        await client.__aenter__()
    try:
        a, voters = clients[0], clients[1:]
        made = await a.call("propose", title="tabs", to=names, threshold=6)
        results = await asyncio.gather(*(v.call("vote", id=made["id"], vote="approve")
                                         for v in voters))
        assert sorted(r["tally"]["approve"] for r in results) == [1, 2, 3, 4, 5, 6]
        got = await a.call("proposal_get", id=made["id"])
        assert got["state"] == "approved" and len(got["votes"]) == 6
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)


async def test_a_deadline_expires_it_also_across_a_restart(inproc, people, tmp_path):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        short = await a.call("propose", title="lunch?", to=["bob"], threshold=1,
                             deadline="1s")
        result = await next_of_kind(a, "proposal_result")
        assert (result["data"]["proposal_id"], result["data"]["state"]) == (short["id"],
                                                                          "expired")
        later = await a.call("propose", title="dinner?", to=["bob"], threshold=1,
                             deadline=str(time.time() + 3))
        assert (await b.call("proposal_get", id=later["id"]))["state"] == "open"
    await served.stop()
    served = await inproc(send_rate=0)
    async with ann.client(served.url) as a:
        async def expired() -> bool:
            got = await a.call("proposal_get", id=later["id"])
            return bool(got["state"] == "expired")

        assert await eventually(expired, timeout=20)


async def test_mcp_tools_propose_and_vote(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, \
            stdio_session(mcp_params(bob, served.url)) as s:
        session = (await s.call("mesh_whoami"))["name"]
        made = await a.call("propose", title="adopt ruff", to=[session], threshold=1)
        listed = await s.call("mesh_proposals", state="open")
        assert [p["id"] for p in listed] == [made["id"]]
        voted = await s.call("mesh_vote", id=made["id"], vote="approve", reason="yes")
        assert voted["state"] == "approved"
        assert (await s.call("mesh_proposal_get", id=made["id"]))["votes"][0]["voter"] == session
        mine = await s.call("mesh_propose", title="and mypy", to=["ann"], threshold=1)
        assert mine["proposer"] == session and mine["state"] == "open"


ANN = TgUser(5201, "Ann", "Smith")


async def test_a_telegram_person_votes_with_a_button(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    ann = paired_name(await served.pair(ANN))
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        made = await c.call("propose", title="ship it", to=[ann], threshold=1)
        card = await tg.wait_for("sendMessage", lambda m: "ship it" in m["text"])
        keyboard = card["reply_markup"]["inline_keyboard"][0]
        assert [b["text"] for b in keyboard] == ["Approve", "Reject"]
        assert all(len(b["callback_data"].encode()) <= 64 for b in keyboard)
        await tg.press(ANN, card["result"], keyboard[0]["callback_data"])
        flash = await tg.wait_for("answerCallbackQuery")
        assert flash["text"] == "Voted approve; the proposal is approved"
        edited = await tg.wait_for("editMessageText")
        assert edited["message_id"] == card["result"]["message_id"]
        assert "approved: 1 approve, 0 reject" in edited["text"]
        assert "reply_markup" not in edited
        got = await c.call("proposal_get", id=made["id"])
        assert got["state"] == "approved" and got["votes"][0]["voter"] == ann
        assert (await next_of_kind(c, "proposal_result"))["data"]["state"] == "approved"
