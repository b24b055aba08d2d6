"""Text hygiene: what a peer writes cannot drive a reader's screen on any surface that shows it.

Every surface below gets the same hostile text, the reproduction of issue 13: a body that
erases the line above and rewrites it (``ESC[2K ESC[1A``), retitles the window (an OSC
sequence ended by BEL), carries NUL, a C1 CSI (U+009B, which some terminals read as ``ESC[``)
and a right-to-left override (U+202E). Each surface shows those characters as visible escapes
(``\\x1b``, ``\\u202e``); the stored message keeps exactly what was sent.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from .fakes.slack_api import TEAM, SlackUser
from .fakes.telegram_api import TgUser
from .helpers import HUB_BIN, base_env, collect, make_identity, read_line
from .test_mcp import mcp_params, stdio_session, wait_for_peer

HOSTILE = "ok\x1b[2K\x1b[1A\x1b]0;pwned\x07 nul\x00 csi\x9b31m \u202eevil\n12:00:00 carl: forged"
RAW = ("\x1b", "\x00", "\x07", "\x9b", "\u202e")
VISIBLE = "ok\\x1b[2K\\x1b[1A\\x1b]0;pwned\\x07 nul\\x00 csi\\x9b31m \\u202eevil"
OPTION = "ship\x1b[2K\u202eit"  # an approval option: becomes a button's label
OPTION_SHOWN = "Ship\\x1b[2k\\u202eit"  # capitalised as buttons are


def harmless(text: str) -> bool:
    return not any(char in text for char in RAW)


async def test_hub_watch_shows_a_hostile_message_harmless(hub, people):
    """`hub watch`: the issue's reproduction, through the real CLI against a real hub."""
    ann, bob = people("ann", "bob")
    watch = subprocess.Popen([HUB_BIN, "watch"], env=base_env(bob.home, MESHHUB_URL=hub.url),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "watching as bob" in read_line(watch)
        async with ann.client(hub.url) as a:
            await a.call("set_summary", summary="busy\x1b]0;title\x07\u202e")
            sent = await a.send("bob", HOSTILE)
            shown = ""
            while sent["id"] not in shown:
                line = read_line(watch)
                assert line, "watch ended"
                shown += line
    finally:
        watch.terminate()
        watch.wait(10)
    assert harmless(shown), shown
    assert VISIBLE in shown and "\n    12:00:00 carl: forged" in shown
    assert "busy\\x1b]0;title\\x07\\u202e" in shown  # the presence event, made visible too


async def test_hub_inbox_and_peers_show_controls_visibly_and_the_store_keeps_them(hub, people):
    """`hub inbox` and `hub peers` show escapes; `--json` and the client get the bytes sent."""
    ann, bob = people("ann", "bob")
    bob.cli(hub.url, "peers")
    async with ann.client(hub.url) as a:
        await a.call("set_summary", summary="csi\x9b2J nul\x00 \u202erev")
        await a.send("bob", HOSTILE)
    raw = json.loads(bob.cli(hub.url, "inbox", "--all", "--json").stdout)
    assert raw["messages"][0]["text"] == HOSTILE  # the data is what was sent
    shown = bob.cli(hub.url, "inbox", "--all").stdout + bob.cli(hub.url, "peers").stdout
    assert harmless(shown), shown
    assert VISIBLE in shown and "csi\\x9b2J nul\\x00 \\u202erev" in shown


async def test_mcp_push_and_tool_results_show_controls_visibly(hub, people):
    """The MCP channel notification text and a tool result's text: escapes, while the
    structured result keeps the data."""
    ann, bob = people("ann", "bob")
    async with stdio_session(mcp_params(bob, hub.url, "--name", "bob-s")) as b:
        async with ann.client(hub.url) as a:
            await a.call("set_summary", summary="sum\x9b2J\u202e")
            await wait_for_peer(b, "ann")
            await a.send("bob-s", HOSTILE)
        push = (await b.pushes.wait(1))[0]
        assert harmless(push.content), push.content
        assert VISIBLE in push.content
        peers = await b.session.call_tool("mesh_peers", {})
        inbox = await b.session.call_tool("mesh_inbox", {})
        refused = await b.session.call_tool("mesh_conversation_topic",
                                            {"name": "nowhere\u202e\x1b[2K", "topic": "t"})
    assert refused.is_error and harmless(refused.content[0].text)  # type: ignore[union-attr]
    for result in (peers, inbox):
        text = result.content[0].text  # type: ignore[union-attr]
        assert harmless(text) and json.loads(text) == result.structured_content, text
    assert inbox.structured_content["result"]["messages"][0]["text"] == HOSTILE  # type: ignore
    assert "\\u202e" in peers.content[0].text  # type: ignore[union-attr]


async def test_telegram_approval_buttons_flash_and_footer_are_harmless(tg_hub, tmp_path):
    """An approval's options become Telegram buttons, the answer a flash and a footer."""
    served = await tg_hub()
    tg = served.tg
    ann = TgUser(5101, "Ann", "Smith")
    await served.pair(ann)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await c.call("approval_request", to="Ann-Smith", question=HOSTILE,
                     options=[OPTION, "no"])
        shown = await tg.wait_for("sendMessage", lambda m: "ok" in m["text"])
        assert harmless(shown["text"]) and "\\u202eevil" in shown["text"]
        keyboard = shown["reply_markup"]["inline_keyboard"][0]
        assert [b["text"] for b in keyboard] == [OPTION_SHOWN, "No"]
        await tg.press(ann, shown["result"], keyboard[0]["callback_data"])
        flash = await tg.wait_for("answerCallbackQuery")
        assert harmless(flash["text"]) and "\\u202e" in flash["text"]
        edited = await tg.wait_for("editMessageText")
        assert harmless(edited["text"]) and "by Ann-Smith" in edited["text"]
        told = (await collect(c, 1))[0]
        assert told["data"]["answer"] == OPTION  # the answer as data is the option as given
        # a forged button: the refusal flashed back does not carry its controls either
        await tg.press(ann, shown["result"], "ap:x\x1b[2K\u202e:0")
        forged = await tg.wait_for("answerCallbackQuery", count=2)
        assert harmless(forged["text"]), forged["text"]


SLACK_ANN = SlackUser("UANN0101", "ann", real_name="Ann Lee", display_name="Ann Lee")


@pytest.fixture
def _slack_people(slack: Any) -> None:
    slack.add_user(SLACK_ANN)


async def test_slack_approval_buttons_and_footer_are_harmless(slack_hub, tmp_path,
                                                             _slack_people):
    served = await slack_hub(slack_settings={"allow": f"{TEAM}/{SLACK_ANN.id}"})
    slack = served.slack
    await slack.send_command(SLACK_ANN, "status", slack.open_dm([SLACK_ANN.id])["id"])
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await c.call("approval_request", to="Ann-Lee", question=HOSTILE, options=[OPTION, "no"])
        card = await slack.wait_for("chat.postMessage", lambda m: "evil" in str(m))
        assert harmless(json.dumps(card["blocks"], ensure_ascii=False))
        buttons = [b for b in card["blocks"] if b["type"] == "actions"][0]["elements"]
        assert [b["text"]["text"] for b in buttons] == [OPTION_SHOWN, "No"]
        await slack.send_interaction(slack.block_action(
            SLACK_ANN, card, buttons[0]["action_id"], buttons[0]["value"], card["channel"]))
        update = await slack.wait_for("chat.update")
        assert harmless(json.dumps(update["blocks"], ensure_ascii=False)), update["blocks"]
        told = (await collect(c, 1))[0]
        assert told["data"]["answer"] == OPTION


def test_chat_headers_and_footers_show_controls_visibly():
    """The header and footer lines over a relayed message (Telegram's bold line, Slack's
    context line) whatever they are given, not only the body."""
    from meshhub_slack import adapter as slack_adapter
    from meshhub_telegram import adapter as telegram_adapter

    chunks = telegram_adapter.render("carl\x00\u202e", "body", footer="→ ok\x1b[2K")
    assert harmless("".join(chunks)) and "carl\\x00\\u202e" in chunks[0]
    posts = slack_adapter.render("body", context="carl\x9b\u202e", footer="→ ok\x1b]0;t\x07")
    shown = json.dumps([blocks for _text, blocks in posts], ensure_ascii=False)
    assert harmless(shown) and "carl\\\\x9b\\\\u202e" in shown
