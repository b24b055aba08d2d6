"""The fake Slack speaks the real slack-sdk and slack-bolt wire formats, both directions."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from .fakes.slack_api import BOT_ID, BOT_USER, FakeSlack, SlackUser
from .helpers import serve_app

ADA = SlackUser("U0ADA", "ada", real_name="Ada Lovelace", display_name="ada")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_user(ADA)
        fake.add_channel("C0GENERAL", "general")
        yield fake


@pytest.fixture
async def web_client(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    client = AsyncWebClient(base_url=slack.api_url, token=slack.bot_token)
    yield client
    if client.session is not None:
        await client.session.close()


async def serve(handler: Handler) -> tuple[web.AppRunner, str]:
    """An app's request URL on 127.0.0.1, answered by ``handler``."""
    app = web.Application()
    app.router.add_post("/slack/events", handler)
    runner, port = await serve_app(app)
    return runner, f"http://127.0.0.1:{port}/slack/events"


async def test_the_web_api_answers_the_real_client(slack: FakeSlack,
                                                   web_client: AsyncWebClient) -> None:
    me = await web_client.auth_test()
    assert (me["user_id"], me["bot_id"], me["team_id"]) == (BOT_USER, BOT_ID, "T0MESH")
    ada = await web_client.users_info(user=ADA.id)
    assert ada["user"]["profile"]["real_name"] == "Ada Lovelace"
    with pytest.raises(SlackApiError) as unknown:
        await web_client.users_info(user="U0NOBODY")
    assert unknown.value.response["error"] == "user_not_found"
    with pytest.raises(SlackApiError) as refused:
        await AsyncWebClient(base_url=slack.api_url, token="xoxb-wrong").auth_test()
    assert refused.value.response["error"] == "invalid_auth"

    dm = (await web_client.conversations_open(users=ADA.id))["channel"]["id"]
    assert dm.startswith("D")
    assert (await web_client.conversations_open(users=ADA.id))["channel"]["id"] == dm
    assert (await web_client.conversations_info(channel=dm))["channel"]["is_im"]

    metadata = {"event_type": "meshhub_message", "event_payload": {"id": "m1"}}
    root = await web_client.chat_postMessage(channel="C0GENERAL", text="root",
                                             username="ada (hub)", metadata=metadata)
    reply = await web_client.chat_postMessage(channel="C0GENERAL", text="reply",
                                              thread_ts=root["ts"])
    assert float(reply["ts"]) > float(root["ts"])
    plain = await web_client.conversations_history(channel="C0GENERAL")
    assert [m["text"] for m in plain["messages"]] == ["root"]
    assert "metadata" not in plain["messages"][0]
    assert plain["messages"][0]["subtype"] == "bot_message"
    full = await web_client.conversations_history(channel="C0GENERAL",
                                                  include_all_metadata=True, limit=1)
    assert full["messages"][0]["metadata"] == metadata
    thread = await web_client.conversations_replies(channel="C0GENERAL", ts=root["ts"])
    assert [m["text"] for m in thread["messages"]] == ["root", "reply"]

    await web_client.chat_update(channel="C0GENERAL", ts=root["ts"], text="root, edited")
    await web_client.reactions_add(channel="C0GENERAL", timestamp=root["ts"], name="eyes")
    with pytest.raises(SlackApiError) as twice:
        await web_client.reactions_add(channel="C0GENERAL", timestamp=root["ts"], name="eyes")
    assert twice.value.response["error"] == "already_reacted"
    assert slack.reactions("C0GENERAL", root["ts"]) == {"eyes": [BOT_USER]}
    await web_client.reactions_remove(channel="C0GENERAL", timestamp=root["ts"], name="eyes")
    assert slack.reactions("C0GENERAL", root["ts"]) == {}
    await web_client.chat_delete(channel="C0GENERAL", ts=reply["ts"])
    thread = await web_client.conversations_replies(channel="C0GENERAL", ts=root["ts"])
    assert [m["text"] for m in thread["messages"]] == ["root, edited"]
    posted = await slack.wait_for("chat.postMessage", lambda c: c["text"] == "reply")
    assert posted["thread_ts"] == root["ts"] and posted["failed"] is None


