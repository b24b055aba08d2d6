"""Slack end to end: the real slack-bolt and slack-sdk in the hub against a fake Slack on
127.0.0.1 (tests/fakes/slack_api.py) with real request signatures, in Events API and Socket Mode:
linked channels and threads, reactions both ways, forged and replayed requests, approval
buttons, loop prevention beside Telegram, pairing, DMs and the slash command."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from meshhub_slack import adapter

from .fakes.slack_api import TEAM, SlackUser
from .fakes.slack_events import signed_headers
from .fakes.telegram_api import TgUser
from .helpers import collect, eventually, make_identity, no_message
from .test_mcp import mcp_params, stdio_session

ANN = SlackUser("UANN0001", "ann", real_name="Ann Lee", display_name="Ann Lee")
BEN = SlackUser("UBEN0002", "ben", real_name="Ben Ode")
OTHER_BOT = SlackUser("UOTHERBOT", "otherbot", is_bot=True, bot_id="BOTHER01")
GENERAL = "C0GENERAL"
MODES = ["events", "socket"]


async def _linked(slack_hub: Any, **settings: Any) -> Any:
    """A hub whose Slack channel GENERAL Ann (a member of it, let in) has linked to the mesh's
    #general."""
    served = await slack_hub(**settings)
    await served.link(ANN, GENERAL, "#general")
    return served


def _allow(*users: SlackUser) -> dict[str, Any]:
    return {"allow": ",".join(f"{TEAM}/{u.id}" for u in users)}


def _posts(slack: Any, channel: str, text: str | None = None) -> list[dict[str, Any]]:
    return [c for c in slack.of("chat.postMessage") if c["channel"] == channel
            and (text is None or text in json.dumps(c, ensure_ascii=False)) and not c.get("failed")]


@pytest.fixture(autouse=True)
def _people(slack: Any) -> None:
    for user in (ANN, BEN, OTHER_BOT):
        slack.add_user(user)
    slack.add_channel(GENERAL, "general")


@pytest.mark.parametrize("mode", MODES)
async def test_a_linked_channel_talks_to_the_mesh_and_threads_come_back(slack_hub, tmp_path,
                                                                        mode):
    served = await _linked(slack_hub, mode=mode, slack_settings=_allow(ANN))
    slack = served.slack
    carl = make_identity(tmp_path, "carl")
    async with served.in_general(carl) as c:
        event = slack.message(ANN, "the *build* is green, <@UBEN0002>", GENERAL)
        status, _ = await slack.send_event(event)
        assert status == 200
        got = (await collect(c, 1))[0]
        assert got["text"] == "the **build** is green, @Ben Ode"
        assert got["from"] == "Ann-Lee" and got["conversation"] == "#general"
        reply = await c.send("#general", "thanks, shipping it", reply_to=got["id"])
        posted = await slack.wait_for("chat.postMessage", lambda m: "shipping" in str(m))
        assert posted["channel"] == GENERAL and posted["thread_ts"] == event["ts"]
        assert posted["username"] == "carl (cli)"
        assert await eventually(lambda: _is(c, reply["id"], "delivered"))
        # Ann answers in the Slack thread: the mesh sees it in the same thread
        await slack.send_event(slack.message(ANN, "great", GENERAL, thread_ts=event["ts"]))
        threaded = (await collect(c, 1))[0]
        assert threaded["text"] == "great" and threaded["reply_to"] == got["id"]


