"""The Telegram connector end to end: the real python-telegram-bot against the fake Bot API
(tests/fakes/telegram_api.py), an in-process hub served on 127.0.0.1, real mesh clients."""

from __future__ import annotations

import asyncio

import pytest

from .fakes.telegram_api import TgUser
from .helpers import collect, eventually, make_identity, no_message
from .telegram_support import state_of

ANN = TgUser(5001, "Ann", "Smith", username="ann_s")


async def _delivered(client, message_id):
    return await state_of(client, message_id) == "delivered"


async def test_an_unpaired_user_is_refused_and_nothing_is_routed(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await tg.send_text(ANN, "hello mesh")
        reply = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == ANN.id)
        assert "/pair" in reply["text"] and "hub pair telegram" in reply["text"]
        assert await no_message(c, 0.3)
        await tg.send_text(ANN, "/pair WRONG-CODE")
        refused = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == ANN.id, count=2)
        assert "wrong, used or expired" in refused["text"]
        peers = {p["name"] for p in await c.peers()}
        assert not any(name.startswith("Ann") for name in peers)


async def test_pair_then_dm_a_peer_both_ways_and_reply_in_a_thread(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    peers = {p.name: served.hub.peer_view(p) for p in served.hub.directory.peers.values()}
    assert "Ann-Smith" in peers and peers["Ann-Smith"]["kind"] == "human"
    assert peers["Ann-Smith"]["connector"] == "telegram"

    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        # @name text: a DM, and carl becomes Ann's current target
        await tg.send_text(ANN, "@carl hi carl, *can* you <review> PR #12 & merge?")
        got = (await collect(c, 1))[0]
        assert got["text"] == "hi carl, *can* you <review> PR #12 & merge?"
        assert got["from"] == "Ann-Smith" and got["conversation"] == "dm"
        # plain text now goes to carl too
        await tg.send_text(ANN, "second line")
        assert (await collect(c, 1))[0]["text"] == "second line"

        # carl answers; it reaches Ann's chat, escaped and formatted
        sent = await c.send("Ann-Smith", "sure: **done** <b>not html</b> & `x<y`")
        out = await tg.wait_for("sendMessage",
                                lambda m: m["chat_id"] == ANN.id and "sure" in m["text"])
        assert out["parse_mode"] == "HTML"
        assert "<b>carl</b>" in out["text"]
        assert "<b>done</b>" in out["text"]
        assert "&lt;b&gt;not html&lt;/b&gt; &amp; <code>x&lt;y</code>" in out["text"]
        assert await eventually(lambda: _delivered(c, sent["id"]))

        # Ann replies to the relayed message: it lands in that thread
        relayed_id = out["result"]["message_id"]
        await tg.send_text(ANN, "replying in the thread", reply_to=relayed_id)
        reply = (await collect(c, 1))[0]
        assert reply["reply_to"] == sent["id"]
        assert reply["text"] == "replying in the thread"

        # carl's reply in the thread arrives as a Telegram reply to the relayed message
        await c.send(None, "thread answer", reply_to=sent["id"])
        threaded = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == ANN.id
                                     and "thread answer" in m["text"])
        assert threaded["reply_parameters"]["message_id"] == relayed_id


async def test_commands_are_served_from_the_actions(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await tg.send_text(ANN, "/peers")
        listing = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == ANN.id
                                    and "Peers" in m["text"])
        assert "<code>carl</code>" in listing["text"]
        ann = {p["name"]: p for p in await c.peers()}["Ann-Smith"]
        assert (ann["online"], ann["reach"]) == (False, "connector")  # the bot hands it over
        await c.send("Ann-Smith", "unread one")
        await tg.wait_for("sendMessage", lambda m: "unread one" in m["text"])
        await tg.send_text(ANN, "/inbox")
        inbox = await tg.wait_for("sendMessage", lambda m: m["chat_id"] == ANN.id
                                  and "Unread" in m["text"])
        assert "unread one" in inbox["text"]
        await tg.send_text(ANN, "/join #general")
        await tg.wait_for("sendMessage", lambda m: "Joined" in m["text"])
        await tg.send_text(ANN, "to everyone")
        got = (await collect(c, 1))[0]
        assert got["conversation"] == "#general" and got["text"] == "to everyone"
        await tg.send_text(ANN, "/status dnd")
        status = await tg.wait_for("sendMessage", lambda m: "status" in m["text"]
                                   and "dnd" in m["text"])
        assert "Ann-Smith" in status["text"]
        await tg.send_text(ANN, "/help")
        await tg.wait_for("sendMessage", lambda m: "/approvals" in m["text"])
        await tg.send_text(ANN, "/nonsense")
        await tg.wait_for("sendMessage", lambda m: "Unknown command /nonsense" in m["text"])


