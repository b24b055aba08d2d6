"""Approval requests (meshhub.builtins.approvals) over the real hub process: ask, answer with a
reason, the asker is told in the request's thread, answered once, visible to the two only."""

from __future__ import annotations

import pytest

from meshhub.errors import Forbidden, InvalidRequest, NotFound

from .helpers import collect


async def test_request_answer_and_the_asker_is_notified(hub, people):
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        asked = await a.call("approval_request", to="bob", question="merge PR 12?")
        assert asked["state"] == "pending" and asked["options"] == ["approve", "deny"]
        request = (await collect(b, 1))[0]
        assert request["kind"] == "approval" and request["priority"] == "now"
        assert request["data"] == {"approval_id": asked["id"], "question": "merge PR 12?",
                                   "options": ["approve", "deny"], "kind": "approval"}
        pending = await b.call("approvals", role="approver")
        assert [p["id"] for p in pending] == [asked["id"]]

        answered = await b.call("approval_answer", id=asked["id"], answer="DENY",
                                reason="tests are red")
        assert (answered["state"], answered["answer"]) == ("answered", "deny")
        told = (await collect(a, 1))[0]
        assert told["kind"] == "approval_answer" and told["reply_to"] == request["id"]
        assert told["data"]["answer"] == "deny" and told["data"]["reason"] == "tests are red"
        assert "tests are red" in told["text"]

        with pytest.raises(InvalidRequest, match="already answered"):
            await b.call("approval_answer", id=asked["id"], answer="approve")
        mine = await a.call("approvals", role="asker", state="all")
        assert mine[0]["answer"] == "deny" and mine[0]["approver"] == "bob"
        assert await b.call("approvals") == []  # nothing pending any more


async def test_options_and_refusals(hub, people):
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b, carl.client(hub.url) as c:
        asked = await a.call("approval_request", to="bob", question="which region?",
                             options=["eu-west", "us-east", "both"])
        with pytest.raises(InvalidRequest, match="answer one of: eu-west, us-east, both"):
            await b.call("approval_answer", id=asked["id"], answer="approve")
        # carl was not asked: he is told so (a button he was shown), and cannot read it
        with pytest.raises(Forbidden, match="not one of the people asked"):
            await c.call("approval_answer", id=asked["id"], answer="both")
        with pytest.raises(NotFound):
            await c.call("approval_get", id=asked["id"])
        with pytest.raises(Forbidden, match="only bob may answer"):
            await a.call("approval_answer", id=asked["id"], answer="both")
        with pytest.raises(InvalidRequest, match="cannot approve your own"):
            await a.call("approval_request", to="ann", question="me?")
        with pytest.raises(NotFound, match="closest known"):
            await a.call("approval_request", to="bobby-tables", question="?")
        with pytest.raises(InvalidRequest, match="differ"):
            await a.call("approval_request", to="bob", question="?", options=["a", "A"])
        result = await b.call("approval_answer", id=asked["id"], answer="us-east")
        assert result["answer"] == "us-east"