async def test_reactions_go_both_ways(slack_hub, tmp_path):
    served = await _linked(slack_hub, slack_settings=_allow(ANN))
    slack = served.slack
    carl = make_identity(tmp_path, "carl")
    async with served.in_general(carl) as c:
        event = slack.message(ANN, "lunch?", GENERAL)
        await slack.send_event(event)
        got = (await collect(c, 1))[0]
        # a mesh peer reacts: the emoji appears on the Slack message
        await c.call("react", id=got["id"], emoji="👍")
        added = await slack.wait_for("reactions.add")
        assert (added["channel"], added["timestamp"], added["name"]) == (
            GENERAL, event["ts"], "thumbsup")
        # Ann reacts in Slack: the mesh sees her reaction on the same message
        sent = await c.send("#general", "at noon")
        posted = await slack.wait_for("chat.postMessage", lambda m: "at noon" in str(m))
        await slack.send_event(slack.reaction(ANN, "white_check_mark", GENERAL,
                                              posted["result"]["ts"]))
        notice = (await collect(c, 1))[0]
        assert notice["kind"] == "reaction" and notice["from"] == "Ann-Lee"
        seen = await c.call("reactions", ids=[sent["id"]])
        assert seen[sent["id"]] == {"✅": ["Ann-Lee"]}
        await slack.send_event(slack.reaction(ANN, "white_check_mark", GENERAL,
                                              posted["result"]["ts"], removed=True))
        assert await eventually(lambda: _no_reactions(c, sent["id"]))
        assert len(slack.of("reactions.add")) == 1  # Ann's own reaction is not mirrored back


async def test_forged_stale_and_replayed_events_change_nothing(slack_hub, tmp_path):
    served = await _linked(slack_hub, slack_settings=_allow(ANN))
    slack = served.slack
    carl = make_identity(tmp_path, "carl")
    async with served.in_general(carl) as c:
        forged = await slack.send_event(slack.message(ANN, "forged", GENERAL),
                                        secret="not-the-secret")
        unsigned = await slack.send_event(slack.message(ANN, "unsigned", GENERAL), sign=False)
        stale = await slack.send_event(slack.message(ANN, "stale", GENERAL),
                                       timestamp=int(time.time()) - 6 * 60)
        assert [forged[0], unsigned[0], stale[0]] == [401, 401, 401]
        assert await no_message(c, 0.5)
        event = slack.message(ANN, "once", GENERAL)
        assert (await slack.send_event(event, event_id="Ev0REPLAY1"))[0] == 200
        assert (await collect(c, 1))[0]["text"] == "once"
        again = await slack.send_event(event, event_id="Ev0REPLAY1", retry_num=1)
        assert again[0] == 200
        assert await no_message(c, 0.5)
    # and after a restart: the event id is remembered
    await served.stop()
    again_hub = await slack_hub(slack_settings=_allow(ANN))
    async with carl.client(again_hub.url) as c:
        assert (await slack.send_event(event, event_id="Ev0REPLAY1", retry_num=2))[0] == 200
        await slack.send_event(slack.message(ANN, "after the restart", GENERAL))
        got = await collect(c, 1)
        assert got[0]["text"] == "after the restart"


@pytest.mark.parametrize("mode", MODES)
async def test_an_approval_button_answers_and_the_asker_is_told(slack_hub, tmp_path, mode):
    served = await slack_hub(mode=mode, slack_settings=_allow(ANN))
    slack = served.slack
    status, me = await slack.send_command(ANN, "status", slack.open_dm([ANN.id])["id"])
    assert "Ann-Lee" in me  # admitted by the allow-list on first sight
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        request = await c.call("approval_request", to="Ann-Lee", question="deploy *1.4*?")
        card = await slack.wait_for("chat.postMessage", lambda m: "deploy" in str(m))
        buttons = [b for b in card["blocks"] if b["type"] == "actions"][0]["elements"]
        assert [b["text"]["text"] for b in buttons] == ["Approve", "Deny"]
        await slack.send_interaction(slack.block_action(
            ANN, card, buttons[0]["action_id"], buttons[0]["value"], card["channel"]))
        update = await slack.wait_for("chat.update")
        assert update["ts"] == card["result"]["ts"]
        assert not [b for b in update["blocks"] if b["type"] == "actions"]  # buttons gone
        answer = await collect(c, 1)
        assert answer[0]["kind"] == "approval_answer"
        assert answer and answer[0]["data"]["answer"] == "approve"
        got = await c.call("approval_get", id=request["id"])
        assert got["state"] == "answered" and got["answer"] == "approve"
        assert got["answered_on"] == "slack"
        assert got["label"] in json.dumps(update["blocks"])


