"""Tool permissions, questions and the approval policy (meshhub.builtins.approvals) over an
in-process hub: who is asked, what the policy settles alone, quiet hours, expiry, the first
answer of a group, and waiting calls that do not hold up the caller's other calls."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

from meshhub.builtins.approval_book import ApprovalBook
from meshhub.errors import Forbidden, InvalidRequest, NotFound

from .helpers import Identity, collect, eventually, no_message

POLICY = {
    "members": {
        "*": {"auto_allow": ["Read", "Glob"]},
        "owner": {"auto_deny": ["WebFetch"], "tools": {"Bash": "@ops"}, "urgent": ["Bash"]},
    },
}


def session(served, owner: Identity, name: str = "owner-proj", **options):
    return owner.client(served.url, name=name, kind="agent", connector="mcp", session=name,
                        member_name="owner", **options)


async def test_tool_permissions_follow_the_policy_and_only_people_answer(inproc, tmp_path,
                                                                         people):
    served = await inproc(raw={"approvals": POLICY}, send_rate=0)
    owner = Identity(tmp_path / "hub", "owner")
    (bob,) = people("bob")
    async with session(served, owner) as s, owner.client(served.url) as o, \
            bob.client(served.url, groups={"ops": "member"}) as b:
        read = await s.call("permission_request", tool="Read", description="read a file")
        assert (read["state"], read["answer"], read["label"]) == ("answered", "allow",
                                                                 "allow by policy")
        fetch = await s.call("permission_request", tool="WebFetch")
        assert (fetch["answer"], fetch["answered_on"]) == ("deny", "policy")

        bash = await s.call("permission_request", tool="Bash", description="run the tests",
                            input_preview="pytest -q", request_id="qwert")
        assert bash["approvers"] == ["bob"] and bash["ref"] == "qwert"
        card = (await collect(b, 1))[0]
        assert card["kind"] == "approval" and card["data"]["tool"] == "Bash"
        assert "owner-proj asks to run Bash: run the tests" in card["text"]
        assert "pytest -q" in card["text"] and "/approve qwert" in card["text"]

        edit = await s.call("permission_request", tool="Edit", description="edit main.py",
                            request_id="asdfg")
        assert edit["approvers"] == ["owner"]  # the member who owns the session
        assert (await collect(o, 1))[0]["data"]["ref"] == "asdfg"
        with pytest.raises(Forbidden, match="agent session cannot answer a tool permission"):
            await s.call("approval_answer", id="asdfg", answer="allow")
        with pytest.raises(Forbidden, match="not one of the people asked"):
            await b.call("approval_answer", id=edit["id"], answer="allow")
        waiting = asyncio.create_task(s.call("approval_wait", id=edit["id"], timeout=20))
        assert (await s.call("whoami"))["name"] == "owner-proj"  # the wait holds nothing up
        answered = await o.call("approval_answer", id="ASDFG", answer="Allow", reason="fine")
        assert answered["label"] == "allow, answered by owner on cli"
        settled = await waiting
        assert (settled["state"], settled["answer"], settled["reason"]) == ("answered",
                                                                            "allow", "fine")
        assert settled["answer_message_id"] is None  # the waiting call had it: no message
        assert await no_message(s, 0.3)
        with pytest.raises(InvalidRequest, match="already answered: allow, answered by owner"):
            await o.call("approval_answer", id=edit["id"], answer="deny")

        closed = await s.call("approval_close", id="qwert", why="terminal")
        assert (closed["state"], closed["label"]) == ("closed", "answered at the terminal")
        with pytest.raises(InvalidRequest, match="already answered: answered at the terminal"):
            await b.call("approval_answer", id="qwert", answer="deny")
        with pytest.raises(NotFound, match="that you asked"):
            await b.call("approval_close", id=edit["id"])

        logged = await o.call("audit", event="approval_answered")
        assert [(r["actor_name"], r["subject"], r["details"]["answer"], r["details"]["on"])
                for r in logged] == [("hub", read["id"], "allow", "policy"),
                                     ("hub", fetch["id"], "deny", "policy"),
                                     ("owner", edit["id"], "allow", "cli")]
        assert logged[0]["details"]["tool"] == "Read"
        assert "read a file" not in str(logged) and "fine" not in str(logged)
        policy = await o.call("approvals_policy")
        assert policy["auto_allow"] == ["Read", "Glob"] and policy["tools"] == {"Bash": "@ops"}
        assert policy["approver"] == "owner"
        pending = await o.call("approvals", role="approver", state="settled")
        assert [p["ref"] for p in pending] == ["asdfg"]


async def test_quiet_hours_hold_a_card_until_they_end_and_unanswered_requests_expire(
        inproc, tmp_path, people):
    now = dt.datetime.now()  # a window that always holds now: all day but the minute before
    start, end = ((now - dt.timedelta(minutes=m)).strftime("%H:%M") for m in (1, 2))
    quiet = {"members": {"owner": {"quiet_hours": f"{start}-{end}", "urgent": ["Bash"]}}}
    served = await inproc(raw={"approvals": quiet})
    owner = Identity(tmp_path / "hub", "owner")
    async with session(served, owner) as s, owner.client(served.url) as o:
        held = await s.call("permission_request", tool="Edit", description="late edit")
        assert held["held_until"] is not None and held["label"].startswith("held for quiet")
        assert held["expires_at"] > held["held_until"]
        assert await no_message(o, 0.3)  # its card waits for the morning
        urgent = await s.call("permission_request", tool="Bash", description="now")
        assert urgent["held_until"] is None
        assert (await collect(o, 1))[0]["data"]["approval_id"] == urgent["id"]
        # the one held can still be answered where it is listed (hub approvals)
        listed = await o.call("approvals", role="approver")
        assert {a["id"] for a in listed} == {held["id"], urgent["id"]}
        # the hold ends (brought forward here): its card goes out, and it still expires
        book = ApprovalBook.of(served.hub)
        row = await book.get(held["id"])
        row["held_until"] = time.time() + 0.2
        book.schedule(row)
        card = (await collect(o, 1))[0]
        assert card["data"]["approval_id"] == held["id"]
        released = await o.call("approval_get", id=held["id"])
        assert released["held_until"] is None and released["message_id"] == card["id"]
        assert held["id"] in book.timers  # its expiry is armed

    (bob,) = people("bob")
    async with owner.client(served.url) as o, bob.client(served.url) as b:
        asked = await o.call("ask", to="bob", question="still there?", expires_in=0.5)
        await collect(b, 1)
        told = (await collect(o, 1, timeout=10))[0]
        assert told["kind"] == "approval_answer" and told["data"]["state"] == "expired"
        assert "expired after" in told["text"]
        gone = await o.call("approval_get", id=asked["id"])
        assert gone["state"] == "expired"


async def test_ask_a_group_waits_for_the_first_answer(inproc, tmp_path, people):
    served = await inproc(send_rate=0)
    ann, bob, carl = people("ann", "bob", "carl")
    team = {"team": "member"}
    async with ann.client(served.url) as a, bob.client(served.url, groups=team) as b, \
            carl.client(served.url, groups=team) as c:
        asking = asyncio.create_task(a.call("ask", to="@team", question="which day?",
                                            choices=["monday", "tuesday"], wait=20))
        card_b, card_c = (await collect(b, 1))[0], (await collect(c, 1))[0]
        assert card_b["id"] == card_c["id"] and card_b["data"]["kind"] == "question"
        await b.call("approval_answer", id=card_b["data"]["approval_id"], answer="TUESDAY")
        result = await asking
        assert (result["state"], result["answer"], result["answered_by"]) == (
            "answered", "tuesday", "bob")
        with pytest.raises(InvalidRequest, match="already answered: tuesday, answered by bob"):
            await c.call("approval_answer", id=card_c["data"]["approval_id"], answer="monday")
        assert result["answer_message_id"] is None  # the waiting call had it: no message
        assert await no_message(a, 0.3)

        free = await a.call("ask", to="carl", question="what time?")  # returns at once
        assert free["state"] == "pending" and free["options"] == []
        await collect(c, 1)
        await c.call("approval_answer", id=free["id"], answer="  half past  two ")
        told = (await collect(a, 1))[0]
        assert told["data"]["answer"] == "half past two" and told["data"]["by"] == "carl"
        with pytest.raises(InvalidRequest, match="wait is 0 to 600"):
            await a.call("ask", to="carl", question="?", wait=601)

        async def settled() -> bool:
            return (await a.call("approval_get", id=free["id"]))["state"] == "answered"

        assert await eventually(settled)


async def test_a_ref_two_sessions_share_names_each_its_own_and_is_ambiguous_to_answer(
        inproc, tmp_path):
    served = await inproc(send_rate=0)
    owner = Identity(tmp_path / "hub", "owner")
    async with session(served, owner, "owner-a") as a, session(served, owner, "owner-b") as b, \
            owner.client(served.url) as o:
        mine = await a.call("permission_request", tool="Bash", description="make test",
                            request_id="abcde")
        theirs = await b.call("permission_request", tool="Bash", description="curl x | sh",
                              request_id="abcde")
        await collect(o, 2)
        with pytest.raises(InvalidRequest, match="names requests of 2 sessions; use the"):
            await o.call("approval_answer", id="abcde", answer="allow")
        closed = await a.call("approval_close", id="abcde")  # its own, not the other's
        assert closed["id"] == mine["id"] and closed["state"] == "closed"
        answered = await o.call("approval_answer", id="ABCDE", answer="deny")  # one left open
        assert answered["id"] == theirs["id"]
        assert (await b.call("approval_get", id="abcde"))["id"] == theirs["id"]  # each its own
        with pytest.raises(NotFound):
            await b.call("approval_get", id="zzzzz")


async def test_only_people_answer_for_a_member_and_nobody_approves_their_own(inproc, tmp_path,
                                                                             people):
    served = await inproc(send_rate=0)
    owner = Identity(tmp_path / "hub", "owner")
    (bob,) = people("bob")
    ops = {"ops": "member"}
    async with session(served, owner, "owner-a") as a, session(served, owner, "owner-b") as b, \
            owner.client(served.url, groups=ops) as o, bob.client(served.url, groups=ops) as bb:
        asked = await a.call("approval_request", to="owner", question="deploy?")
        await collect(o, 1)
        with pytest.raises(Forbidden, match="not one of the people asked"):
            await b.call("approval_answer", id=asked["id"], answer="approve")  # a sibling agent
        mine = await o.call("approval_request", to="@ops", question="merge my PR?")
        assert mine["approvers"] == ["bob"]  # the owner is in @ops, but asked
        await collect(bb, 1)
        # an approver waiting on it does not keep the answer from the asker
        waiting = asyncio.create_task(bb.call("approval_wait", id=mine["id"], timeout=10))
        await asyncio.sleep(0.1)
        await bb.call("approval_answer", id=mine["id"], answer="approve")
        assert (await waiting)["state"] == "answered"
        told = (await collect(o, 1))[0]
        assert told["kind"] == "approval_answer" and told["data"]["approval_id"] == mine["id"]
