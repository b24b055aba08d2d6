"""Conversations and threads over a real hub on 127.0.0.1, through the client library and the
HTTP API: thread summaries and per-thread unread, conversation figures without whisper leaks,
invite, archive, members with presence, and history paging."""

from __future__ import annotations

import asyncio
import time

import pytest

from meshhub.builtins.sqlite_conversations import (
    SETTLED_AFTER,
    ConversationTotals,
    message_counts,
)
from meshhub.errors import Forbidden, MeshError

from .helpers import Identity, api_call, collect, token_for


async def test_thread_summaries_and_per_thread_unread(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c:
        await a.call("conversation_create", name="design")
        for peer in (b, c):
            await peer.call("conversation_join", name="design")
        root = (await a.send("#design", "the plan"))["id"]
        first = (await b.send(None, "yes", reply_to=root))["id"]
        second = (await c.send(None, "and tests", reply_to=root))["id"]
        # a whisper to ann alone: three replies for ann, two for carl, who never learns of it
        third = (await b.send(None, "psst", reply_to=root, whisper=["ann"]))["id"]

        seen = await a.call("history", conversation="#design")
        assert [m["id"] for m in seen["messages"]] == [root]  # top level: replies hidden
        summary = seen["threads"][root]
        assert (summary["replies"], summary["last_reply_by"], summary["participants"],
                summary["unread"]) == (3, "bob", ["ann", "bob", "carl"], 3)
        assert summary["last_reply_at"] > 0 and seen["replies"] == {root: 3}
        carl_sees = (await c.call("history", conversation="design"))["threads"][root]
        assert (carl_sees["replies"], carl_sees["last_reply_by"], carl_sees["unread"]) == \
            (2, "carl", 1)  # bob's first reply; its own is not unread, the whisper not there
        inbox = await c.call("inbox", unread_only=False, mark_read=False, top_level_only=True)
        assert [m["id"] for m in inbox["messages"]] == [root]  # what carl received
        assert inbox["threads"][root] == carl_sees and inbox["replies"] == {root: 2}
        assert (await a.call("check"))["by_thread"] == {root: 3}

        # reading the thread marks it read: the unread ids before the call come back
        peek = await a.call("thread", root=root, mark_read=False)
        assert peek["unread"] == [first, second, third] and peek["summary"]["unread"] == 3
        read = await a.call("thread", root=root)
        assert [m["id"] for m in read["replies"]] == [first, second, third]
        assert read["unread"] == [first, second, third]
        assert read["summary"]["unread"] == 0 and read["summary"]["replies"] == 3
        assert (await a.call("thread", root=root))["unread"] == []
        assert (await a.call("check"))["by_thread"] == {}
        assert (await a.call("history", conversation="#design"))["threads"][root]["unread"] == 0

        # a new reply: one unread in that thread again
        fourth = (await c.send(None, "one more", reply_to=root))["id"]
        after = (await a.call("history", conversation="#design"))["threads"][root]
        assert (after["replies"], after["unread"], after["last_reply_by"]) == (4, 1, "carl")
        assert (await a.call("check"))["by_thread"] == {root: 1}

        # the HTTP API answers the same
        token = await token_for(b, cap="read")
        over_http = await api_call(served.url, token, "history", conversation="#design")
        by_client = await b.call("history", conversation="#design")
        assert over_http["threads"] == by_client["threads"]
        assert over_http["threads"][root]["replies"] == 4  # bob sees its whisper
        thread = await api_call(served.url, token, "thread", root=root)
        assert thread["unread"] == [root, second, fourth]  # the root it shows too
        assert thread["summary"]["unread"] == 0
        assert (await b.call("thread", root=root))["unread"] == []


async def test_conversation_list_counts_what_each_reader_may_see(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c:
        await a.call("conversation_create", name="plan", topic="the plan")
        for peer in (b, c):
            await peer.call("conversation_join", name="plan")
        sent = [await a.send("#plan", f"step {n}") for n in range(3)]
        await a.send("#plan", "for bob only", whisper=["bob"])
        figures = {}
        for name, peer in (("ann", a), ("bob", b), ("carl", c)):
            listed = {v["name"]: v for v in await peer.call("conversations")}
            figures[name] = listed["#plan"]
            assert "#general" in listed
        assert {n: (f["message_count"], f["unread"]) for n, f in figures.items()} == \
            {"ann": (4, 0), "bob": (4, 4), "carl": (3, 3)}
        assert figures["carl"]["member_count"] == 3 and figures["carl"]["joined"] is True
        assert figures["carl"]["members"] == ["ann", "bob", "carl"]
        newest = (await c.call("history", conversation="#plan"))["messages"][-1]
        assert newest["id"] == sent[2]["id"]  # the whisper is not carl's newest message
        assert figures["carl"]["last_activity"] == newest["created_at"]
        assert figures["bob"]["last_activity"] >= figures["carl"]["last_activity"]

        await c.call("inbox")  # carl reads: its unread goes, the counts stay
        token = await token_for(c, cap="read")
        listed = {v["name"]: v for v in await api_call(served.url, token, "conversations")}
        assert (listed["#plan"]["message_count"], listed["#plan"]["unread"]) == (3, 0)


async def test_invite_archive_and_members(inproc, tmp_path, people):
    served = await inproc(send_rate=0)
    owner = Identity(tmp_path / "hub", "owner")
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c, owner.client(served.url) as o:
        await a.call("conversation_create", name="ops", topic="on call")
        with pytest.raises(Forbidden, match="join #ops"):
            await c.call("conversation_invite", name="ops", peers=["carl"])
        invited = await a.call("conversation_invite", name="#ops", peers=["bob", "carl"])
        assert invited["added"] == ["bob", "carl"] and invited["members"] == ["ann", "bob", "carl"]
        note = (await collect(b, 1))[0]
        assert note["kind"] == "conversation_invite" and note["from"] == "ann"
        assert note["text"] == "ann added you to #ops (on call)"
        assert note["data"] == {"conversation": "#ops", "by": "ann"}
        assert (await a.call("conversation_invite", name="ops", peers=["bob"]))["added"] == []

        members = await c.call("conversation_members", name="ops")
        assert [m["name"] for m in members] == ["ann", "bob", "carl"]
        assert all(m["online"] and m["reach"] == "live" for m in members)
        assert [m["you"] for m in members] == [False, False, True]

        root = (await a.send("#ops", "paged at 3am"))["id"]
        with pytest.raises(Forbidden, match="only the creator"):
            await b.call("conversation_archive", name="ops")
        archived = await a.call("conversation_archive", name="ops")
        assert archived["archived"] is True
        for attempt in (a.send("#ops", "anyone?"), b.send(None, "me", reply_to=root),
                        a.call("conversation_invite", name="ops", peers=["owner"])):
            with pytest.raises(MeshError, match="conversation_unarchive") as refused:
                await attempt
            assert refused.value.code == "archived"
        assert [m["id"] for m in (await b.call("history", conversation="#ops"))["messages"]] \
            == [root]  # still readable
        assert "#ops" not in [v["name"] for v in await b.call("conversations")]
        listed = {v["name"]: v for v in await b.call("conversations", include_archived=True)}
        assert listed["#ops"]["archived"] is True and listed["#ops"]["message_count"] == 1

        # the owner may unarchive what another created, over HTTP too
        token = await token_for(o, cap="admin")
        reopened = await api_call(served.url, token, "conversation_unarchive", name="ops")
        assert reopened["archived"] is False
        assert (await b.send(None, "back", reply_to=root))["id"]
        refused = await api_call(served.url, await token_for(c), "conversation_archive",
                                  name="ops")
        assert refused["code"] == "forbidden"


async def test_history_pages_back_and_forth_over_http(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        await a.call("conversation_create", name="log")
        await b.call("conversation_join", name="log")
        ids = [(await a.send("#log", f"entry {n}"))["id"] for n in range(7)]
        token = await token_for(b, cap="read")

        back: list[str] = []
        page = await api_call(served.url, token, "history", conversation="#log", limit=3)
        while True:
            back = [m["id"] for m in page["messages"]] + back
            if not page["more"]:
                break
            page = await api_call(served.url, token, "history", conversation="#log", limit=3,
                                   before=page["messages"][0]["id"])
        assert back == ids

        forth: list[str] = []
        page = await api_call(served.url, token, "history", conversation="#log", limit=3,
                               after=ids[0])
        while True:
            forth += [m["id"] for m in page["messages"]]
            if not page["more"]:
                break
            page = await api_call(served.url, token, "history", conversation="#log", limit=3,
                                   after=page["messages"][-1]["id"])
        assert forth == ids[1:]
        by_client = await b.call("history", conversation="log", before=ids[4], limit=2)
        assert [m["id"] for m in by_client["messages"]] == ids[2:4] and by_client["more"]
        both = await api_call(served.url, token, "history", conversation="#log",
                               before=ids[4], after=ids[1])
        assert both["code"] == "invalid_request"


async def test_message_counts_step_past_the_horizon(inproc, people):
    """The counts kept below the horizon move on with it: each message counted once, whether
    it is in the recent tail, in the step since the last count, or below both; a whisper is
    counted for its party only, on either side of the horizon."""
    served = await inproc(send_rate=0)
    ann, bob, cy = people("ann", "bob", "cy")
    totals = ConversationTotals()
    labels = ["#general", "#side"]

    def counts(at: float, viewer: str) -> dict[str, int]:
        return served.hub.store._read(
            lambda conn: message_counts(conn, labels, viewer, totals, at))

    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            cy.client(served.url) as c:
        bk, ck = b.peer["key"], c.peer["key"]
        await a.call("conversation_create", name="side")
        await b.call("conversation_join", name="side")
        await c.call("conversation_join", name="side")
        for n in range(3):
            await a.send("#side", f"side {n}")
        await a.send("#side", "for bob alone", whisper=["bob"])
        await asyncio.sleep(0.01)
        settled = time.time()  # the four are older than this, the next ones newer
        await asyncio.sleep(0.01)
        assert counts(time.time(), bk) == {"#general": 0, "#side": 4}  # all in the tail
        assert counts(time.time(), ck) == {"#general": 0, "#side": 3}
        assert counts(settled + SETTLED_AFTER, ck) == {"#general": 0, "#side": 3}  # below
        assert counts(settled + SETTLED_AFTER, bk) == {"#general": 0, "#side": 4}
        assert totals.below["#side"][1] == 4 and totals.hidden[ck]["#side"][1] == 1
        assert totals.hidden[bk]["#side"][1] == 0
        await a.send("#side", "later")
        await a.send("#side", "later, for bob alone", whisper=["bob"])
        await asyncio.sleep(0.01)  # so the horizons below lie past both
        assert counts(settled + SETTLED_AFTER, ck) == {"#general": 0, "#side": 4}  # tail
        # a horizon never moves back, and the step past the new one counts the later ones
        assert counts(settled, ck) == {"#general": 0, "#side": 4}
        assert counts(time.time() + SETTLED_AFTER, ck) == {"#general": 0, "#side": 4}
        assert counts(time.time() + SETTLED_AFTER, bk) == {"#general": 0, "#side": 6}
        assert totals.below["#side"][1] == 6 and totals.hidden[ck]["#side"][1] == 2


async def test_a_dead_reply_is_neither_shown_nor_counted(inproc, people):
    """A reply whose delivery died (its TTL ended before the reader came back) is left out of
    the thread and of the root's summary, as history leaves it out."""
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        root = (await a.send("bob", "the plan"))["id"]
        await b.call("inbox")
    async with ann.client(served.url) as a:
        await a.send(None, "while you were away", reply_to=root)
        assert await served.hub.store.expire_older_than(time.time() + 1, "expired") == 1
    async with bob.client(served.url) as b:
        thread = await b.call("thread", root=root)
        assert thread["replies"] == [] and thread["summary"]["replies"] == 0
        page = await b.call("history", conversation="dm:ann")
        assert root not in page["threads"] and [m["id"] for m in page["messages"]] == [root]
    async with ann.client(served.url) as a:  # its sender still sees what it sent
        assert (await a.call("thread", root=root))["summary"]["replies"] == 1