async def test_an_expired_request_updates_its_card_and_a_late_press_is_told(slack_hub,
                                                                             tmp_path):
    served = await slack_hub(slack_settings=_allow(ANN))
    slack = served.slack
    dm = slack.open_dm([ANN.id])["id"]
    await slack.send_command(ANN, "status", dm)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        request = await c.call("approval_request", to="Ann-Lee", question="merge now?",
                               expires_in=1)
        card = await slack.wait_for("chat.postMessage", lambda m: "merge now?" in str(m))
        update = await slack.wait_for("chat.update")  # settled by its expiry, not a press
        got = await c.call("approval_get", id=request["id"])
        assert got["state"] == "expired" and got["label"].startswith("expired after")
        assert update["ts"] == card["result"]["ts"]
        assert got["label"] in json.dumps(update["blocks"])
        assert not [b for b in update["blocks"] if b["type"] == "actions"]
        button = [b for b in card["blocks"] if b["type"] == "actions"][0]["elements"][0]
        await slack.send_interaction(slack.block_action(
            ANN, card, button["action_id"], button["value"], card["channel"]))
        told = await slack.wait_for("chat.postEphemeral", lambda m: "Already" in m["text"])
        assert told["text"] == f"Already answered: {got['label']}"
    assert len(slack.of("chat.update")) == 1


async def test_no_loop_between_slack_and_a_telegram_group_on_one_conversation(
        slack_hub, telegram, tmp_path):
    tg_group = {"id": -100555, "type": "supergroup", "title": "Ops Room"}
    tg_ann = TgUser(7001, "Tina")
    # one hub bridges a Slack channel and a Telegram group to #general
    served = await _linked(slack_hub, slack_settings=_allow(ANN),
                           raw={"telegram": telegram.settings()})
    slack = served.slack
    tg_connector = served.hub.connectors["telegram"]
    await asyncio.wait_for(tg_connector.for_hub(served.hub).ready.wait(), 10)
    async with served.owner.client(served.url, receive=False) as owner:
        code = (await owner.call("pair_create", connector="telegram", new_person=True))["code"]
    await telegram.send_text(tg_ann, f"/pair {code}")
    await telegram.wait_for("sendMessage", lambda m: "Paired" in m["text"])
    await telegram.send_text(tg_ann, "/link #general", chat=tg_group)
    await telegram.wait_for("sendMessage", lambda m: "Linked" in m["text"])
    await slack.send_event(slack.message(ANN, "from slack", GENERAL))
    await telegram.wait_for("sendMessage", lambda m: "from slack" in m["text"])
    await telegram.send_text(tg_ann, "from telegram", chat=tg_group)
    posted = await slack.wait_for("chat.postMessage", lambda m: "from telegram" in str(m))
    assert posted["channel"] == GENERAL and posted["username"] == "Tina (telegram)"
    # another bot in the channel, and the app's own posts echoed by Slack: never relayed
    await slack.send_event(slack.message(OTHER_BOT, "beep from a bot", GENERAL))
    await asyncio.sleep(1.0)
    assert not [m for m in telegram.of("sendMessage") if "beep" in m["text"]]
    in_group = [m for m in telegram.of("sendMessage") if m["chat_id"] == tg_group["id"]]
    assert len([m for m in in_group if "from slack" in m["text"]]) == 1
    assert len([m for m in in_group if "from telegram" in m["text"]]) == 0
    assert len(_posts(slack, GENERAL, "from slack")) == 0
    assert len(_posts(slack, GENERAL, "from telegram")) == 1


