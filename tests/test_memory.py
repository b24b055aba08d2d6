"""Memory (remember, recall, forget, restore) over a real hub: through the client library, the
HTTP API and the real MCP tools of a `hub mcp` session."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from meshhub.builtins import memories
from meshhub.errors import Forbidden, InvalidRequest, MeshError, NotFound

from .helpers import Identity
from .test_mcp import mcp_params, stdio_session


def owner(tmp_path) -> Identity:
    return Identity(tmp_path / "hub", "owner")


async def test_recall_ranks_filters_by_tag_and_finds_only_memories_with_every_word(
        inproc, people):
    served = await inproc()
    (ann,) = people("ann")
    async with ann.client(served.url) as a:
        short = await a.call("remember", content="Rollback: run make rollback, then rollback "
                             "the schema.", tags=["deploy", "ops"])
        long = await a.call("remember", content="The docs site deploys itself from main; a "
                            "broken page needs a rollback of the last commit and a rebuild of "
                            "the whole site, which takes about ten minutes.", tags=["Docs"])
        lunch = await a.call("remember", content="Lunch is at noon on Fridays.")
        assert short["author"] == "ann" and short["tags"] == ["deploy", "ops"]
        assert long["tags"] == ["docs"] and lunch["tags"] == []  # tags are kept lower-case

        found = await a.call("recall", query="rollback")
        # the memory without the word is not among them; the one that says it most, first
        assert [m["id"] for m in found] == [short["id"], long["id"]]
        assert "⟦rollback⟧" in found[0]["snippet"].lower()
        assert found[0]["content"].startswith("Rollback:") and found[0]["author"] == "ann"
        # every word must be in a memory: one holding only some of them is not found at all
        assert [m["id"] for m in await a.call("recall", query="rollback schema")] == [
            short["id"]]
        assert await a.call("recall", query="rollback tuesday") == []
        # stemmed, and the tags are searched too
        assert [m["id"] for m in await a.call("recall", query="deployed ops")] == [short["id"]]

        assert [m["id"] for m in await a.call("recall", query="rollback", tags=["docs"])] == [
            long["id"]]
        assert [m["id"] for m in await a.call("recall", tags=["deploy", "ops"])] == [
            short["id"]]
        assert await a.call("recall", tags=["deploy", "docs"]) == []
        newest = await a.call("recall", limit=2)  # no query: the newest
        assert [m["id"] for m in newest] == [lunch["id"], long["id"]]
        assert "snippet" not in newest[0]
        assert (await a.call("memory_get", id=short["id"]))["content"] == short["content"]

        with pytest.raises(InvalidRequest, match="lower-case words"):
            await a.call("remember", content="x", tags=["two words"])
        with pytest.raises(InvalidRequest, match="at most 20"):
            await a.call("remember", content="x", tags=[f"t{i}" for i in range(21)])
        with pytest.raises(InvalidRequest, match="at most 16384 bytes") as too_long:
            await a.call("remember", content="é" * 8193)
        assert too_long.value.code == "too_long"
        with pytest.raises(InvalidRequest, match="some text"):
            await a.call("remember", content="  \n")
        with pytest.raises(NotFound, match="no memory"):
            await a.call("memory_get", id="nope")


async def test_forget_hides_and_only_the_forgetter_or_the_owner_restores(
        inproc, people, tmp_path):
    served = await inproc()
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            owner(tmp_path).client(served.url, name="owner") as o:
        kept = await b.call("remember", content="The staging database is db-2.", tags=["db"])
        gone = await b.call("forget", id=(await a.call("recall", query="staging"))[0]["id"])
        assert gone["id"] == kept["id"] and gone["forgotten_by"] == "bob"
        assert await a.call("recall", query="staging") == []
        assert await a.call("recall", tags=["db"]) == []
        shown = await a.call("recall", query="staging", include_forgotten=True)
        assert shown[0]["forgotten_by"] == "bob" and shown[0]["forgotten_at"] >= kept["created_at"]
        again = await a.call("forget", id=kept["id"])  # forgotten already: bob's stands
        assert again["forgotten_by"] == "bob"

        with pytest.raises(Forbidden, match="only bob, who forgot"):
            await a.call("restore", id=kept["id"])
        back = await b.call("restore", id=kept["id"])
        assert "forgotten_by" not in back and "forgotten_at" not in back
        assert [m["id"] for m in await a.call("recall", query="staging")] == [kept["id"]]

        await a.call("forget", id=kept["id"])
        assert (await o.call("restore", id=kept["id"]))["id"] == kept["id"]  # the owner may
        assert [m["id"] for m in await b.call("recall", tags=["db"])] == [kept["id"]]
        with pytest.raises(NotFound):
            await a.call("forget", id="nope")


async def test_the_http_api_and_a_restart_keep_memories_and_who_forgot_them(
        inproc, people, tmp_path):
    served = await inproc()
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        ann_token = (await a.call("token_create", cap="send"))["token"]
        bob_token = (await b.call("token_create", cap="send"))["token"]

    async def post(token: str, name: str, **body: object) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.post(
                f"{served.url}/api/{name}", json=body,
                headers={"Authorization": f"Bearer {token}"}) as resp:
            answer = await resp.json()
            return resp.status, answer.get("result", answer)

    status, made = await post(ann_token, "remember", content="CI runs on the arm64 runners.",
                              tags=["ci"])
    assert status == 200 and made["author"] == "ann"
    status, found = await post(bob_token, "recall", query="arm64 runners")
    assert status == 200 and [m["id"] for m in found] == [made["id"]]
    status, _ = await post(bob_token, "remember", content="x", tags=["NO!"])
    assert status == 400
    status, gone = await post(bob_token, "forget", id=made["id"])
    assert status == 200 and gone["forgotten_by"] == "bob"
    status, refused = await post(ann_token, "restore", id=made["id"])
    assert status == 403 and "only bob" in refused["error"]["message"]

    await served.stop()
    served = await inproc()
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        assert await a.call("recall", query="arm64") == []
        assert (await a.call("memory_get", id=made["id"]))["forgotten_by"] == "bob"
        with pytest.raises(Forbidden):
            await a.call("restore", id=made["id"])  # who forgot it is kept across a restart
        await b.call("restore", id=made["id"])
        assert [m["tags"] for m in await a.call("recall", query="arm64")] == [["ci"]]


async def test_a_tag_filter_finds_a_match_ranked_past_the_largest_search_page(inproc, people):
    """More than a search page of memories match the query, and more than a search's worth of
    keys carry the tag; the one match with the tag ranks last of all (one mention in the
    longest text): a filter after one search would lose it. A rarer tag takes the other way
    (a search among its memories at once), with the same answer."""
    served = await inproc(action_rate=0)
    (ann,) = people("ann")
    async with ann.client(served.url) as a:
        pending = [await a.call_nowait("remember", content=f"alpha alpha note {i}",
                                       tags=["few"] if i < 3 else None)
                   for i in range(memories.SEARCH_PAGE)]
        pending += [await a.call_nowait("remember", content=f"filler {i}", tags=["wide"])
                    for i in range(memories.SEARCH_CHUNK)]
        await asyncio.gather(*pending)
        last = await a.call("remember", content="alpha " + "filler words " * 60,
                            tags=["wide", "few"])
        assert last["id"] not in [m["id"] for m in await a.call("recall", query="alpha",
                                                                limit=100)]
        for tags in (["wide"], ["few", "wide"]):
            found = await a.call("recall", query="alpha", tags=tags)
            assert [m["id"] for m in found] == [last["id"]]
        few = await a.call("recall", query="alpha", tags=["few"])
        assert len(few) == 4 and few[-1]["id"] == last["id"]
        assert [m["id"] for m in await a.call("recall", tags=["wide"], limit=1)] == [last["id"]]


async def test_the_mcp_tools_remember_recall_forget_and_restore(inproc, people):
    """Whoever forgot a memory is a member: any of its sessions may restore it."""
    served = await inproc()
    ann, bob = people("ann", "bob")
    async with stdio_session(mcp_params(ann, served.url, "--name", "ann-s")) as s, \
            stdio_session(mcp_params(bob, served.url, "--name", "bob-s")) as t:
        assert {"mesh_remember", "mesh_recall", "mesh_forget", "mesh_restore",
                "mesh_memory_get"} <= await s.tool_names()
        made = await s.call("mesh_remember", content="The release branch is cut on Thursdays.",
                            tags=["release"])
        other = await s.call("mesh_remember", content="Thursdays are quiet.")
        found = await t.call("mesh_recall", query="release thursdays")
        assert [m["id"] for m in found] == [made["id"]] and found[0]["author"] == "ann-s"
        assert [m["id"] for m in await t.call("mesh_recall", query="thursdays")] == [
            other["id"], made["id"]]
        await t.call("mesh_forget", id=made["id"])
        assert [m["id"] for m in await s.call("mesh_recall", query="thursdays")] == [other["id"]]
        assert "only bob-s, who forgot" in await s.error("mesh_restore", id=made["id"])
        assert (await t.call("mesh_restore", id=made["id"]))["id"] == made["id"]
        assert [m["id"] for m in await s.call("mesh_recall", tags=["release"])] == [made["id"]]
        await t.call("mesh_forget", id=made["id"])
        async with bob.client(served.url) as b:  # another session of the member who forgot it
            assert "forgotten_at" not in await b.call("restore", id=made["id"])


async def test_memories_count_against_the_authors_storage_quota(inproc, people):
    served = await inproc(member_quota_bytes=1000)
    (ann,) = people("ann")
    async with ann.client(served.url, receive=False) as a:
        await a.call("remember", content="x" * 590, tags=["tenletters"])  # 600 bytes
        with pytest.raises(MeshError) as err:
            await a.call("remember", content="y" * 500)
        assert err.value.code == "quota_exceeded" and err.value.details["used"] == 600
        assert len(await a.call("recall")) == 1  # nothing was stored
    await served.stop()
    again = await inproc(member_quota_bytes=1000)  # the same home: counted again at start
    for _ in range(3000):
        if again.hub.limits.storage.total == 600:
            break
        await asyncio.sleep(0.01)
    async with ann.client(again.url, receive=False) as a:
        with pytest.raises(MeshError) as err:
            await a.call("remember", content="y" * 500)
        assert err.value.details["used"] == 600


async def test_a_memory_cannot_fake_the_marks_of_a_snippet(inproc, people):
    served = await inproc()
    (ann,) = people("ann")
    async with ann.client(served.url, receive=False) as a:
        await a.call("remember", content="see ⟦approved⟧ and a\\b before the rollback")
        (found,) = await a.call("recall", query="rollback")
        assert found["snippet"] == "see \\⟦approved\\⟧ and a\\\\b before the ⟦rollback⟧"
        for control in ("\x02", "\x03"):
            with pytest.raises(InvalidRequest, match="U\\+0002"):
                await a.call("remember", content=f"a {control}rollback\x03 b")
