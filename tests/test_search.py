"""The ``search`` action: full-text search over the messages a peer may see, through the client
library, the HTTP API and the real MCP tool ``mesh_search``; and the index built off the send
path (a message is found the moment its send is acknowledged; messages stored before the index
existed are indexed after a restart)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import aiohttp
import pytest

from meshhub.builtins import sqlite_search
from meshhub.builtins.search_actions import parse_when, public_snippet
from meshhub.errors import InvalidRequest
from meshhub.store import MARK_END, MARK_START

from .helpers import eventually
from .test_mcp import mcp_params, stdio_session


def ids(result: dict[str, Any]) -> list[str]:
    return [hit["message"]["id"] for hit in result["hits"]]


async def test_ranked_words_stemmed_and_only_what_the_viewer_may_see(inproc, people) -> None:
    served = await inproc(send_rate=0)
    ann, bob, cat = people("ann", "bob", "cat")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            cat.client(served.url) as c:
        await a.call("conversation_create", name="ops")
        await b.call("conversation_join", name="ops")
        await c.call("conversation_join", name="ops")
        once = await a.send("#ops", "the deploy of the billing service is done")
        dense = await a.send("#ops", "deploy deploy deploy: deploying again after deployed")
        other = await a.send("#ops", "lunch at noon")
        whisper = await a.send("#ops", "secret deploy key rotation", whisper=["bob"])

        found = await b.call("search", query="deploy")
        assert ids(found)[0] == dense["id"]  # the denser match first
        assert set(ids(found)) == {dense["id"], once["id"], whisper["id"]}
        assert found["query"] == "deploy"
        hit = found["hits"][0]
        assert hit["message"]["text"] == "deploy deploy deploy: deploying again after deployed"
        assert "[deploy]" in hit["snippet"] and "[deploying]" in hit["snippet"]
        assert hit["score"] > found["hits"][1]["score"] >= found["hits"][2]["score"]
        assert other["id"] not in ids(found)

        # a third member of the conversation never sees the whisper
        assert whisper["id"] not in ids(await c.call("search", query="deploy"))
        assert ids(await c.call("search", query="secret rotation")) == []
        assert ids(await b.call("search", query="secret rotation")) == [whisper["id"]]
        # every word is required; stemming finds other forms
        assert ids(await b.call("search", query="deploy billing")) == [once["id"]]
        assert ids(await b.call("search", query="deployed")) == \
            ids(await b.call("search", query="deploy"))
        # the sender finds what it sent
        assert set(ids(await a.call("search", query="deploy"))) == \
            {once["id"], dense["id"], whisper["id"]}


async def test_filters_conversation_sender_time_and_kind(inproc, people) -> None:
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        await a.call("conversation_create", name="ops")
        await b.call("conversation_join", name="ops")
        in_ops = await a.send("#ops", "release notes draft")
        direct = await a.send("bob", "release notes for you")
        from_bob = await b.send("#ops", "release notes reviewed")

        assert ids(await b.call("search", query="release", conversation="#ops")) != []
        assert set(ids(await b.call("search", query="release", conversation="ops"))) == \
            {in_ops["id"], from_bob["id"]}
        assert ids(await b.call("search", query="release", conversation="dm:ann")) == \
            [direct["id"]]
        assert ids(await a.call("search", query="release", conversation="dm:bob")) == \
            [direct["id"]]
        assert ids(await a.call("search", query="release", sender="bob")) == [from_bob["id"]]
        key = b.peer["key"]
        assert ids(await a.call("search", query="release", sender=key)) == [from_bob["id"]]
        assert len(ids(await a.call("search", query="release", since="1h"))) == 3
        assert ids(await a.call("search", query="release", until="1h")) == []
        assert ids(await a.call("search", query="release", since=time.time() + 60)) == []
        assert len(ids(await a.call("search", query="release", since="2020-01-01T00:00:00Z",
                                    until=time.time() + 60))) == 3
        assert len(ids(await a.call("search", query="release", kind="text"))) == 3
        assert ids(await a.call("search", query="release", kind="approval")) == []
        assert len(ids(await a.call("search", query="release", limit=1))) == 1
        with pytest.raises(InvalidRequest, match="limit"):
            await a.call("search", query="release", limit=101)
        with pytest.raises(InvalidRequest, match="as a time"):
            await a.call("search", query="release", since="last tuesday")
        with pytest.raises(InvalidRequest):
            await a.call("search", query="")
        with pytest.raises(InvalidRequest):
            await a.call("search", query="x" * 501)


HOSTILE = ['"', '"deploy', 'deploy"', 'NEAR(deploy notes)', "deploy*", "*", "-deploy",
           "deploy -notes", "body:deploy", ":", "deploy AND OR NOT", "(", ")", "^deploy",
           "{body}: deploy", "'; DROP TABLE messages; --", "\x00\x02\x03", "🚀", "é"]


async def test_hostile_queries_find_words_or_nothing_never_fail(inproc, people) -> None:
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        sent = await a.send("bob", "deploy notes [v2] \\ with brackets and <b>tags</b>\x1b[2K")
        for query in HOSTILE:
            found = await b.call("search", query=query)
            assert ids(found) in ([], [sent["id"]]), query
        assert ids(await b.call("search", query='deploy* -"notes":')) == [sent["id"]]
        assert ids(await b.call("search", query="NEAR(deploy notes)")) == []  # "near" too
        snippet = (await b.call("search", query="brackets"))["hits"][0]["snippet"]
        assert "[brackets]" in snippet and "\\[v2\\]" in snippet and "\\\\" in snippet
        assert "\x1b" not in snippet and "<b>tags</b>" in snippet


def test_snippets_keep_only_the_marks_as_markup() -> None:
    raw = f"a [b] {MARK_START}word{MARK_END} \\ \u202e\nnext"
    assert public_snippet(raw) == "a \\[b\\] [word] \\\\ next"


def test_times_are_epoch_durations_or_iso() -> None:
    now = 1_000_000.0
    assert parse_when("2h", now) == now - 7200 and parse_when("3d", now) == now - 3 * 86400
    assert parse_when("90s", now) == now - 90 and parse_when(12.5, now) == 12.5
    assert parse_when("1733390000", now) == 1733390000.0
    assert parse_when("1970-01-02", now) == 86400.0
    assert parse_when("1970-01-01T01:00:00+01:00", now) == 0.0


async def test_found_as_soon_as_sent_over_http_and_mcp(inproc, people) -> None:
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        for n in range(50):  # sent then searched at once: each is found
            sent = await a.send("bob", f"marker{n} unique payload")
            assert ids(await b.call("search", query=f"marker{n}")) == [sent["id"]]
        token = (await b.call("token_create", label="search test", cap="read"))["token"]
        async with aiohttp.ClientSession() as http, http.post(
                served.url + "/api/search", json={"query": "unique payload", "limit": 5},
                headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            over_http = (await resp.json())["result"]
        assert over_http["complete"] is True and "note" not in over_http
        assert len(over_http["hits"]) == 5 and over_http["hits"][0]["message"]["from"] == "ann"

        async with stdio_session(mcp_params(bob, served.url, "--name", "bob-s")) as s:
            while (await s.session.call_tool("mesh_whoami", {})).is_error:  # connected
                await asyncio.sleep(0.05)
            sent = await a.send("bob-s", "the mcp session finds this needle")
            found = await s.call("mesh_search", query="needle")
            assert ids(found) == [sent["id"]] and "[needle]" in found["hits"][0]["snippet"]
            assert (await s.call("mesh_search", query="marker1"))["hits"] == []  # bob's, not its


async def test_messages_stored_before_the_index_are_found_after_a_restart(inproc, people,
                                                                          tmp_path) -> None:
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url):
        sent = [await a.send("bob", f"archived {word} report") for word in
                ("alpha", "beta", "gamma")]
    await served.stop()
    with sqlite3.connect(tmp_path / "hub" / "meshhub.db") as conn:  # as before m013 filled it
        conn.execute("INSERT INTO message_search (message_search) VALUES ('delete-all')")
        conn.execute("DELETE FROM message_search_rows")
        conn.execute("UPDATE message_search_state SET high_water = ''")
    served = await inproc(send_rate=0)

    async def indexed() -> bool:  # in the background, with no search asking for it
        with sqlite3.connect(tmp_path / "hub" / "meshhub.db") as conn:
            return conn.execute("SELECT COUNT(*) FROM message_search_rows").fetchone()[0] == 3

    await eventually(indexed, timeout=30)
    async with bob.client(served.url) as b:
        assert set(ids(await b.call("search", query="archived report"))) == \
            {m["id"] for m in sent}
        assert ids(await b.call("search", query="beta")) == [sent[1]["id"]]


def _emptied_index(db: Any) -> None:
    """The index as a hub upgraded with these messages finds it: empty."""
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO message_search (message_search) VALUES ('delete-all')")
        conn.execute("DELETE FROM message_search_rows")
        conn.execute("UPDATE message_search_state SET high_water = ''")


async def _all_indexed(db: Any) -> bool:
    with sqlite3.connect(db) as conn:
        return bool(conn.execute(
            "SELECT (SELECT COUNT(*) FROM message_search_rows) = "
            "(SELECT COUNT(*) FROM messages)").fetchone()[0])


async def test_a_backlog_over_the_cap_is_searched_as_far_as_indexed_and_said_so(
        inproc, people, tmp_path, monkeypatch) -> None:
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url):
        sent = [await a.send("bob", f"backlog item {n}") for n in range(12)]
    await served.stop()
    db = tmp_path / "hub" / "meshhub.db"
    _emptied_index(db)
    # a search indexes at most 2 batches of 2; the background indexer waits (nothing settled)
    monkeypatch.setattr(sqlite_search, "BATCH", 2)
    monkeypatch.setattr(sqlite_search, "CATCH_UP", 2)
    monkeypatch.setattr(sqlite_search, "SETTLE_MS", 10**15)
    served = await inproc(send_rate=0)
    async with bob.client(served.url) as b:
        partial = await b.call("search", query="backlog item", limit=100)
        assert partial["complete"] is False and "still being built" in partial["note"]
        assert set(ids(partial)) < {m["id"] for m in sent}

        monkeypatch.setattr(sqlite_search, "SETTLE_MS", 0)  # the background indexer goes on
        await eventually(lambda: _all_indexed(db), timeout=30)
        whole = await b.call("search", query="backlog item", limit=100)
        assert whole["complete"] is True and "note" not in whole
        assert set(ids(whole)) == {m["id"] for m in sent}
        async with ann.client(served.url) as a:  # under the cap: found as soon as sent
            late = await a.send("bob", "backlog straggler")
        found = await b.call("search", query="straggler")
        assert found["complete"] is True and ids(found) == [late["id"]]


async def test_long_bodies_give_short_snippets_and_a_match_past_the_prefix_ranks_last(
        inproc, people) -> None:
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    filler = " ".join(f"filler{n}" for n in range(2500))  # about 24 KB
    assert len(filler) > sqlite_search.PREFIX
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        for n in range(105):
            await a.send("bob", f"needle number {n} {filler}")
        deep = await a.send("bob", f"opening words {filler} needle")
        found = await b.call("search", query="needle", limit=100)
    assert found["complete"] is True and len(found["hits"]) == 100
    assert all(len(hit["snippet"]) < 400 for hit in found["hits"])
    last = found["hits"][-1]
    assert last["message"]["id"] == deep["id"] and last["snippet"].startswith("opening words")
    assert all("[needle]" in hit["snippet"] for hit in found["hits"][:-1])


async def test_a_time_range_few_matches_fall_in_is_cut_short_and_says_so(
        inproc, people, monkeypatch) -> None:
    monkeypatch.setattr(sqlite_search, "EXAMINED", 5)
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        sent = [await a.send("bob", f"common word {n}") for n in range(8)]
        for filters in ({"since": time.time() + 3600}, {"until": 1000000000}):
            cut = await b.call("search", query="common", **filters)
            assert cut["hits"] == [] and cut["complete"] is False
            assert "narrow the search" in cut["note"]
        recent = await b.call("search", query="common", since="1h", limit=100)
        assert recent["complete"] is False and set(ids(recent)) == {m["id"] for m in sent[-5:]}
        # the sender, conversation and kind are in the index: no cap cuts them short
        for filters in ({"kind": "nonexistent"}, {"sender": "bob"}, {"conversation": "#general"}):
            none = await b.call("search", query="common", **filters)
            assert none == {"query": "common", "complete": True, "hits": []}
        every = await b.call("search", query="common", kind="text", sender="ann",
                             conversation="dm:ann", limit=100)
        assert every["complete"] is True and set(ids(every)) == {m["id"] for m in sent}


async def test_concurrent_searches_share_one_catch_up(inproc, people, tmp_path,
                                                      monkeypatch) -> None:
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url):
        for n in range(12):
            await a.send("bob", f"shared catch up {n}")
    await served.stop()
    _emptied_index(tmp_path / "hub" / "meshhub.db")
    monkeypatch.setattr(sqlite_search, "BATCH", 2)
    monkeypatch.setattr(sqlite_search, "CATCH_UP", 2)
    monkeypatch.setattr(sqlite_search, "SETTLE_MS", 10**15)
    runs: list[int] = []
    catch_up = sqlite_search.MessageSearch._catch_up

    async def counted(self: Any) -> bool:
        runs.append(1)
        return await catch_up(self)

    monkeypatch.setattr(sqlite_search.MessageSearch, "_catch_up", counted)
    served = await inproc(send_rate=0)
    done = await asyncio.gather(*(served.hub.store.search_catch_up() for _ in range(4)))
    assert len(runs) == 1 and done == [False] * 4


async def test_messages_stored_below_the_mark_are_indexed_at_open(inproc, people,
                                                                 tmp_path) -> None:
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url):
        sent = [await a.send("bob", f"stepped clock {n}") for n in range(5)]
    await served.stop()
    db = tmp_path / "hub" / "meshhub.db"
    _emptied_index(db)
    with sqlite3.connect(db) as conn:  # as if stored after the mark had passed them
        conn.execute("UPDATE message_search_state SET high_water = "
                     "(SELECT MAX(id) FROM messages)")
    served = await inproc(send_rate=0)
    await eventually(lambda: _all_indexed(db), timeout=30)
    async with bob.client(served.url) as b:
        found = await b.call("search", query="stepped clock", limit=100)
    assert found["complete"] is True and set(ids(found)) == {m["id"] for m in sent}