async def test_pairing_dms_and_the_slash_command(slack_hub, tmp_path):
    served = await slack_hub()
    slack = served.slack
    dm = slack.open_dm([BEN.id])["id"]
    await slack.send_event(slack.message(BEN, "hi?", dm, channel_type="im"))
    hint = await slack.wait_for("chat.postMessage", lambda m: m["channel"] == dm)
    assert "/hub pair CODE" in hint["text"]
    body = await served.pair(BEN)
    assert "Ben-Ode" in body
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await slack.send_event(slack.message(BEN, "@carl can you look at _this_?", dm,
                                             channel_type="im"))
        got = (await collect(c, 1))[0]
        assert got["text"] == "can you look at *this*?" and got["from"] == "Ben-Ode"
        await c.send("Ben-Ode", "on it: **now**")
        posted = await slack.wait_for("chat.postMessage", lambda m: "on it" in str(m))
        assert posted["channel"] == dm and "*now*" in posted["text"]
        status, peers = await slack.send_command(BEN, "peers", GENERAL)
        assert status == 200 and "carl" in peers
        status, sent = await slack.send_command(BEN, "send carl from the command", GENERAL)
        assert "Sent" in sent
        assert (await collect(c, 1))[0]["text"] == "from the command"
        status, help_text = await slack.send_command(BEN, "", dm)
        assert "/hub peers" in help_text
        # a mention in a channel that is not linked talks to the mesh too
        await slack.send_event(slack.mention(BEN, "@carl ping from #random", "C0RANDOM"))
        assert (await collect(c, 1))[0]["text"] == "ping from #random"
        await slack.send_event(slack.mention(BEN, "#nowhere hello", "C0RANDOM"))
        warned = await slack.wait_for("chat.postEphemeral", lambda m: "nowhere" in str(m))
        assert warned["channel"] == "C0RANDOM" and warned["user"] == BEN.id  # Ben's eyes only
        assert not _posts(slack, "C0RANDOM")
    async with served.owner.client(served.url, receive=False) as owner:
        await owner.call("pair_revoke", who=f"slack:{TEAM}/{BEN.id}")
    status, body = await slack.send_command(BEN, "peers", dm)
    assert "/hub pair" in body  # revoked: back to the join hint


async def test_rate_limits_and_a_lost_answer_never_post_twice(slack_hub, tmp_path):
    served = await _linked(slack_hub, slack_settings=_allow(ANN), lease_seconds=2.0)
    slack = served.slack
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        slack.fail_next("chat.postMessage", 429, retry_after=1)
        first = await c.send("#general", "after the limit")
        assert await eventually(lambda: _is(c, first["id"], "delivered"), timeout=15)
        tries = [m for m in slack.calls if m["method"] == "chat.postMessage"
                 and "after the limit" in str(m)]
        assert [m.get("failed") for m in tries] == [429, None]
        assert tries[1]["at"] - tries[0]["at"] >= 1.0
        slack.fail_next("chat.postMessage", 500, after_effect=True)
        second = await c.send("#general", "answer lost")
        assert await eventually(lambda: _is(c, second["id"], "delivered"), timeout=20)
        history = [m for m in slack.history[GENERAL] if "answer lost" in str(m)]
        assert len(history) == 1  # found by its metadata, not posted again
        assert slack.of("conversations.history")
        # the lookup itself keeps failing until the delivery gives up: the next delivery
        # (after the lease) still knows the post may be there, and finds it
        slack.fail_next("chat.postMessage", 500, after_effect=True)
        for _ in range(8):
            slack.fail_next("conversations.history", 500)
        third = await c.send("#general", "lost, then found later")
        assert await eventually(lambda: _is(c, third["id"], "delivered"), timeout=30)
        assert len([m for m in slack.history[GENERAL] if "found later" in str(m)]) == 1


async def test_edits_deletes_and_files_both_ways(slack_hub, tmp_path):
    served = await _linked(slack_hub, slack_settings=_allow(ANN))
    slack = served.slack
    carl = make_identity(tmp_path, "carl")
    async with served.in_general(carl) as c:
        event = slack.message(ANN, "meet at 3", GENERAL)
        await slack.send_event(event)
        root = (await collect(c, 1))[0]
        await slack.send_event(slack.edit(event, "meet at 4"))
        edit = (await collect(c, 1))[0]
        assert edit["text"] == "(edited) meet at 4" and edit["reply_to"] == root["id"]
        await slack.send_event(slack.delete(event))
        gone = (await collect(c, 1))[0]
        assert gone["text"] == "(deleted this message)"
        assert gone["reply_to"] == root["id"]
        shared = slack.add_file(b"%PDF-1.4 minutes", "minutes.pdf", "application/pdf")
        await slack.send_event(slack.message(ANN, "the minutes", GENERAL, files=[shared]))
        with_file = (await collect(c, 1))[0]
        assert with_file["attachments"][0]["name"] == "minutes.pdf"
        stored = await c.call("file_get", id=with_file["attachments"][0]["file"])
        assert stored["name"] == "minutes.pdf"
        await c.call("file_put", name="plan.txt", content="cGxhbg==", to="#general",
                     text="the plan")
        upload = await eventually(lambda: _shared(slack, "plan.txt"))
        assert upload["data"] == b"plan" and upload["channel"] == GENERAL