async def test_scripted_failures_and_a_lost_answer(slack: FakeSlack,
                                                   web_client: AsyncWebClient) -> None:
    slack.fail_next("chat.postMessage", retry_after=3)
    with pytest.raises(SlackApiError) as limited:
        await web_client.chat_postMessage(channel="C0GENERAL", text="one")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "3"
    slack.fail_next("chat.update", status=200, error="cant_update_message")
    with pytest.raises(SlackApiError) as refused:
        await web_client.chat_update(channel="C0GENERAL", ts="1.0", text="x")
    assert refused.value.response["error"] == "cant_update_message"

    slack.fail_next("chat.postMessage", after_effect=True)
    with pytest.raises(SlackApiError) as lost:
        await web_client.chat_postMessage(channel="C0GENERAL", text="two")
    assert lost.value.response.status_code == 500
    history = await web_client.conversations_history(channel="C0GENERAL")
    assert [m["text"] for m in history["messages"]] == ["two"]
    assert [(c["text"], c["failed"]) for c in slack.of("chat.postMessage")] == [("two", 500)]
    assert [c["failed"] for c in slack.calls] == [429, "cant_update_message", 500, None]


async def test_files_go_out_with_upload_v2_and_come_in_with_the_token(
        slack: FakeSlack, web_client: AsyncWebClient) -> None:
    sent = await web_client.files_upload_v2(channel="C0GENERAL", filename="notes.txt",
                                            content=b"hello file", initial_comment="here")
    assert (sent["file"]["name"], sent["file"]["mimetype"]) == ("notes.txt", "text/plain")
    assert slack.shared_files == [{"id": sent["file"]["id"], "name": "notes.txt",
                                   "data": b"hello file", "channel": "C0GENERAL",
                                   "thread_ts": None, "initial_comment": "here"}]
    slack.fail_next("upload", status=500)
    with pytest.raises(SlackRequestError):
        await web_client.files_upload_v2(channel="C0GENERAL", filename="x.bin", content=b"x")
    assert len(slack.shared_files) == 1

    shared = slack.add_file(b"\x00picture", "cat.png", "image/png")
    async with aiohttp.ClientSession() as http:
        async with http.get(shared["url_private_download"]) as anonymous:
            assert anonymous.status == 403
        headers = {"Authorization": f"Bearer {slack.bot_token}"}
        async with http.get(shared["url_private_download"], headers=headers) as download:
            assert download.status == 200
            assert await download.read() == b"\x00picture"
    event = slack.message(ADA, "a cat", "C0GENERAL", files=[shared])
    assert event["subtype"] == "file_share" and event["files"][0]["size"] == 8


async def test_what_people_do_shows_in_the_web_api(slack: FakeSlack,
                                                   web_client: AsyncWebClient) -> None:
    said = slack.message(ADA, "first", "C0GENERAL")
    reply = slack.message(ADA.id, "in the thread", "C0GENERAL", thread_ts=said["ts"])
    assert reply["parent_user_id"] == ADA.id and reply["channel_type"] == "channel"
    added = slack.reaction(ADA, "tada", "C0GENERAL", said["ts"])
    assert (added["type"], added["item_user"]) == ("reaction_added", ADA.id)
    edited = slack.edit(said, "first, edited")
    assert edited["message"]["text"] == "first, edited"
    assert edited["previous_message"]["text"] == "first"
    history = await web_client.conversations_history(channel="C0GENERAL")
    [top] = history["messages"]
    assert (top["text"], top["reply_count"]) == ("first, edited", 1)
    assert top["reactions"] == [{"name": "tada", "users": [ADA.id], "count": 1}]
    assert slack.reaction(ADA, "tada", "C0GENERAL", said["ts"], removed=True)["type"] == (
        "reaction_removed")
    assert slack.reactions("C0GENERAL", said["ts"]) == {}
    gone = slack.delete(reply)
    assert (gone["subtype"], gone["deleted_ts"]) == ("message_deleted", reply["ts"])
    thread = await web_client.conversations_replies(channel="C0GENERAL", ts=said["ts"])
    assert [m["text"] for m in thread["messages"]] == ["first, edited"]

    renamed = SlackUser(ADA.id, "ada", real_name="Ada King", display_name="countess")
    assert slack.user_change(renamed)["user"]["profile"]["display_name"] == "countess"
    assert (await web_client.users_info(user=ADA.id))["user"]["real_name"] == "Ada King"
    dm = slack.open_dm([ADA.id])["id"]
    assert slack.message(ADA, "psst", dm)["channel_type"] == "im"
    mention = slack.mention(ADA, "<@UBOT0001> look", "C0GENERAL")
    assert (mention["type"], mention["text"]) == ("app_mention", "<@UBOT0001> look")


