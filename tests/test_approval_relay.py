"""One tap on a phone answers Claude Code: a raw JSON-RPC client plays Claude Code against a
real `hub mcp` and a real hub (in process) whose Telegram connector talks to the fake Bot API,
where python-telegram-bot's updates play the member's phone and another person's."""

from __future__ import annotations

import asyncio

from .fakes.telegram_api import TgUser
from .telegram_support import paired_name
from .test_mcp_permission import PERMISSION_METHOD, claude_session, hook, until

PHONE = TgUser(7301, "Olive", "Owner")
CARL = TgUser(7302, "Carl", "Client")


async def flash_of(tg, query_id: str) -> str:
    answered = await tg.wait_for("answerCallbackQuery",
                                 lambda c: c["callback_query_id"] == query_id)
    return str(answered.get("text", ""))


async def card_for(tg, user: TgUser, text: str) -> dict:
    return await tg.wait_for("sendMessage", lambda m: m["chat_id"] == user.id and text in m["text"])


async def edit_of(tg, card: dict) -> dict:
    return await tg.wait_for("editMessageText",
                             lambda m: m["message_id"] == card["result"]["message_id"])


async def test_a_tap_on_the_members_phone_answers_claude_code_and_every_card_follows(tg_hub):
    served = await tg_hub()
    tg, owner = served.tg, served.owner
    linked = await served.pair(PHONE, new_person=False)  # the owner links its own phone
    assert paired_name(linked) == "owner-telegram"
    carl = paired_name(await served.pair(CARL))  # someone else, a person of their own
    async with owner.client(served.url, receive=False) as o:
        mine = await o.call("surfaces")
        assert [(s["name"], s["type"]) for s in mine["surfaces"]] == [
            ("owner", "session"), ("owner-telegram", "linked")]
        assert [m["name"] for m in await o.call("members_list")] == ["owner"]

    async with claude_session(owner, served.url, "owner-work") as claude:
        await claude.prompt("tbxkq", "Bash", "List the build directory", "ls -la build")
        card = await card_for(tg, PHONE, "/approve tbxkq")
        assert "owner-work asks to run Bash" in card["text"] and "ls -la build" in card["text"]
        allow, deny = card["reply_markup"]["inline_keyboard"][0]
        assert (allow["text"], deny["text"]) == ("Allow", "Deny")

        # Carl is paired but not an approver: his press changes nothing, and he is told why
        pressed = await tg.press(CARL, card["result"], allow["callback_data"])
        assert "not one of the people asked" in await flash_of(tg, pressed)
        assert claude.verdicts() == []

        pressed = await tg.press(PHONE, card["result"], allow["callback_data"])
        verdict = await claude.notification(PERMISSION_METHOD,
                                            lambda p: p["request_id"] == "tbxkq")
        assert verdict == {"request_id": "tbxkq", "behavior": "allow"}
        assert await flash_of(tg, pressed) == "Answered: allow"
        edited = await edit_of(tg, card)
        assert "allow, answered by owner-telegram on telegram" in edited["text"]
        assert "reply_markup" not in edited  # the buttons are gone
        async with owner.client(served.url, receive=False) as o:  # what the web page lists
            settled = await o.call("approvals", role="approver", state="settled")
            assert [(a["ref"], a["label"]) for a in settled] == [
                ("tbxkq", "allow, answered by owner-telegram on telegram")]

        # the terminal answers first: the hook closes the card, a later tap changes nothing
        await claude.prompt("qwert", "Write", "Write notes.md")
        card = await card_for(tg, PHONE, "/approve qwert")
        hook(owner, "owner-work", "post-tool-use", tool_name="Write")
        edited = await edit_of(tg, card)
        assert "answered at the terminal" in edited["text"] and "reply_markup" not in edited
        allow = card["reply_markup"]["inline_keyboard"][0][0]
        pressed = await tg.press(PHONE, card["result"], allow["callback_data"])
        assert (await flash_of(tg, pressed)).startswith(
            "Already answered: answered at the terminal")

        # mesh_ask from the session to a person on Telegram: the tap is the tool's result
        asking = asyncio.create_task(claude.tool(
            "mesh_ask", to=carl, question="ship 1.4 on friday?", choices=["yes", "no"],
            wait=60))
        card = await card_for(tg, CARL, "ship 1.4 on friday?")
        yes = card["reply_markup"]["inline_keyboard"][0][0]
        assert yes["text"] == "Yes"
        await tg.press(CARL, card["result"], yes["callback_data"])
        asked = await asking
        assert (asked["result"]["state"], asked["result"]["answer"]) == ("answered", "yes")
        assert asked["result"]["answered_by"] == carl

        async def carl_card_edited() -> bool:
            return any(m["message_id"] == card["result"]["message_id"]
                       for m in tg.of("editMessageText"))

        assert await until(carl_card_edited)
        # after all of that: the prompt the terminal answered got no verdict from the phone
        assert [v["request_id"] for v in claude.verdicts()] == ["tbxkq"]