async def test_an_event_taken_but_not_handled_is_handled_at_the_next_start(slack_hub, tmp_path):
    served = await _linked(slack_hub, slack_settings=_allow(ANN))
    slack = served.slack
    carl = make_identity(tmp_path, "carl")
    async with served.in_general(carl):
        pass  # carl is a member of #general when the event arrives
    state = served.connector.slack_state
    event = slack.message(ANN, "acked before a crash", GENERAL)
    body = {"type": "event_callback", "team_id": TEAM, "event_id": "Ev0PENDING", "event": event}
    await state.keep_event("Ev0PENDING", body)  # acked, kept; the hub stops before handling it
    await served.stop()
    again = await slack_hub(slack_settings=_allow(ANN))
    async with carl.client(again.url) as c:
        history = await c.call("history", conversation="#general")
        assert any(m["text"] == "acked before a crash" for m in history["messages"])


def test_mrkdwn_becomes_markdown() -> None:
    names = {"U1": "Ann Lee"}.get
    text = adapter.mrkdwn_to_markdown(
        "*bold* _it_ ~no~ `*code*` <@U1> <#C1|ops> <https://x.example|site> <!here> &lt;b&gt;",
        lambda u: names(u) or u, lambda c: c)
    assert text == "**bold** *it* ~~no~~ `*code*` @Ann Lee #ops [site](https://x.example) " \
                   "@here <b>"
    assert adapter.emoji_from_slack("+1") == "👍"
    assert adapter.emoji_from_slack("thumbsup::skin-tone-3") == "👍"
    assert adapter.emoji_from_slack("partyparrot") == ":partyparrot:"
    assert adapter.emoji_to_slack("✅") == "white_check_mark"
    assert adapter.emoji_to_slack(":partyparrot:") == "partyparrot"
    assert adapter.command_text("pair AB-CD") == "/pair AB-CD"
    assert adapter.command_text("@carl hi") == "@carl hi"
    assert adapter.command_text("") == "/help"


def test_long_messages_are_posted_in_parts_with_buttons_on_the_last() -> None:
    posts = adapter.render("x " * 4000, context="carl in #ops",
                           buttons=[("Approve", "ap:1:0"), ("Deny", "ap:1:1")])
    assert len(posts) == 3
    assert posts[0][1][0]["type"] == "context"
    assert all(len(block["text"]["text"]) <= adapter.TEXT_LIMIT
               for _, blocks in posts for block in blocks if block["type"] == "section")
    assert [b["type"] for b in posts[-1][1]] == ["section", "actions"]
    assert not [b for _, blocks in posts[:-1] for b in blocks if b["type"] == "actions"]


async def _is(c: Any, message_id: str, state: str) -> bool:
    """Whether every recipient's delivery of ``message_id`` is in ``state``."""
    status = await c.message_status(message_id)
    return all(r["state"] == state for r in status["recipients"])


async def _no_reactions(c: Any, message_id: str) -> bool:
    return not (await c.call("reactions", ids=[message_id]))


async def _shared(slack: Any, name: str) -> dict[str, Any] | None:
    found = [f for f in slack.shared_files if f["name"] == name]
    return found[0] if found else None


