"""Telegram approval cards stay true wherever the request is settled (the
``meshhub_card_settled`` hook): answered from another surface, the card shows how and loses
its buttons; a later tap changes nothing; a paired person who may not answer is told why; a
free-text question is answered by replying to its card."""

from __future__ import annotations

import html
import logging

from .fakes.telegram_api import TgUser
from .helpers import collect, eventually, make_identity, no_message
from .telegram_support import paired_name

ANN = TgUser(5101, "Ann", "Smith")
DAVE = TgUser(5104, "Dave")


async def _card(tg, text: str) -> dict:
    return await tg.wait_for("sendMessage", lambda m: text in m["text"])


async def test_a_settled_request_edits_its_card_and_drops_the_buttons(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    ann = paired_name(await served.pair(ANN))
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        request = await c.call("approval_request", to=ann, question="deploy <1.4>?")
        card = await _card(tg, "deploy")
        assert card["reply_markup"]["inline_keyboard"]
        # settled elsewhere, through the core (the asker cancels it): the hook edits the card
        await c.call("approval_close", id=request["id"], why="cancelled")
        edited = await tg.wait_for("editMessageText")
    assert (edited["chat_id"], edited["message_id"]) == (ANN.id, card["result"]["message_id"])
    assert "deploy &lt;1.4&gt;?" in edited["text"]
    assert edited["text"].endswith("<i>cancelled by carl</i>")
    assert "reply_markup" not in edited


async def test_a_card_that_cannot_be_edited_is_logged_not_raised(tg_hub, tmp_path, caplog):
    served = await tg_hub()
    tg = served.tg
    ann = paired_name(await served.pair(ANN))
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        request = await c.call("approval_request", to=ann, question="restart the db?")
        await _card(tg, "restart the db?")
    message = await served.hub.store.get_message(request["message_id"])
    tg.fail_next("editMessageText", 400, "Bad Request: message to edit not found")

    async def logged() -> bool:
        return any("was not updated" in r.getMessage() and "not found" in r.getMessage()
                   for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="meshhub_telegram"):
        served.connector.card_settled("expired after 10 min", message)
        assert await eventually(logged)
    assert not tg.of("editMessageText")


async def test_answered_elsewhere_the_card_says_so_and_a_later_tap_changes_nothing(
        tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN, new_person=False)  # Ann is the owner, on Telegram
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        request = await c.call("approval_request", to="owner", question="ship 2.0?")
        card = await _card(tg, "ship 2.0?")
        keyboard = card["reply_markup"]["inline_keyboard"][0]
        async with served.owner.client(served.url, receive=False) as owner:
            view = await owner.call("approval_answer", id=request["id"], answer="approve")
        edited = await tg.wait_for("editMessageText")
        assert (edited["chat_id"], edited["message_id"]) == (ANN.id, card["result"]["message_id"])
        assert edited["text"].endswith(f"<i>{html.escape(view['label'], quote=False)}</i>")
        assert "reply_markup" not in edited
        assert (await collect(c, 1))[0]["kind"] == "approval_answer"

        await tg.press(ANN, card["result"], keyboard[1]["callback_data"])
        flash = await tg.wait_for("answerCallbackQuery")
        assert flash["text"] == f"Already answered: {view['label']}"
        got = await c.call("approval_get", id=request["id"])
        assert (got["answer"], got["label"]) == ("approve", view["label"])
        assert await no_message(c, 0.3)
    assert len(tg.of("editMessageText")) == 1


async def test_a_paired_person_who_may_not_answer_is_told_why(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    ann = paired_name(await served.pair(ANN, new_person=False))
    await served.pair(DAVE)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        request = await c.call("approval_request", to=ann, question="drop the table?")
        card = await _card(tg, "drop the table?")
        token = card["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        await tg.press(DAVE, card["result"], token)  # the same button, another person
        flash = await tg.wait_for("answerCallbackQuery")
        assert flash["text"] == "you are not one of the people asked to answer this request"
        assert (await c.call("approval_get", id=request["id"]))["state"] == "pending"
        assert await no_message(c, 0.3)
    assert not tg.of("editMessageText")


async def test_a_reply_to_a_question_card_answers_it(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    ann = paired_name(await served.pair(ANN))
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        asked = await c.call("ask", to=ann, question="which branch?")
        card = await _card(tg, "which branch?")
        assert "reply_markup" not in card  # any text answers it: no buttons
        await tg.send_text(ANN, "release/2.0", reply_to=card["result"]["message_id"])
        await tg.wait_for("sendMessage", lambda m: m["text"] == "Answered.")
        got = await c.call("approval_get", id=asked["id"])
        assert (got["state"], got["answer"]) == ("answered", "release/2.0")
        edited = await tg.wait_for("editMessageText")
        assert html.escape(got["label"], quote=False) in edited["text"]


async def test_a_tool_permission_card_is_answered_by_its_ref(tg_hub):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN, new_person=False)
    async with served.owner.client(served.url) as session:
        asked = await session.call("permission_request", tool="Bash", description="rm -rf build",
                                   request_id="tbxkq")
        card = await _card(tg, "rm -rf build")
        assert "asks to run Bash" in card["text"]
        await tg.send_text(ANN, "/approve TBXKQ fine")
        await tg.wait_for("sendMessage", lambda m: "Answered" in m["text"] and "allow" in m["text"])
        got = await session.call("approval_get", id="tbxkq")
        assert (got["id"], got["answer"], got["reason"]) == (asked["id"], "allow", "fine")
        assert "reply_markup" not in await tg.wait_for("editMessageText")


async def test_a_card_posted_after_its_request_was_settled_comes_without_buttons(tg_hub,
                                                                                  tmp_path):
    served = await tg_hub()
    tg = served.tg
    ann = paired_name(await served.pair(ANN))
    dave = paired_name(await served.pair(DAVE))
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        request = await c.call("approval_request", to=ann, question="merge it?")
        await _card(tg, "merge it?")
        await c.call("approval_close", id=request["id"], why="cancelled")
        # the same card reaching a chat only now (it was offline): no live buttons on it
        hub = served.hub
        message = await hub.store.get_message(request["message_id"])
        assert await served.connector.deliver(hub, hub.directory.find(dave), message)
    late = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == DAVE.id
                             and "merge it?" in m["text"])
    assert "reply_markup" not in late and late["text"].endswith("<i>cancelled by carl</i>")


async def test_approve_and_deny_only_stand_for_a_yes_or_no(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    ann = paired_name(await served.pair(ANN))
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        asked = await c.call("ask", to=ann, question="which colour?",
                             choices=["red", "green", "blue"])
        await _card(tg, "which colour?")
        await tg.send_text(ANN, f"/deny {asked['id']}")
        refused = await tg.wait_for("sendMessage", lambda m: "answer one of" in m["text"])
        assert "red, green, blue" in refused["text"]
        assert (await c.call("approval_get", id=asked["id"]))["state"] == "pending"
