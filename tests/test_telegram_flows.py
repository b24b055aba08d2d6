"""Telegram: reliability (429, 500, persisted offset), approval buttons, linked groups, the
webhook, and a real ``hub start`` process configured by environment variables."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from .fakes.telegram_api import FakeTelegram, TgUser
from .helpers import Identity, collect, eventually, make_identity, no_message
from .telegram_support import state_of

ANN = TgUser(5001, "Ann", "Smith")
DAVE = TgUser(5004, "Dave")
GROUP = {"id": -100777, "type": "supergroup", "title": "Ops Room"}


async def test_429_then_500_still_delivers_exactly_once(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        tg.fail_next("sendMessage", 429, retry_after=1)
        tg.fail_next("sendMessage", 500)
        sent = await c.send("Ann-Smith", "through the storm")
        await tg.wait_for("sendMessage", lambda m: "through the storm" in m["text"], timeout=15)
        assert await eventually(lambda: _is(c, sent["id"], "delivered"))
    tries = [m for m in tg.calls if m["method"] == "sendMessage"
             and "through the storm" in m["text"]]
    assert [m.get("failed") for m in tries] == [429, 500, None]  # one success: exactly once
    assert tries[1]["at"] - tries[0]["at"] >= 1.0  # retry_after was honoured


async def test_a_refusal_makes_the_delivery_dead_with_the_reason(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        tg.fail_next("sendMessage", 403)
        sent = await c.send("Ann-Smith", "you blocked me")
        assert await eventually(lambda: _is(c, sent["id"], "dead"))
        status = await c.message_status(sent["id"])
        assert "blocked" in status["recipients"][0]["reason"]


async def test_the_offset_is_persisted_so_no_update_is_handled_twice(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await tg.send_text(ANN, "@carl once")
        assert (await collect(c, 1))[0]["text"] == "once"
    await served.runner.cleanup()
    served.runner = _Done()
    replies_before = len(tg.of("sendMessage"))
    tg.replay_all()  # Telegram never heard our confirmations: it offers everything again
    again = await tg_hub()
    async with carl.client(again.url) as c:
        await tg.send_text(ANN, "@carl after the restart")
        got = (await collect(c, 1))[0]
        assert got["text"] == "after the restart"  # not "once" again
        assert await no_message(c, 0.3)
    polls = [m for m in tg.of("getUpdates")]
    assert polls[-1]["offset"] > len(tg.history) - 1
    assert len(tg.of("sendMessage")) == replies_before  # no pairing reply sent twice


async def test_approval_buttons_answer_and_the_asker_is_told(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        request = await c.call("approval_request", to="Ann-Smith",
                               question="deploy <1.4> to prod?")
        shown = await tg.wait_for("sendMessage", lambda m: "deploy" in m["text"])
        assert "deploy &lt;1.4&gt; to prod?" in shown["text"]
        keyboard = shown["reply_markup"]["inline_keyboard"][0]
        assert [b["text"] for b in keyboard] == ["Approve", "Deny"]
        await tg.press(ANN, shown["result"], keyboard[0]["callback_data"])
        flash = await tg.wait_for("answerCallbackQuery")
        assert flash["text"] == "Answered: approve"
        told = (await collect(c, 1))[0]
        assert told["kind"] == "approval_answer"
        assert told["reply_to"] == request["message_id"]
        assert told["data"]["answer"] == "approve"
        edited = await tg.wait_for("editMessageText")
        listed = await c.call("approvals", state="all")
        assert listed[0]["state"] == "answered" and listed[0]["answer"] == "approve"
        assert listed[0]["answered_on"] == "telegram"
        assert listed[0]["label"] in edited["text"]
        assert "reply_markup" not in edited  # the buttons are gone
        # a second tap is answered politely and changes nothing
        await tg.press(ANN, shown["result"], keyboard[1]["callback_data"])
        second = await tg.wait_for("answerCallbackQuery", count=2)
        assert second["text"] == f"Already answered: {listed[0]['label']}"
        assert await no_message(c, 0.3)
    assert len(tg.of("editMessageText")) == 1  # the press answered; only the hook edited


async def test_a_linked_group_bridges_both_ways_without_echo(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await c.call("conversation_create", name="ops")
        await tg.send_text(DAVE, "/link #ops", chat=GROUP)  # not paired: refused
        await tg.wait_for("sendMessage", lambda m: m["chat_id"] == GROUP["id"]
                          and "/pair" in m["text"])
        await tg.send_text(ANN, "/link #ops", chat=GROUP)
        await tg.wait_for("sendMessage", lambda m: m["chat_id"] == GROUP["id"]
                          and "Linked" in m["text"])

        await tg.send_text(ANN, "hello from the group", chat=GROUP)
        got = (await collect(c, 1))[0]
        assert (got["conversation"], got["from"]) == ("#ops", "Ann-Smith")
        await tg.send_text(DAVE, "i am dave", chat=GROUP)
        got = (await collect(c, 1))[0]
        assert got["text"] == "**Dave**: i am dave" and got["from"] == "Ops-Room"

        sent = await c.send("#ops", "hi group")
        posted = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == GROUP["id"]
                                   and "hi group" in m["text"])
        assert "carl in #ops" in posted["text"]
        # the bot's own post coming back as an update, and a message by the bot's account
        await tg.push(message={**posted["result"], "chat": GROUP})
        await tg.send_text(tg.bot, "bot talking", chat=GROUP)
        # a reply in the group to the relayed message lands in its thread
        await tg.send_text(DAVE, "on it", chat=GROUP, reply_to=posted["result"]["message_id"])
        threaded = (await collect(c, 1))[0]
        assert threaded["reply_to"] == sent["id"] and threaded["text"] == "**Dave**: on it"
        assert await no_message(c, 0.3)
    group_posts = [m["text"] for m in tg.of("sendMessage") if m["chat_id"] == GROUP["id"]]
    assert not [t for t in group_posts if "hello from the group" in t or "dave" in t.lower()]
    assert len([t for t in group_posts if "hi group" in t]) == 1


async def test_webhook_mode_with_the_secret_header(tg_hub, tmp_path):
    served = await tg_hub(webhook=True)
    tg = served.tg
    assert tg.webhook is not None and tg.webhook["url"].endswith("/telegram/webhook")
    assert [c["method"] for c in tg.calls if c["method"] == "getUpdates"] == []
    await served.pair(ANN)  # the fake now POSTs every update to the hub
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await tg.send_text(ANN, "@carl via webhook")
        assert (await collect(c, 1))[0]["text"] == "via webhook"
        sent = await c.send("Ann-Smith", "back by API")
        await tg.wait_for("sendMessage", lambda m: "back by API" in m["text"])
        assert await eventually(lambda: _is(c, sent["id"], "delivered"))
        async with aiohttp.ClientSession() as http:
            update = tg.history[-1]
            async with http.post(tg.webhook["url"], json=update) as resp:
                assert resp.status == 401  # no secret
            headers = {"X-Telegram-Bot-Api-Secret-Token": "wrong"}
            async with http.post(tg.webhook["url"], json=update, headers=headers) as resp:
                assert resp.status == 401
            headers = {"X-Telegram-Bot-Api-Secret-Token": tg.webhook["secret_token"]}
            async with http.post(tg.webhook["url"], json=update, headers=headers) as resp:
                assert resp.status == 200 and (await resp.json())["duplicate"] is True
        assert await no_message(c, 0.3)
    assert all(status == 200 for _id, status in tg.webhook_posts)


async def test_a_real_hub_process_configured_by_environment(hub_factory, tmp_path):
    async with FakeTelegram() as tg:
        hub = await asyncio.to_thread(hub_factory, **tg.env())
        owner = Identity(hub.home, "owner")
        paired = json.loads((await asyncio.to_thread(owner.cli, hub.url, "pair", "telegram",
                                                     "--new-person", "--json")).stdout)
        assert paired["expires_in"] == 600 and paired["attempts"] == 5
        await tg.send_text(ANN, f"/pair {paired['code'].lower()}")
        await tg.wait_for("sendMessage", lambda m: "Paired" in m["text"], timeout=20)
        carl = make_identity(tmp_path, "carl")
        async with carl.client(hub.url) as c:
            await tg.send_text(ANN, "@carl from a real process")
            assert (await collect(c, 1))[0]["text"] == "from a real process"
            await c.send("Ann-Smith", "and back")
            await tg.wait_for("sendMessage", lambda m: "and back" in m["text"])
        await asyncio.to_thread(hub.stop)


async def _is(client, message_id, state):
    return await state_of(client, message_id) == state


class _Done:
    async def cleanup(self) -> None:
        return None


async def test_an_update_that_fails_midway_is_offered_again_not_lost(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await tg.send_text(ANN, "@carl")
        await tg.wait_for("sendMessage", lambda m: "Now talking to" in m["text"])
        tg.fail_next("download", 502)  # the file download breaks once: the update is not taken
        await tg.send_document(ANN, b"quarterly numbers", "numbers.csv", caption="numbers")
        got = await collect(c, 1, timeout=15)
        assert got[0]["text"] == "numbers"
        assert got[0]["attachments"][0]["size"] == len(b"quarterly numbers")
        assert await no_message(c, 1.0)  # once, not twice