async def test_signed_garbage_gets_a_clear_4xx_and_changes_nothing(slack_hub, tmp_path):
    served = await slack_hub(slack_settings=_allow(ANN))
    url = f"{served.url}/slack/events"
    async with aiohttp.ClientSession() as http:
        for body, kind in (("{not json", "application/json"),
                           ('{"type": "event_callback"}', "application/json"),
                           ("payload=%7Bbroken", "application/x-www-form-urlencoded"),
                           ("\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
                            "application/json")):
            headers = signed_headers(body, kind, secret=served.slack.signing_secret,
                                     timestamp=None)
            async with http.post(url, data=body.encode("utf-8", "surrogateescape"),
                                 headers=headers) as resp:
                assert resp.status < 500, (body, resp.status, await resp.text())
        async with http.post(f"{served.url}/slack/elsewhere", data="{}") as resp:
            assert resp.status == 404
    async with served.owner.client(served.url, receive=False) as owner:
        assert not [p for p in await owner.peers() if p["connector"] == "slack"]


async def test_socket_mode_retries_are_recognised_by_event_id(slack_hub, tmp_path):
    served = await _linked(slack_hub, mode="socket", slack_settings=_allow(ANN))
    slack = served.slack
    carl = make_identity(tmp_path, "carl")
    async with served.in_general(carl) as c:
        event = slack.message(ANN, "over the socket", GENERAL)
        await slack.send_event(event, event_id="Ev0SOCKET1")
        assert (await collect(c, 1))[0]["text"] == "over the socket"
        await slack.send_event(event, event_id="Ev0SOCKET1", retry_num=1)
        assert await no_message(c, 0.5)


@pytest.mark.parametrize("mode", MODES)
async def test_a_claude_session_and_the_cli_both_get_the_channel_and_reply_in_its_thread(
        slack_hub, tmp_path, mode):
    served = await slack_hub(mode=mode, slack_settings={**_allow(ANN),
                                                        "links": {GENERAL: "#general"}})
    slack = served.slack
    dana, carl = make_identity(tmp_path, "dana"), make_identity(tmp_path, "carl")
    await asyncio.to_thread(carl.cli, served.url, "call", "conversation_join", "name=#general")
    async with stdio_session(mcp_params(dana, served.url, "--name", "dana")) as agent:
        await agent.call("mesh_conversation_join", name="#general")
        event = slack.message(ANN, "who can review *PR 42*?", GENERAL)
        await slack.send_event(event)
        pushed = (await agent.pushes.wait(1))[0]
        assert "who can review **PR 42**?" in pushed.content
        assert pushed.meta["from"] == "Ann-Lee" and pushed.meta["conversation"] == "#general"
        inbox = await asyncio.to_thread(carl.cli, served.url, "inbox", "--json")
        got = json.loads(inbox.stdout)
        root = [m for m in got["messages"] if "PR 42" in m["text"]][0]
        await agent.call("mesh_send", to="#general", text="I will", reply_to=root["id"])
        await asyncio.to_thread(carl.cli, served.url, "send", "#general", "me too",
                                "--reply-to", root["id"])
        for text in ("I will", "me too"):
            posted = await slack.wait_for("chat.postMessage", lambda m, t=text: t in str(m))
            assert posted["channel"] == GENERAL and posted["thread_ts"] == event["ts"]
        names = {p["username"] for p in slack.of("chat.postMessage") if "thread_ts" in p}
        assert names == {"dana (mcp)", "carl (cli)"}


async def test_who_reads_a_conversation_where(slack_hub, tmp_path):
    """A paired person reads a linked conversation in its channel; a whisper to them, or the
    conversation while they are not in the channel, comes as a DM."""
    served = await _linked(slack_hub, slack_settings=_allow(ANN, BEN))
    slack = served.slack
    await slack.send_command(BEN, "status", slack.open_dm([BEN.id])["id"])  # Ben: a peer
    carl = make_identity(tmp_path, "carl")
    async with served.in_general(carl) as c:
        sent = await c.send("#general", "for everyone")
        await eventually(lambda: _is(c, sent["id"], "delivered"))
        ann_dm, ben_dm = slack.open_dm([ANN.id])["id"], slack.open_dm([BEN.id])["id"]
        assert not _posts(slack, ann_dm, "for everyone")  # Ann is in the channel
        whisper = await c.send("#general", "just for Ann", whisper=["Ann-Lee"])
        await eventually(lambda: _is(c, whisper["id"], "delivered"))
        assert _posts(slack, ann_dm, "just for Ann") and not _posts(slack, GENERAL, "just for")
        assert _posts(slack, ben_dm, "for everyone")  # Ben is not in the channel: a DM


