"""The notices and checks the coordination plugins share, over a real hub on 127.0.0.1 through
the client library, the HTTP API and a real `hub mcp` session: an ``@name`` in a peer's text
reaches nobody, a refused notice leaves the saved change standing, deadlines are finite and
within a year, a refused proposal joins nobody, a released claim tells its holder, and peers'
text is checked before anything is saved."""

from __future__ import annotations

from typing import Any

import pytest

from meshhub.errors import Forbidden, InvalidRequest, MeshError, NotFound

from .coordination_support import before_marker
from .helpers import api_call, collect, token_for
from .test_mcp import mcp_params, stdio_session


async def ops(*clients: Any) -> None:
    """``#ops`` created by the first client and joined by the others."""
    await clients[0].call("conversation_create", name="ops")
    for other in clients[1:]:
        await other.call("conversation_join", name="ops")


async def kinds_before_marker(client: Any, sender: Any) -> list[str]:
    return [m["kind"] for m in await before_marker(client, sender)]


async def test_an_at_name_in_peers_text_reaches_nobody(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, zed = people("ann", "bob", "zed")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            zed.client(served.url) as z:
        await ops(a, b)
        await a.call("task_create", title="ask @zed", assignee="bob", conversation="ops")
        await a.call("decision_post", key="db", value="@zed decides", conversation="ops")
        await a.call("artifact_create", conversation="ops", name="plan.md", content="x",
                     title="for @zed")
        await a.call("propose", title="ship it @zed", to=["#ops"], threshold=1,
                     description="@zed votes too")
        await a.call("verify_request", to="bob", claim="@zed says it works")
        assert await kinds_before_marker(b, a) == [
            "task", "decision_board", "artifact", "proposal", "verification"]
        assert await before_marker(z, a) == []

        # the same through the HTTP API
        token = await token_for(a)
        task = await api_call(served.url, token, "task_create", title="@zed look",
                              assignee="bob")
        assert task["title"] == "@zed look"
        await api_call(served.url, token, "decision_post", key="ui", value="@zed too",
                       conversation="#ops")
        assert await kinds_before_marker(b, a) == ["task", "decision_board"]
        assert await before_marker(z, a) == []


async def test_the_mcp_tools_keep_notices_to_their_peers(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, zed = people("ann", "bob", "zed")
    async with bob.client(served.url) as b, zed.client(served.url) as z, \
            stdio_session(mcp_params(ann, served.url, "--name", "ann-s")) as s:
        made = await s.call("mesh_task_create", title="tell @zed", assignee="bob")
        assert made["title"] == "tell @zed"
        await s.call("mesh_verify_request", to="bob", claim="@zed agrees")
        assert await kinds_before_marker(b, z) == ["task", "verification"]
        assert await before_marker(z, b) == []
        proposal = await b.call("propose", title="go", to=["zed"], threshold=1)
        assert "no proposal" in await s.error("mesh_vote", id=proposal["id"], vote="approve")
        assert "no proposal" in await s.error("mesh_vote", id="nothing", vote="approve")
        for bad in ("nan", "inf", "1e308", "400d"):
            assert "deadline" in await s.error("mesh_propose", title="x", to=["bob"],
                                               threshold=1, deadline=bad)
        assert "line break" in await s.error("mesh_verify_request", to="bob", claim="c",
                                             files=["a.py\nb.py"])
        assert "title" in await s.error("mesh_task_create", title=" \n ")


async def test_a_refused_notice_leaves_the_change_standing(inproc, people):
    served = await inproc(send_rate=0, max_body_bytes=300)
    ann, bob = people("ann", "bob")
    long = "word " * 100
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        await ops(a, b)
        posted = await a.call("decision_post", key="db", value=long, conversation="ops")
        assert posted["value"] == long
        asked = await a.call("verify_request", to="bob", claim=long)
        answered = await b.call("verify_answer", id=asked["id"], result="verified",
                                evidence=long)
        assert answered["state"] == "verified"

        # the card is too large to send: the proposal stands without one, and the vote that
        # resolves it sends the result as a message of its own
        made = await a.call("propose", title="big", to=["bob"], threshold=1,
                            description=long)
        assert made["message_id"] is None
        voted = await b.call("vote", id=made["id"], vote="approve")
        assert voted["state"] == "approved"
        (result,) = [m for m in await before_marker(a, b) if m["kind"] == "proposal_result"]
        assert result["data"]["state"] == "approved" and result["reply_to"] is None
        token = await token_for(b)
        got = await api_call(served.url, token, "proposal_get", id=made["id"])
        assert (got["state"], got["message_id"]) == ("approved", None)
    assert len(await served.hub.audit.entries(event="proposal_resolved")) == 1


async def test_deadlines_are_finite_and_within_a_year(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url, receive=False):
        for bad in ("nan", "inf", "-inf", "1e308", "400d", 1e308):
            with pytest.raises(InvalidRequest, match="deadline"):
                await a.call("propose", title="x", to=["bob"], threshold=1, deadline=bad)
        token = await token_for(a)
        refused = await api_call(served.url, token, "propose", title="x", to=["bob"],
                                 threshold=1, deadline="NaN")
        assert refused["code"] == "invalid_request"
        assert await a.call("proposals") == []
        made = await a.call("propose", title="x", to=["bob"], threshold=1, deadline="300d")
        assert made["deadline"] is not None
        for bad in ("nan", "inf"):
            with pytest.raises(InvalidRequest, match="finite"):
                await a.call("search", query="x", since=bad)


async def test_a_refused_proposal_joins_nobody(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, dave = people("ann", "bob", "dave")
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False) as b, \
            dave.client(served.url, receive=False) as d:
        await ops(a, b)
        with pytest.raises(Forbidden, match="#ops"):
            await d.call("propose", title="x", to=["#ops"], threshold=99)
        with pytest.raises(Forbidden, match="#ops"):
            await d.call("propose", title="x", to=["#ops"], threshold=1)
        with pytest.raises(Forbidden, match="#ops"):
            await d.call("propose", title="x", to=["bob"], threshold=1, conversation="ops")
        with pytest.raises(Forbidden, match="#ops"):
            await d.call("verify_request", to="bob", claim="x", conversation="#ops")
        token = await token_for(d)
        refused = await api_call(served.url, token, "propose", title="x", to=["#ops"],
                                 threshold=1)
        assert refused["code"] == "forbidden"
        conv = served.hub.directory.conversations["ops"]
        assert d.peer["key"] not in conv.members
        assert await d.call("proposals") == [] and await d.call("verifications") == []
        # a member's proposal over the threshold is refused, and nothing is saved
        with pytest.raises(InvalidRequest, match="threshold"):
            await a.call("propose", title="x", to=["#ops"], threshold=2)
        assert await a.call("proposals") == []


async def test_a_released_claim_tells_its_holder(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, bob.client(served.url) as b:
        await ops(a, b)
        task = await a.call("task_create", title="open work", conversation="ops")
        await b.call("task_claim", id=task["id"])
        assert [m["data"]["status"] for m in await collect(a, 1)] == ["claimed"]
        await a.call("task_release", id=task["id"], note="needed elsewhere")
        (note,) = await before_marker(b, a)
        assert note["kind"] == "task" and note["data"] == {"task_id": task["id"],
                                                           "status": "open"}
        assert "released" in note["text"]


async def test_peers_text_is_checked_before_anything_is_saved(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url, receive=False) as a, \
            bob.client(served.url, receive=False):
        for blank in ("   ", "\n\t"):
            with pytest.raises(InvalidRequest, match="title"):
                await a.call("task_create", title=blank)
        made = await a.call("task_create", title="two\nlines  and\r\n a tab\t")
        assert made["title"] == "two lines and a tab"
        for path in ("a.py\nb.py", "a.py\u2028fake: label", "x\rY"):
            with pytest.raises(InvalidRequest, match="line break"):
                await a.call("verify_request", to="bob", claim="c", files=[path])
        assert await a.call("verifications") == []
        with pytest.raises(MeshError) as long:
            await a.call("artifact_create", conversation="c" * 300, name="a.md", content="x")
        assert long.value.code == "too_long" and "conversation" in str(long.value)
        token = await token_for(a)
        refused = await api_call(served.url, token, "artifacts", conversation="c" * 300)
        assert refused["code"] == "too_long"
        with pytest.raises(NotFound):
            await a.call("proposal_get", id="nothing")
