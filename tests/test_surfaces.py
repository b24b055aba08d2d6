"""One person, several surfaces: a member links its own Telegram account with `hub pair
telegram`, is reached there by its choice (`hub surfaces`), and answers from it as itself. Over
an in-process hub whose Telegram connector talks to the fake Bot API."""

from __future__ import annotations

import asyncio

import pytest

from meshhub.errors import Forbidden, NotFound

from .fakes.telegram_api import TgUser
from .helpers import collect

PHONE = TgUser(7001, "Olive", "Owner")


async def link_phone(served, owner) -> dict:
    made = await owner.call("pair_create", connector="telegram")
    assert made["links_to"] == "owner"
    await served.tg.send_text(PHONE, f"/pair {made['code']}")
    return await served.tg.wait_for(
        "sendMessage", lambda m: m["chat_id"] == PHONE.id and "Paired" in m["text"])


async def test_a_member_links_its_own_phone_and_it_is_a_surface_not_a_person(tg_hub):
    served = await tg_hub()
    async with served.owner.client(served.url, receive=False) as owner:
        members_before = await owner.call("members_list")
        reply = await link_phone(served, owner)
        assert "linked to <b>owner</b>" in reply["text"] and "owner-telegram" in reply["text"]
        mine = await owner.call("surfaces")
        assert mine["member"] == "owner" and mine["reach"] == "auto"
        linked = [s for s in mine["surfaces"] if s["type"] == "linked"]
        assert [(s["name"], s["connector"], s["on"]) for s in linked] == [
            ("owner-telegram", "telegram", True)]
        members = await owner.call("members_list")
        assert [m["name"] for m in members] == [m["name"] for m in members_before]  # nobody new
        assert members[0]["peers"] == ["owner", "owner-telegram"]
        peers = {p["name"]: p for p in await owner.call("peers")}
        assert peers["owner-telegram"]["member_key"] == peers["owner"]["member_key"]
        paired = await owner.call("pairings")
        assert [(p["identity"], p["member"]) for p in paired] == [
            (f"telegram:{PHONE.id}", "owner")]
        # the phone speaks as the member: what it sends comes from one of the member's surfaces
        await served.tg.send_text(PHONE, "/status")
        status = await served.tg.wait_for(
            "sendMessage", lambda m: m["chat_id"] == PHONE.id and "You are" in m["text"])
        assert "owner-telegram" in status["text"]
        # a chat surface of the owner does not hold the owner's powers, nor links more accounts
        with pytest.raises(Forbidden, match="the hub's owner"):
            await _as_phone(served, "pair_create", connector="telegram", new_person=True)
        with pytest.raises(Forbidden, match="chat surfaces cannot"):
            await _as_phone(served, "pair_create", connector="telegram")
        with pytest.raises(Forbidden, match="owner only"):
            await _as_phone(served, "pairings")


async def _as_phone(served, action: str, **params):
    from meshhub.actions import ActionContext

    hub = served.hub
    peer = hub.directory.find("owner-telegram")
    ctx = ActionContext(hub=hub, peer=peer, surface="telegram")
    return await hub.actions.call(ctx, action, params)


async def test_messages_to_the_member_reach_the_phone_while_no_terminal_is_live(tg_hub, people):
    served = await tg_hub()
    (bob,) = people("bob")
    tg = served.tg
    async with served.owner.client(served.url, receive=False) as owner:
        await link_phone(served, owner)
    async with bob.client(served.url) as b:
        sent = await b.send("owner", "are you there?")
        assert sorted(sent["recipients"]) == ["owner", "owner-telegram"]
        await tg.wait_for("sendMessage", lambda m: "are you there?" in m["text"])
        async with served.owner.client(served.url) as live:  # the member's terminal is live
            sent = await b.send("owner", "at your desk?")
            assert sent["recipients"] == ["owner"]
            assert (await collect(live, 2))[-1]["text"] == "at your desk?"
            await live.call("surfaces_set", reach="always")
            sent = await b.send("owner", "everywhere")
            assert sorted(sent["recipients"]) == ["owner", "owner-telegram"]
            await live.call("surfaces_set", surface="owner-telegram", on=False)
            assert (await b.send("owner", "not the phone"))["recipients"] == ["owner"]
            await live.call("surfaces_set", surface="owner-telegram", on=True)
            await live.call("surfaces_set", reach="never")
        assert (await b.send("owner", "terminal only"))["recipients"] == ["owner"]
        with pytest.raises(NotFound, match="not a chat account you linked"):
            await _call(served, "surfaces_set", surface="bob", on=False)
        # the phone's own name always reaches it
        assert (await b.send("owner-telegram", "direct"))["recipients"] == ["owner-telegram"]
        await tg.wait_for("sendMessage", lambda m: "direct" in m["text"])
    texts = [m["text"] for m in tg.of("sendMessage") if m["chat_id"] == PHONE.id]
    assert not any("at your desk?" in t or "not the phone" in t or "terminal only" in t
                   for t in texts)
    assert any("everywhere" in t for t in texts)