async def test_a_replayed_reaction_event_is_not_applied_twice(slack_hub, tmp_path):
    served = await _linked(slack_hub, slack_settings=_allow(ANN))
    slack = served.slack
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        sent = await c.send("#general", "vote here")
        posted = await slack.wait_for("chat.postMessage", lambda m: "vote here" in str(m))
        ts = posted["result"]["ts"]
        added = slack.reaction(ANN, "+1", GENERAL, ts)
        await slack.send_event(added, event_id="Ev0VOTE1")
        await eventually(lambda: _reacted(c, sent["id"]))
        await slack.send_event(slack.reaction(ANN, "+1", GENERAL, ts, removed=True))
        await eventually(lambda: _no_reactions(c, sent["id"]))
        assert (await slack.send_event(added, event_id="Ev0VOTE1", retry_num=1))[0] == 200
        await c.call("whoami")
        assert await _no_reactions(c, sent["id"])  # the retry of the add changed nothing


async def test_bots_guests_and_foreign_file_links_are_kept_out(slack_hub, tmp_path):
    quiet_bot = SlackUser("UQUIETBOT", "quietbot", is_bot=True)
    guest = SlackUser("UGUEST001", "guest", real_name="Gus Guest", restricted=True)
    served = await slack_hub(slack_settings={"allow": TEAM})  # the whole workspace
    slack = served.slack
    slack.add_user(quiet_bot)
    slack.add_user(guest)
    await served.link(ANN, GENERAL, "#general")
    carl = make_identity(tmp_path, "carl")
    async with served.in_general(carl) as c:
        event = slack.message(quiet_bot, "a bot user's post without a bot_id", GENERAL)
        for key in ("bot_id", "app_id", "bot_profile"):
            event.pop(key, None)
        await slack.send_event(event)
        external = slack.add_file(b"secret", "report.pdf", "application/pdf")
        external["url_private_download"] = "https://attacker.example/steal"
        external["url_private"] = "https://attacker.example/steal"
        await slack.send_event(slack.message(ANN, "see the file", GENERAL, files=[external]))
        warned = await slack.wait_for("chat.postMessage", lambda m: "report.pdf" in str(m))
        assert warned["channel"] == GENERAL and "no file address" in warned["text"]
        await slack.send_event(slack.message(ANN, "a real message", GENERAL))
        assert (await collect(c, 1))[0]["text"] == "a real message"  # the bot's never came
    peers = {p["name"] for p in await _peers(served)}
    assert "quietbot" not in peers
    status, body = await slack.send_command(guest, "peers", slack.open_dm([guest.id])["id"])
    assert "/hub pair" in body  # a guest needs a code or to be named one by one
    async with carl.client(served.url) as c:
        # in the linked channel, the guest speaks through the channel, under their name
        await slack.send_event(slack.message(guest, "hi all", GENERAL))
        assert (await collect(c, 1))[0]["text"] == "**Gus Guest**: hi all"
        renamed = SlackUser(guest.id, "guest", real_name="Gus Guest", display_name="Gus G",
                            restricted=True)
        await slack.send_event(slack.user_change(renamed))
        await slack.send_event(slack.message(guest, "again", GENERAL))
        assert (await collect(c, 1))[0]["text"] == "**Gus G**: again"


async def _reacted(c: Any, message_id: str) -> bool:
    return bool(await c.call("reactions", ids=[message_id]))


async def _peers(served: Any) -> list[dict[str, Any]]:
    async with served.owner.client(served.url, receive=False) as owner:
        return list(await owner.peers())
