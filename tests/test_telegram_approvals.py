"""Telegram approval cards stay true wherever the request is settled: answered from another
surface, the card shows how and loses its buttons; a later tap changes nothing; a paired person
who may not answer is told why; a free-text question is answered by replying to its card."""

from __future__ import annotations

import logging

from .fakes.telegram_api import TgUser
from .helpers import eventually, make_identity
from .telegram_support import paired_name

ANN = TgUser(5101, "Ann", "Smith")


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
        message = await served.hub.store.get_message(request["message_id"])
        served.connector.approval_settled({"label": "approve, answered by ann on web"}, message)
        edited = await tg.wait_for("editMessageText")
    assert (edited["chat_id"], edited["message_id"]) == (ANN.id, card["result"]["message_id"])
    assert "deploy &lt;1.4&gt;?" in edited["text"]
    assert edited["text"].endswith("<i>approve, answered by ann on web</i>")
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
        served.connector.approval_settled({"label": "expired after 10 min"}, message)
        assert await eventually(logged)
    assert not tg.of("editMessageText")