async def test_long_texts_are_split_under_the_limit_and_arrive_once(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    para = "word & <tag> " * 50 + "\n"
    async with carl.client(served.url) as c:
        sent = await c.send("Ann-Smith", para * 20)  # ~13 000 visible characters
        await tg.wait_for("sendMessage", lambda m: m["chat_id"] == ANN.id
                          and "word" in m["text"], count=4)
        assert await eventually(lambda: _delivered(c, sent["id"]))
    parts = [m for m in tg.of("sendMessage") if m["chat_id"] == ANN.id and "word" in m["text"]]
    assert len(parts) == 4  # every part passed the fake's HTML and length checks


async def test_edits_and_duplicate_updates_are_not_relayed_twice(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        original = await tg.send_text(ANN, "@carl first version")
        assert (await collect(c, 1))[0]["text"] == "first version"
        # the same Telegram message again (a replay): the client_id makes it a no-op
        await tg.push(message=original)
        await tg.edit_text(original, "@carl second version")
        edited = (await collect(c, 1))[0]
        assert edited["text"] == "(edited) @carl second version"
        assert await no_message(c, 0.3)


async def test_a_revoked_pairing_is_refused_again(tg_hub, tmp_path):
    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    async with served.owner.client(served.url, receive=False) as owner:
        listed = await owner.call("pairings", connector="telegram")
        assert [p["identity"] for p in listed] == [f"telegram:{ANN.id}"]
        await owner.call("pair_revoke", who="Ann-Smith")
        sent = await owner.send("Ann-Smith", "are you there?")
        await tg.send_text(ANN, "still here")
        await tg.wait_for("sendMessage", lambda m: m["chat_id"] == ANN.id
                          and "/pair CODE" in m["text"])
        assert not [m for m in tg.of("sendMessage") if "are you there" in m["text"]]
        for _ in range(100):  # the connector records the refusal in the background
            status = await owner.message_status(sent["id"])
            if status["recipients"][0]["state"] == "dead":
                break
            await asyncio.sleep(0.05)
        assert status["recipients"][0]["state"] == "dead"
        assert "revoked" in status["recipients"][0]["reason"]
        joined = await owner.call("audit", event="member_joined", actor="Ann-Smith")
        assert [(r["subject"], r["details"]["via"]) for r in joined] == [
            ("Ann-Smith", "telegram")]
        [removed] = await owner.call("audit", event="member_removed")
        assert (removed["actor_name"], removed["subject"], removed["details"]["via"]) == (
            "owner", "Ann-Smith", "telegram")


@pytest.mark.parametrize("kind", ["document", "photo"])
async def test_files_both_ways(tg_hub, tmp_path, kind):
    import base64

    served = await tg_hub()
    tg = served.tg
    await served.pair(ANN)
    carl = make_identity(tmp_path, "carl")
    payload = b"\x89PNG fake image bytes" * 10
    async with carl.client(served.url) as c:
        await tg.send_text(ANN, "@carl")  # make carl the target
        await tg.wait_for("sendMessage", lambda m: "Now talking to" in m["text"])
        if kind == "document":
            await tg.send_document(ANN, payload, "../../etc/report.pdf", caption="the report")
        else:
            await tg.send_photo(ANN, payload, caption="a photo")
        got = (await collect(c, 1))[0]
        attachment = got["attachments"][0]
        assert attachment["size"] == len(payload)
        if kind == "document":
            assert attachment["name"] == "report.pdf" and got["text"] == "the report"
        fetched = await c.call("file_get", id=attachment["file"])
        assert base64.b64decode(fetched["content"]) == payload

        # and a mesh attachment goes to Telegram as a document
        await c.call("file_put", content=base64.b64encode(b"log line\n").decode(),
                     name="build.log", to="Ann-Smith", text="the log")
        doc = await tg.wait_for("sendDocument", lambda m: m["chat_id"] == ANN.id)
        assert doc["uploads"]["document"] == b"log line\n"
        assert doc["document"]["filename"] == "build.log"


async def test_connector_is_idle_without_a_token(tmp_path):
    from meshhub.config import init_home, load_config
    from meshhub.hub import Hub
    from meshhub.server import serve

    home = tmp_path / "idle"
    init_home(home, "owner")
    hub = Hub(load_config(home))
    runner, _port = await serve(hub, "127.0.0.1", 0)
    try:
        record = hub.plugins.records["telegram"]
        assert record.status == "active", record.error
        assert hub.connectors["telegram"].state == "idle"
        assert hub.connectors["telegram"].for_hub(hub) is None
    finally:
        await runner.cleanup()
