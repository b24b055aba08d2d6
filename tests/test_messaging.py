"""Messaging through a real `hub start` process: DM, group, broadcast, threads, idempotency."""

from __future__ import annotations

import json
import subprocess

import pytest

from meshhub.errors import MeshError

from .helpers import HUB_BIN, base_env, collect, no_message, read_line


async def test_cli_identities_exchange_dm_group_and_broadcast(hub, people):
    ann, bob = people("ann", "bob")
    # bob watches through the real CLI; ann sends through the real CLI
    ann.cli(hub.url, "peers")  # registers ann
    ann.cli(hub.url, "call", "join_group", "group=ops/db")
    watch = subprocess.Popen(
        [HUB_BIN, "watch", "--json"], env=base_env(bob.home, MESHHUB_URL=hub.url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert watch.stdout is not None
        bob.cli(hub.url, "call", "join_group", "group=ops")
        sent = []
        for target, text in [("bob", "dm one"), ("@ops", "group two"), ("*", "broadcast three"),
                             ("bob", "dm four")]:
            out = json.loads(ann.cli(hub.url, "send", target, text, "--json").stdout)
            assert out["recipients"] == ["bob"], out
            sent.append(out["id"])
        seen = []
        while len(seen) < len(sent):
            line = read_line(watch)
            assert line, watch.stderr.read() if watch.stderr else "watch ended"
            frame = json.loads(line)
            if frame["type"] == "message":  # every line is a frame: messages and events
                seen.append(frame["message"])
        assert [m["id"] for m in seen] == sent  # each once, in order
        assert [m["text"] for m in seen] == ["dm one", "group two", "broadcast three",
                                             "dm four"]
        assert {m["from"] for m in seen} == {"ann"}
        assert [m["conversation"] for m in seen] == ["dm", "@ops", "*", "dm"]
        # watch marks a message read before it shows the next: once a last one shows, every
        # message before it is read
        last = json.loads(ann.cli(hub.url, "send", "bob", "last", "--json").stdout)["id"]
        while json.loads(read_line(watch)).get("message", {}).get("id") != last:
            pass
    finally:
        watch.terminate()
        watch.wait(10)

    # the other direction, read through `hub inbox`; then the inbox is empty
    bob.cli(hub.url, "send", "ann", "reply to you")
    inbox = json.loads(ann.cli(hub.url, "inbox", "--json").stdout)
    assert [m["text"] for m in inbox["messages"]] == ["reply to you"]
    assert json.loads(ann.cli(hub.url, "inbox", "--json").stdout)["messages"] == []
    # what watch showed counts as read: it is not unread in bob's inbox, and ann sees it read
    status = json.loads(ann.cli(hub.url, "call", "message_status", f"id={sent[0]}").stdout)
    assert [r["state"] for r in status["recipients"]] == ["read"]
    unread = json.loads(bob.cli(hub.url, "inbox", "--json").stdout)["messages"]
    assert [m["id"] for m in unread] in ([], [last])  # "last" was shown; maybe not marked yet
    shown = json.loads(bob.cli(hub.url, "inbox", "--all", "--json").stdout)
    assert [m["id"] for m in shown["messages"]] == [*sent, last]
    assert shown["unread"] in ([], [last])


async def test_watch_no_read_leaves_messages_unread(hub, people):
    ann, bob = people("ann", "bob")
    bob.cli(hub.url, "peers")  # bob joins the mesh
    watch = subprocess.Popen([HUB_BIN, "watch", "--no-read"],
                             env=base_env(bob.home, MESHHUB_URL=hub.url),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "watching as bob" in read_line(watch)
        sent = json.loads(ann.cli(hub.url, "send", "bob", "keep me unread", "--json").stdout)
        while "keep me unread" not in (line := read_line(watch)):
            assert line, "hub watch ended"
    finally:
        watch.terminate()
        watch.wait(10)
    inbox = bob.cli(hub.url, "inbox").stdout
    assert "ann: keep me unread" in inbox and sent["id"] in inbox


async def test_group_broadcast_skip_sender_and_dm_to_own_other_session(hub, people):
    ann, bob, cat = people("ann", "bob", "cat")
    async with ann.client(hub.url, groups={"team": "lead"}) as a, \
            ann.client(hub.url, session="second", name="ann-laptop") as a2, \
            bob.client(hub.url, groups={"team/db": "member"}) as b, \
            cat.client(hub.url) as c:
        assert a.peer["key"] != a2.peer["key"]  # two sessions of one member: two peers
        r = await a.send("@team", "to the team")
        assert r["recipients"] == ["bob"]  # @team reaches @team/db, skips the sender
        r = await a.send("*", "to everyone")
        assert sorted(r["recipients"]) == ["ann-laptop", "bob", "cat"]
        r = await a.send("ann-laptop", "note to my other session")
        assert r["recipients"] == ["ann-laptop"]
        got = await collect(a2, 2)
        assert [m["text"] for m in got] == ["to everyone", "note to my other session"]
        assert [m["text"] for m in await collect(b, 2)] == ["to the team", "to everyone"]
        assert [m["text"] for m in await collect(c, 1)] == ["to everyone"]
        # a list of targets is deduplicated
        r = await a.send(["bob", "@team", b.peer["key"]], "once only")
        assert r["recipients"] == ["bob"]
        assert [m["text"] for m in await collect(b, 1)] == ["once only"]
        assert await no_message(b)
        assert await no_message(a, 0.2)


async def test_threads_mentions_whispers_and_priorities(hub, people):
    ann, bob, cat = people("ann", "bob", "cat")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b, cat.client(hub.url) as c:
        await a.call("conversation_create", name="design", topic="the design")
        await b.call("conversation_join", name="#design")
        await c.call("conversation_join", name="design")
        root = await a.send("#design", "what do we think, @cat?")
        got_b, got_c = (await collect(b, 1))[0], (await collect(c, 1))[0]
        assert got_b["conversation"] == "#design"
        assert got_c["mentions"] == ["cat"] and got_b["mentions"] == ["cat"]
        # a reply with no target goes to the thread's participants
        reply = await b.send(None, "looks good", reply_to=root["id"])
        assert sorted(reply["recipients"]) == ["ann", "cat"]
        assert (await collect(a, 1))[0]["reply_to"] == root["id"]
        await collect(c, 1)
        # threads are flat: a reply to a reply is refused and nothing is stored
        try:
            await c.send(None, "nested", reply_to=reply["id"])
            raise AssertionError("a reply to a reply was accepted")
        except Exception as exc:
            assert getattr(exc, "code", "") == "reply_to_reply"
            assert root["id"] in str(exc)
        thread = await c.call("thread", root=root["id"])
        assert [m["text"] for m in thread["replies"]] == ["looks good"]
        # a whisper reaches only the named recipients
        w = await a.send("#design", "just for bob", whisper=["bob"])
        assert w["recipients"] == ["bob"]
        assert (await collect(b, 1))[0]["whisper"] == ["bob"]
        assert await no_message(c, 0.3)
        # dnd holds `next` but not `now`; the held message arrives when dnd ends
        await c.set_status("dnd")
        await a.send("cat", "later is fine")
        await a.send("cat", "urgent", priority="now")
        assert [m["text"] for m in await collect(c, 1)] == ["urgent"]
        assert await no_message(c, 0.3)
        await c.set_status("idle")
        assert [m["text"] for m in await collect(c, 1)] == ["later is fine"]


async def test_idempotent_resend_and_read_receipts(hub, people):
    ann, bob = people("ann", "bob")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b:
        first = await a.send("bob", "exactly once", client_id="c-1")
        again = await a.send("bob", "exactly once", client_id="c-1")
        assert again["id"] == first["id"] and again["duplicate"] is True
        assert again["recipients"] == ["bob"]
        # the resend answers with the first send even if its target no longer resolves
        gone = await a.send("bob-who-left", "exactly once", client_id="c-1")
        assert gone["id"] == first["id"] and gone["recipients"] == ["bob"]
        assert (await collect(b, 1, ack=False))[0]["id"] == first["id"]
        assert await no_message(b, 0.3)
        status = await a.message_status(first["id"])
        assert status["recipients"][0]["state"] == "pushed"
        await b.ack(first["id"])
        await b.call("mark_read", ids=[first["id"]])
        status = await a.message_status(first["id"])
        assert status["recipients"][0]["state"] == "read"
        stats = await a.call("hub_stats")
        assert stats["messages"] == 1
        # check counts unread (per sender and thread) and can mark everything seen
        await a.send("bob", "one")
        await a.send("bob", "two", reply_to=first["id"])
        counts = await b.call("check")
        assert counts["total"] == 2 and counts["by_sender"] == {"ann": 2}
        assert counts["by_thread"] == {first["id"]: 1}
        assert (await b.call("check", mark_seen=True))["marked_seen"] == 2
        assert (await b.call("check"))["total"] == 0


async def test_a_peers_text_cannot_drive_the_readers_terminal(hub, people):
    ann, bob = people("ann", "bob")
    bob.cli(hub.url, "peers")  # bob joins the mesh
    hostile = "ok\x1b[2K\x1b[1A\x1b]0;pwned\x07 \u202eevil\n12:00:00 carl: forged"
    async with ann.client(hub.url) as a:
        await a.call("set_summary", summary="busy\x1b[31m red")
        await a.send("bob", hostile)
    shown = bob.cli(hub.url, "inbox").stdout + bob.cli(hub.url, "peers").stdout
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert "ok\\x1b[2K\\x1b[1A\\x1b]0;pwned\\x07 \\u202eevil" in shown  # visible, harmless
    assert "\n    12:00:00 carl: forged" in shown  # a line of the text, not a message line
    assert "busy\\x1b[31m red" in shown


async def test_history_pages_what_each_peer_sent_or_received(hub, people):
    ann, bob, cat = people("ann", "bob", "cat")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b, cat.client(hub.url) as c:
        await a.call("conversation_create", name="plan")
        for peer in (b, c):
            await peer.call("conversation_join", name="plan")
        ids = [(await a.send("#plan", f"plan {i}"))["id"] for i in range(7)]
        secret = (await a.send("#plan", "for bob only", whisper=["bob"]))["id"]
        reply = (await b.send(None, "a reply", reply_to=ids[0]))["id"]
        dm_in = (await b.send("ann", "dm to ann"))["id"]
        dm_out = (await a.send("bob", "dm to bob"))["id"]
        await c.send("ann", "cat's dm")

        newest = await b.call("history", conversation="#plan", limit=3)
        assert [m["id"] for m in newest["messages"]] == [ids[5], ids[6], secret]
        assert newest["more"] and set(newest["unread"]) == {ids[5], ids[6], secret}
        older = await b.call("history", conversation="#plan", before=ids[5], limit=10)
        assert [m["id"] for m in older["messages"]] == ids[:5] and not older["more"]
        assert older["replies"] == {ids[0]: 1}  # the reply itself is left out: top level only
        after = await b.call("history", conversation="#plan", after=ids[4], limit=2)
        assert [m["id"] for m in after["messages"]] == ids[5:7] and after["more"]
        with_replies = await b.call("history", conversation="#plan", top_level_only=False)
        assert reply in [m["id"] for m in with_replies["messages"]]

        cat_sees = await c.call("history", conversation="#plan", limit=50)
        assert secret not in [m["id"] for m in cat_sees["messages"]]  # a whisper stays one
        # a reply whispered to ann alone is counted for ann and bob, not for cat
        await b.send(None, "between us", reply_to=ids[1], whisper=["ann"])
        counts = {who: (await p.call("history", conversation="plan", limit=50))["replies"]
                  for who, p in (("ann", a), ("bob", b), ("cat", c))}
        assert counts["ann"][ids[1]] == counts["bob"][ids[1]] == 1
        assert ids[1] not in counts["cat"] and counts["cat"] == {ids[0]: 1}
        assert (await c.call("thread", root=ids[1]))["replies"] == []
        assert [m["id"] for m in (await a.call("history", conversation="dm:bob"))["messages"]] \
            == [dm_in, dm_out]
        everything = await a.call("history", limit=500)
        assert {dm_in, dm_out, secret, *ids} <= {m["id"] for m in everything["messages"]}
        unread = await a.call("check")
        assert unread["by_conversation"] == {"dm:bob": 1, "dm:cat": 1, "#plan": 2}
        for bad, code in (({"limit": 0}, "invalid_request"),
                          ({"before": ids[1], "after": ids[0]}, "invalid_request"),
                          ({"conversation": "dm:nobody"}, "not_found"),
                          ({"conversation": "nowhere"}, "invalid_request")):
            with pytest.raises(MeshError) as refused:
                await a.call("history", **bad)
            assert refused.value.code == code, bad


async def test_reactions_are_read_back_for_visible_messages_only(hub, people):
    ann, bob, cat = people("ann", "bob", "cat")
    async with ann.client(hub.url) as a, bob.client(hub.url) as b, cat.client(hub.url) as c:
        first = (await a.send("bob", "first"))["id"]
        second = (await a.send("bob", "second"))["id"]
        await b.call("react", id=first, emoji="👍")
        await a.call("react", id=first, emoji="👍")
        await b.call("react", id=second, emoji="👀")
        assert await a.call("reactions", ids=[first, second, "nope"]) == {
            first: {"👍": ["bob", "ann"]}, second: {"👀": ["bob"]}}
        assert await c.call("reactions", ids=[first, second]) == {}  # not cat's to see
        with pytest.raises(MeshError):
            await a.call("reactions", ids=[first] * 201)