async def _call(served, action: str, **params):
    async with served.owner.client(served.url, receive=False) as owner:
        return await owner.call(action, **params)


async def test_revoking_the_phone_stops_it_speaking_for_the_member(tg_hub, people):
    served = await tg_hub()
    (bob,) = people("bob")
    async with served.owner.client(served.url, receive=False) as owner:
        await link_phone(served, owner)
        asked = None
        async with bob.client(served.url) as b:
            asked = await b.call("approval_request", to="owner", question="ok?")
        await owner.call("pair_revoke", who="owner-telegram")
        assert [s["type"] for s in (await owner.call("surfaces"))["surfaces"]] == ["session"]
        async with bob.client(served.url) as b:
            assert (await b.send("owner", "gone?"))["recipients"] == ["owner"]
        with pytest.raises(Forbidden, match="only owner may answer"):  # nobody's surface now
            await _as_phone(served, "approval_answer", id=asked["id"], answer="approve")


async def test_a_session_of_the_member_cannot_link_a_phone_or_change_its_reach(tg_hub):
    served = await tg_hub()
    session = served.owner.client(served.url, name="owner-proj", kind="agent", connector="mcp",
                                  session="owner-proj", member_name="owner", receive=False)
    async with session as s:
        with pytest.raises(Forbidden, match="agent sessions and chat surfaces cannot"):
            await s.call("pair_create", connector="telegram")
        with pytest.raises(Forbidden, match="agent session"):
            await s.call("surfaces_set", reach="always")


async def test_surfaces_and_approvals_from_a_terminal(tg_hub):
    served = await tg_hub()
    owner = served.owner
    async with owner.client(served.url, receive=False) as o:
        await link_phone(served, o)
    listed = await asyncio.to_thread(owner.cli, served.url, "surfaces")
    assert "owner-telegram" in listed.stdout and "reach: auto" in listed.stdout
    muted = await asyncio.to_thread(owner.cli, served.url, "surfaces", "off", "owner-telegram")
    assert "owner-telegram  telegram   linked" in " ".join(muted.stdout.split("\n"))
    assert "off" in muted.stdout.splitlines()[-1]
    wrong = await asyncio.to_thread(owner.cli, served.url, "surfaces", "set", "sometimes",
                                    check=False)
    assert wrong.returncode == 2
    session = owner.client(served.url, name="owner-proj", kind="agent", connector="mcp",
                           session="owner-proj", member_name="owner", receive=False)
    async with session as s:
        asked = await s.call("permission_request", tool="Bash", description="make deploy",
                             request_id="zxcvb")
        waiting = await asyncio.to_thread(owner.cli, served.url, "approvals")
        assert "zxcvb" in waiting.stdout and "Bash: make deploy" in waiting.stdout
        answered = await asyncio.to_thread(owner.cli, served.url, "approvals", "answer",
                                           "ZXCVB", "deny", "--reason", "not today")
        assert answered.stdout.startswith("deny, answered by owner on cli: make deploy")
        settled = await s.call("approval_wait", id=asked["id"], timeout=5)
        assert (settled["answer"], settled["reason"]) == ("deny", "not today")
    empty = await asyncio.to_thread(owner.cli, served.url, "approvals")
    assert empty.stdout.strip() == "nothing waits for your answer"
    policy = await asyncio.to_thread(owner.cli, served.url, "approvals", "policy")
    assert "approval policy of owner" in policy.stdout and "auto allow" in policy.stdout


async def test_the_owner_links_its_own_mail_address_too(email_hub):
    served = await email_hub()
    await served.pair("olive@example.com", "Olive", new_person=False)
    async with served.owner.client(served.url, receive=False) as owner:
        linked = [s for s in (await owner.call("surfaces"))["surfaces"] if s["type"] == "linked"]
        assert [(s["name"], s["connector"]) for s in linked] == [("owner-email", "email")]
        paired = await owner.call("pairings", connector="email")
        assert [(p["identity"], p["member"]) for p in paired] == [
            ("email:olive@example.com", "owner")]
