"""Pins over a real hub on 127.0.0.1, through the client library and the HTTP API: who may pin,
what each member sees pinned, and the `record` events a pin change sends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshhub.errors import Forbidden, InvalidRequest, NotFound

from .helpers import api_call, token_for


async def next_pin_event(client: Any) -> dict[str, Any]:
    """The next ``record`` event of the ``pins`` collection (presence events are skipped)."""
    while True:
        event = await asyncio.wait_for(client.events.get(), 10)
        if event.get("event") == "record" and event["collection"] == "pins":
            return dict(event)


async def test_members_pin_what_they_see_and_hear_of_it(inproc, people):
    served = await inproc(send_rate=0)
    ann, bob, carl, dave = people("ann", "bob", "carl", "dave")
    async with ann.client(served.url) as a, bob.client(served.url) as b, \
            carl.client(served.url) as c, dave.client(served.url) as d:
        await a.call("conversation_create", name="design")
        for peer in (b, c):
            await peer.call("conversation_join", name="design")
        first = (await a.send("#design", "decision: use sqlite"))["id"]
        second = (await b.send("#design", "deadline friday"))["id"]
        whisper = (await a.send("#design", "salary bands", whisper=["bob"]))["id"]
        direct = (await a.send("bob", "just us"))["id"]

        bob_key = (await b.call("whoami"))["key"]
        pinned = await b.call("pin", message_id=first)
        assert pinned["changed"] is True and pinned["pinned_by"] == "bob"
        assert pinned["message"]["id"] == first and pinned["pinned_at"] > 0
        for member in (a, c):
            event = await next_pin_event(member)
            assert (event["key"], event["op"]) == (first, "put")
            assert event["value"]["by"] == bob_key
            assert event["value"]["conversation"] == "#design"
        again = await a.call("pin", message_id=first)
        assert again["changed"] is False and again["pinned_by"] == "bob"

        with pytest.raises(NotFound):
            await d.call("pin", message_id=first)  # not a member: never received it
        with pytest.raises(NotFound):
            await c.call("pin", message_id=whisper)  # a whisper to others is not carl's
        with pytest.raises(InvalidRequest, match="#conversation"):
            await b.call("pin", message_id=direct)

        # a pinned whisper: its party hears of it, carl does not and never sees it listed
        await b.call("pin", message_id=whisper)
        assert (await next_pin_event(a))["key"] == whisper
        await a.call("pin", message_id=second)
        assert (await next_pin_event(c))["key"] == second  # not the whisper's pin before it
        listed = [p["message"]["id"] for p in await a.call("pins", conversation="design")]
        assert listed == [first, whisper, second]
        token = await token_for(c, cap="read")
        over_http = await api_call(served.url, token, "pins", conversation="#design")
        assert [(p["message"]["id"], p["pinned_by"]) for p in over_http] == \
            [(first, "bob"), (second, "ann")]

        unpinned = await api_call(served.url, await token_for(a), "unpin", message_id=first)
        assert unpinned == {"id": first, "changed": True}
        gone = await next_pin_event(c)
        assert (gone["key"], gone["op"], gone["value"]) == (first, "delete", None)
        assert not (await a.call("unpin", message_id=first))["changed"]
        assert [p["message"]["id"] for p in await c.call("pins", conversation="#design")] == \
            [second]

        await c.call("conversation_leave", name="design")
        with pytest.raises(Forbidden, match="join #design"):
            await c.call("unpin", message_id=second)