async def test_signed_posts_pass_the_sdk_verifier(slack: FakeSlack) -> None:
    verifier = SignatureVerifier(slack.signing_secret)
    received: list[tuple[dict[str, str], str]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.text()
        if not verifier.is_valid_request(body, dict(request.headers)):
            return web.Response(status=401)
        received.append((dict(request.headers), body))
        return web.Response(text="ok")

    runner, slack.events_url = await serve(handler)
    try:
        event = slack.message(ADA, "hello", "C0GENERAL")
        assert await slack.send_event(event, event_id="Ev0001", retry_num=1) == (200, "ok")
        headers, body = received[0]
        envelope = json.loads(body)
        assert envelope["event_id"] == "Ev0001" and envelope["event"]["text"] == "hello"
        assert envelope["authorizations"][0]["user_id"] == BOT_USER
        assert headers["X-Slack-Retry-Num"] == "1"
        assert (await slack.send_event(event, secret="wrong"))[0] == 401
        assert (await slack.send_event(event, timestamp=int(time.time()) - 600))[0] == 401
        assert (await slack.send_event(event, sign=False))[0] == 401

        assert (await slack.send_command(ADA, "status", "C0GENERAL"))[0] == 200
        command = dict(urllib.parse.parse_qsl(received[-1][1]))
        assert (command["command"], command["text"], command["user_id"]) == (
            "/hub", "status", ADA.id)
        bot = {"ts": slack.next_ts(), "blocks": [{"type": "actions", "block_id": "approve",
                                                  "elements": [{"type": "button",
                                                                "action_id": "yes",
                                                                "value": "1"}]}]}
        press = slack.block_action(ADA, bot, "yes", "1", "C0GENERAL")
        assert (await slack.send_interaction(press))[0] == 200
        payload = json.loads(dict(urllib.parse.parse_qsl(received[-1][1]))["payload"])
        assert payload["actions"][0]["block_id"] == "approve"
        assert payload["user"]["id"] == ADA.id
    finally:
        await runner.cleanup()


async def test_a_bolt_app_replies_and_ignores_its_own_echo(slack: FakeSlack) -> None:
    client = AsyncWebClient(base_url=slack.api_url, token=slack.bot_token)
    app = AsyncApp(client=client, signing_secret=slack.signing_secret)
    seen: list[dict[str, Any]] = []

    @app.event("message")
    async def on_message(event: dict[str, Any], say: Any) -> None:
        seen.append(event)
        await say(text=f"echo: {event['text']}", thread_ts=event["ts"])

    async def handler(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    runner, slack.events_url = await serve(handler)
    try:
        event = slack.message(ADA, "hi bolt", "C0GENERAL")
        assert (await slack.send_event(event))[0] == 200
        reply = await slack.wait_for("chat.postMessage")
        assert (reply["text"], reply["thread_ts"]) == ("echo: hi bolt", event["ts"])
        await _until(lambda: len(slack.deliveries) == 2)
        assert slack.deliveries[1]["status"] == 200
        await slack.send_event(slack.message(ADA, "and again", "C0GENERAL"))
        await slack.wait_for("chat.postMessage", count=2)
        await _until(lambda: len(slack.deliveries) == 4)
        assert [e["text"] for e in seen] == ["hi bolt", "and again"]
        assert [c["text"] for c in slack.of("chat.postMessage")] == [
            "echo: hi bolt", "echo: and again"]
    finally:
        await runner.cleanup()
        if client.session is not None:
            await client.session.close()


async def test_socket_mode_with_the_real_client(slack: FakeSlack) -> None:
    slack.settings(mode="socket")
    web_client = AsyncWebClient(base_url=slack.api_url)
    requests: list[SocketModeRequest] = []

    async def listener(client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        requests.append(request)
        payload = {"text": "got it"} if request.type == "slash_commands" else None
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id, payload=payload))

    client = SocketModeClient(app_token=slack.app_token, web_client=web_client)
    client.socket_mode_request_listeners.append(listener)
    await client.connect()
    try:
        await slack.wait_connected()
        event = slack.message(ADA, "over the socket", "C0GENERAL")
        status, ack = await slack.send_event(event, retry_num=2)
        assert status == 200 and json.loads(ack)["envelope_id"] == requests[0].envelope_id
        assert requests[0].type == "events_api" and requests[0].retry_attempt == 2
        assert requests[0].payload["event"]["text"] == "over the socket"
        assert await slack.send_command(ADA, "who", "C0GENERAL") == (
            200, json.dumps({"text": "got it"}))
        assert requests[-1].payload["command"] == "/hub"

        bot_client = AsyncWebClient(base_url=slack.api_url, token=slack.bot_token)
        await bot_client.chat_postMessage(channel="C0GENERAL", text="from the bot")
        await _until(lambda: len(requests) == 3)
        assert requests[2].payload["event"]["bot_id"] == BOT_ID
        if bot_client.session is not None:
            await bot_client.session.close()

        for warn in (True, False):
            before = slack.connections
            await slack.disconnect(warn=warn)
            await _until(functools.partial(_reconnected, slack, before))
            await slack.send_event(slack.mention(ADA, f"warned: {warn}", "C0GENERAL"))
            assert requests[-1].payload["event"]["type"] == "app_mention"
            assert requests[-1].payload["event"]["text"] == f"<@{BOT_USER}> warned: {warn}"
    finally:
        await client.close()
        if web_client.session is not None:
            await web_client.session.close()


async def test_a_bolt_app_over_socket_mode(slack: FakeSlack) -> None:
    slack.settings(mode="socket")
    client = AsyncWebClient(base_url=slack.api_url, token=slack.bot_token)
    app = AsyncApp(client=client)

    @app.command("/hub")
    async def on_command(ack: Any, command: dict[str, Any]) -> None:
        await ack(text=f"you said {command['text']}")

    @app.action("approve")
    async def on_press(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        await respond(text=f"approved by {body['user']['id']}")

    handler = AsyncSocketModeHandler(app, slack.app_token)
    await handler.connect_async()
    try:
        await slack.wait_connected()
        status, answer = await slack.send_command(ADA, "status", "C0GENERAL")
        assert status == 200 and json.loads(answer)["text"] == "you said status"
        blocks = [{"type": "actions", "elements": [
            {"type": "button", "action_id": "approve", "value": "m1",
             "text": {"type": "plain_text", "text": "Approve"}}]}]
        posted = await client.chat_postMessage(channel="C0GENERAL", text="ok?", blocks=blocks)
        call = slack.of("chat.postMessage")[0]
        press = slack.block_action(ADA, call, "approve", "m1", "C0GENERAL")
        assert press["message"]["ts"] == posted["ts"]
        assert press["actions"][0]["text"]["text"] == "Approve"
        assert (await slack.send_interaction(press))[0] == 200
        answered = await slack.wait_for("response_url")
        assert answered["text"] == f"approved by {ADA.id}"
    finally:
        await handler.close_async()
        if client.session is not None:
            await client.session.close()


def _reconnected(slack: FakeSlack, before: int) -> bool:
    return slack.connections > before and slack.socket is not None


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.02)
