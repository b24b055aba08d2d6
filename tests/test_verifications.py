"""Verifications over a real hub on 127.0.0.1, through the client library, the HTTP API and a
real `hub mcp` session: asked, answered once by the verifier only, the asker told, the report
section."""

from __future__ import annotations

import time

import pytest

from meshhub.errors import Forbidden, InvalidRequest, MeshError, NotFound
from meshhub.report import build_report

from .helpers import api_call, token_for
from .test_mcp import mcp_params, stdio_session
from .test_proposals import next_of_kind


async def test_a_verification_is_answered_once_and_the_asker_told(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c:
        asked = await a.call("verify_request", to="bob", claim="the migration is reversible",
                             files=["core/builtins/migrations.py", "file:01abc"])
        assert (asked["state"], asked["asker"], asked["verifier"]) == ("pending", "ann", "bob")
        card = await next_of_kind(b, "verification")
        assert card["data"] == {"verification_id": asked["id"],
                                "claim": "the migration is reversible",
                                "files": ["core/builtins/migrations.py", "file:01abc"]}
        with pytest.raises(InvalidRequest, match="someone else"):
            await a.call("verify_request", to="ann", claim="x")
        with pytest.raises(NotFound):
            await c.call("verification_get", id=asked["id"])
        with pytest.raises(Forbidden, match="only bob"):
            await a.call("verify_answer", id=asked["id"], result="verified", evidence="me")

        token = await token_for(b)
        answered = await api_call(served.url, token, "verify_answer", id=asked["id"],
                                  result="failed", evidence="down() drops a column it needs")
        assert (answered["state"], answered["evidence"]) == ("failed",
                                                             "down() drops a column it needs")
        told = await next_of_kind(a, "verification_result")
        assert told["data"] == {"verification_id": asked["id"], "result": "failed"}
        again = await api_call(served.url, token, "verify_answer", id=asked["id"],
                               result="verified", evidence="changed my mind")
        assert again["code"] == "conflict" and "failed" in again["message"]
        with pytest.raises(MeshError):
            await b.call("verify_answer", id=asked["id"], result="verified", evidence="x")

        assert [v["id"] for v in await a.call("verifications", mine=True)] == [asked["id"]]
        assert await b.call("verifications", mine=True) == []
        assert [v["id"] for v in await b.call("verifications", state="failed")] == [asked["id"]]
        assert await c.call("verifications") == []
        report = await build_report(served.hub, served.hub.directory.find("ann"),
                                    time.time() - 60, time.time() + 1)
        assert "## Verifications" in report and "Failed by bob" in report
        assert "Verifications" not in await build_report(
            served.hub, served.hub.directory.find("carl"), time.time() - 60, time.time() + 1)


async def test_mcp_tools_ask_and_answer(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob = people("ann", "bob")
    async with ann.client(served.url) as a, \
            stdio_session(mcp_params(bob, served.url)) as s:
        session = (await s.call("mesh_whoami"))["name"]
        asked = await a.call("verify_request", to=session, claim="tests pass on 3.11")
        assert [v["id"] for v in await s.call("mesh_verifications", state="pending")] == [
            asked["id"]]
        done = await s.call("mesh_verify_answer", id=asked["id"], result="verified",
                            evidence="ran pytest: 812 passed")
        assert done["state"] == "verified"
        assert (await next_of_kind(a, "verification_result"))["data"]["result"] == "verified"
        got = await s.call("mesh_verification_get", id=asked["id"])
        assert got["evidence"] == "ran pytest: 812 passed"
