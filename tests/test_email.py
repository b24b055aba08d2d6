"""The email gateway end to end: real aiosmtplib clients mail the hub's aiosmtpd listener on
127.0.0.1, and what the mesh sends people goes out through a capturing aiosmtpd relay
(tests/fakes/smtp_relay.py): pairing by mail, threads both ways (also when a client drops
In-Reply-To), refusals at SMTP time, hostile MIME, a relay that refuses, approvals by reply."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest

from meshhub.bridge.pairing import PairingBook

from .email_support import DOMAIN, mail, reply_to
from .helpers import collect, eventually, make_identity, no_message

ANN = "ann@example.com"


async def _messages(served: Any) -> int:
    return int((await served.hub.store.stats())["messages"])


async def test_a_paired_person_mails_an_agent_and_the_thread_comes_back(email_hub, tmp_path):
    served = await email_hub()
    relay = served.relay
    welcome = await served.pair(ANN, "Ann Lee")
    assert "Ann" in str(welcome.message["Subject"])
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent") as a:
        first = mail(ANN, f"agent@{DOMAIN}", (
            "Can I deploy 1.4 today?\n\nThanks,\nAnn\n\n"
            "On Fri, 4 Dec 2026 at 09:00, carl <carl@mesh.test> wrote:\n> old question\n"),
            subject="Deploy 1.4")
        answer = await served.send(first)
        assert answer[1].startswith("2.0.0 sent to"), answer
        got = (await collect(a, 1))[0]
        assert got["text"].startswith("**Deploy 1.4**")
        assert "Can I deploy 1.4 today?" in got["text"]
        assert "old question" not in got["text"] and "Thanks" not in got["text"]

        await a.send(None, "Yes, go ahead.", reply_to=got["id"])
        out = await relay.wait_for("mail", lambda c: "go ahead" in c["message"].get_body(
            ("plain",)).get_content())
        sent: EmailMessage = out["message"]
        assert out["to"] == [ANN]
        assert sent["In-Reply-To"] == str(first["Message-ID"])
        assert str(first["Message-ID"]) in str(sent["References"])
        assert str(sent["Subject"]) == "Re: Deploy 1.4"
        assert str(sent["Reply-To"]).startswith("reply+")
        assert str(sent["Message-ID"]).startswith("<mesh.")
        captured = out["captured"]

        await served.send(reply_to(captured, ANN, "Thanks, deploying now."))
        again = (await collect(a, 1))[0]
        assert again["reply_to"] == got["id"] and again["text"] == "Thanks, deploying now."
        assert "go ahead" not in again["text"]

        # a client that drops In-Reply-To and References: the reply address is enough
        await served.send(reply_to(captured, ANN, "Done.", keep_headers=False))
        third = (await collect(a, 1))[0]
        assert third["reply_to"] == got["id"] and third["text"] == "Done."


async def test_strangers_and_unknown_addresses_are_refused_before_data(email_hub, tmp_path):
    served = await email_hub()
    before = await _messages(served)
    stranger = await served.refused(mail("eve@evil.example", f"agent@{DOMAIN}"))
    assert stranger.startswith("550") and "not paired" in stranger and "hub pair email" in stranger
    await served.pair(ANN)
    unknown = await served.refused(mail(ANN, f"nobody@{DOMAIN}"))
    assert unknown.startswith("550") and "no peer, conversation or group named 'nobody'" in unknown
    other_domain = await served.refused(mail(ANN, "agent@elsewhere.example"))
    assert other_domain.startswith("550") and f"@{DOMAIN} only" in other_domain
    forged = await served.refused(mail(ANN, f"reply+{'a' * 26}@{DOMAIN}"))
    assert forged.startswith("550") and "reply address" in forged
    spoofed_from = await served.refused(mail("eve@evil.example", f"general@{DOMAIN}"),
                                        sender=ANN)
    assert spoofed_from.startswith("550") and "From header" in spoofed_from
    assert await _messages(served) == before


async def test_hostile_and_odd_mail_gets_a_clear_answer_and_the_listener_stays(email_hub,
                                                                               tmp_path):
    served = await email_hub(max_message_bytes=64 * 1024)
    await served.pair(ANN)
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent") as a:
        # malformed MIME: a multipart with no part at all, then one cut off mid-attachment
        empty = (f"From: {ANN}\r\nTo: agent@{DOMAIN}\r\nSubject: x\r\nMessage-ID: <b1@x>\r\n"
                 "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                 "--b--\r\n").encode()
        refused = await served.refused(empty, sender=ANN, to=[f"agent@{DOMAIN}"])
        assert refused.startswith("550 5.6.0") and "no readable text" in refused
        cut = (f"From: {ANN}\r\nTo: agent@{DOMAIN}\r\nSubject: x\r\nMessage-ID: <b2@x>\r\n"
               "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
               "--b\r\nContent-Type: text/plain\r\n\r\nhalf a mail\r\n--b\r\n"
               "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
               "Content-Disposition: attachment; filename=x.pdf\r\n\r\nJVBER!!").encode()
        await served.send(cut, sender=ANN, to=[f"agent@{DOMAIN}"])
        got = (await collect(a, 1))[0]
        assert "half a mail" in got["text"] and got["attachments"][0]["name"] == "x.pdf"
        # over the size limit
        big = mail(ANN, f"agent@{DOMAIN}", "x" * (80 * 1024))
        assert (await served.refused(big)).startswith("552")
        # a CR/LF injection in the subject and the name, through RFC 2047 words
        injected = (f"From: =?utf-8?q?Ann=0D=0ABcc=3A_victim=40x=2Eexample?= <{ANN}>\r\n"
                    f"To: agent@{DOMAIN}\r\nMessage-ID: <inj1@x>\r\n"
                    "Subject: =?utf-8?q?hello=0D=0ABcc=3A_victim=40x=2Eexample?=\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n\r\nbody here\r\n").encode()
        await served.send(injected, sender=ANN, to=[f"agent@{DOMAIN}"])
        got = (await collect(a, 1))[0]
        assert "\r" not in got["text"].split("\n\n")[0] and "body here" in got["text"]
        await a.send(None, "answer", reply_to=got["id"])
        out = await served.relay.wait_for("mail", lambda c: "answer" in str(
            c["message"].get_body(("plain",)).get_content()))
        raw = out["captured"].raw
        assert b"\nBcc:" not in raw and b"\nbcc:" not in raw.lower()
        assert out["to"] == [ANN]
        # a non-UTF-8 charset
        latin = (f"From: {ANN}\r\nTo: agent@{DOMAIN}\r\nSubject: =?iso-8859-1?q?Caf=E9?=\r\n"
                 "Message-ID: <l1@x>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
                 "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + "Crème brûlée à "\
            "volonté\r\n".encode("iso-8859-1")
        await served.send(latin, sender=ANN, to=[f"agent@{DOMAIN}"])
        got = (await collect(a, 1))[0]
        assert "Café" in got["text"] and "Crème brûlée à volonté" in got["text"]
        # an HTML-only mail
        html = EmailMessage()
        html["From"], html["To"], html["Subject"] = ANN, f"agent@{DOMAIN}", "report"
        html["Message-ID"] = "<h1@x>"
        html.set_content("<html><head><style>p{color:red}</style><script>alert(1)</script>"
                         "</head><body><p>The build is <b>green</b>.</p>"
                         "<img src='https://track.example/p.gif' width=1></body></html>",
                         subtype="html")
        await served.send(html)
        got = (await collect(a, 1))[0]
        assert "The build is **green**." in got["text"]
        assert "alert" not in got["text"] and "color" not in got["text"]
        assert "track.example" not in got["text"]
        # the listener still takes ordinary mail
        await served.send(mail(ANN, f"agent@{DOMAIN}", "still here"))
        assert "still here" in (await collect(a, 1))[0]["text"]


async def test_the_relay_refusing_twice_then_accepting_delivers_exactly_once(email_hub,
                                                                             tmp_path):
    served = await email_hub()
    await served.pair(ANN)
    relay = served.relay
    relay.refuse_next(2)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        sent = await c.send("ann", "are you there?")
        await relay.wait_for("mail", lambda m: "are you there" in str(
            m["message"].get_body(("plain",)).get_content()))

        async def delivered() -> bool:
            status = await c.call("message_status", id=sent["id"])
            return all(r["state"] in ("delivered", "read") for r in status["recipients"])

        await eventually(delivered)
    refused = [m for m in relay.calls if m["method"] == "mail" and not m["ok"]]
    taken = [m for m in relay.of("mail") if "are you there" in str(
        m["message"].get_body(("plain",)).get_content())]
    assert len(refused) == 2 and len(taken) == 1


async def test_an_approval_is_answered_by_a_mail_reply(email_hub, tmp_path):
    served = await email_hub()
    await served.pair(ANN, "ann")
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        request = await c.call("approval_request", to="ann", question="deploy 1.4 to prod?")
        out = await served.relay.wait_for("mail", lambda m: "deploy 1.4" in str(m["subject"]))
        text = out["message"].get_body(("plain",)).get_content()
        assert "approve" in text and "deny" in text
        captured = out["captured"]
        await served.send(reply_to(captured, ANN, "approve\nlooks fine to me",
                                   keep_headers=False))
        answer = (await collect(c, 1))[0]
        assert answer["kind"] == "approval_answer" and answer["data"]["answer"] == "approve"
        got = await c.call("approval_get", id=request["id"])
        assert got["state"] == "answered" and got["reason"] == "looks fine to me"


async def test_conversations_groups_allow_list_and_revocation(email_hub, tmp_path):
    served = await email_hub(allow="@example.com")
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url, groups={"ops": "member"}) as c:
        await c.call("conversation_join", name="#general")
        first = mail(ANN, f"general@{DOMAIN}", "hello all", subject="")
        await served.send(first)
        got = (await collect(c, 1))[0]
        assert got["conversation"] == "#general" and got["text"] == "hello all"
        assert got["data"] == {"email": {"message_id": str(first["Message-ID"]).strip("<>")}}
        follow_up = mail(ANN, f"general@{DOMAIN}", "and one more thing", subject="Re: hello",
                         In_Reply_To=str(first["Message-ID"]))
        await served.send(follow_up)  # answering her own mail: the same thread
        assert (await collect(c, 1))[0]["reply_to"] == got["id"]
        await served.send(mail(ANN, f"group+ops@{DOMAIN}", "ops, look", subject=""))
        assert (await collect(c, 1))[0]["text"] == "ops, look"
        async with served.owner.client(served.url, receive=False) as owner:
            await owner.call("pair_revoke", who="email:" + ANN)
        revoked = await served.refused(mail(ANN, f"general@{DOMAIN}", "again"))
        assert revoked.startswith("550") and "not paired" in revoked
        assert await no_message(c)


async def test_the_same_mail_twice_is_stored_once_and_auto_replies_are_dropped(email_hub,
                                                                              tmp_path):
    served = await email_hub(allow=ANN)
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent") as a:
        once = mail(ANN, f"agent@{DOMAIN}", "only once")
        await served.send(once)
        await served.send(once)  # a sending server that lost our 250 tries again
        await collect(a, 1)
        assert await no_message(a)
        away = mail(ANN, f"agent@{DOMAIN}", "I am away", Auto_Submitted="auto-replied")
        answer = await served.send(away)
        assert "automatic" in answer[1]
        assert await no_message(a)


async def test_attachments_go_both_ways(email_hub, tmp_path):
    served = await email_hub(allow=ANN)
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent") as a:
        with_file = mail(ANN, f"agent@{DOMAIN}", "the log")
        with_file.add_attachment(b"line 1\nline 2\n", maintype="text", subtype="plain",
                                 filename="../../build.log")
        await served.send(with_file)
        got = (await collect(a, 1))[0]
        assert [f["name"] for f in got["attachments"]] == ["build.log"]
        stored = await a.call("file_get", id=got["attachments"][0]["file"])
        assert stored["name"] == "build.log"
        await a.call("file_put", name="fix.patch", content="ZGlmZgo=", to="ann",
                     text="here is the fix")
        out = await served.relay.wait_for("mail", lambda m: "the fix" in str(
            m["message"].get_body(("plain",)).get_content()))
        files = [(p.get_filename(), p.get_payload(decode=True))
                 for p in out["message"].iter_attachments()]
        assert files == [("fix.patch", b"diff\n")]


async def test_digest_mode_batches_but_approvals_go_at_once(email_hub, tmp_path):
    served = await email_hub(allow=ANN, digest_minutes=0.02)  # about a second
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await served.send(mail(ANN, f"carl@{DOMAIN}", "hi carl"))
        await collect(c, 1)
        for i in range(3):
            await c.send("ann", f"note {i}")
        await c.call("approval_request", to="ann", question="ship it?")
        urgent = await served.relay.wait_for("mail", lambda m: "ship it" in str(m["subject"]))
        digest = await served.relay.wait_for("mail", lambda m: "3 new messages" in str(
            m["subject"]), timeout=20)
        text = digest["message"].get_body(("plain",)).get_content()
        assert all(f"note {i}" in text for i in range(3))
        assert urgent["message"]["X-Meshhub-Digest"] is None


@pytest.mark.parametrize("verdict", ["pass", "fail"])
async def test_a_trusted_mta_verdict_is_required(email_hub, tmp_path, verdict):
    served = await email_hub(allow=ANN, trusted_authserv="mx.mesh.test")
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent"):
        message = mail(ANN, f"agent@{DOMAIN}", "verified?",  # a From long enough to fold
                       name="Ann Example who leads the release engineering group in Berlin")
        message["Authentication-Results"] = (
            f"mx.mesh.test; spf=pass smtp.mailfrom=example.com; dmarc={verdict} "
            "header.from=example.com")
        if verdict == "pass":
            await served.send(message)
        else:
            refused = await served.refused(message)
            assert refused.startswith("550") and "could not be verified" in refused
        unvouched = mail(ANN, f"agent@{DOMAIN}", "no header")
        assert "could not be verified" in await served.refused(unvouched)


async def test_starttls_and_auth_on_the_listener(email_hub, tmp_path):
    from .fakes.tls import make_tls

    tls = make_tls(tmp_path / "tls")
    served = await email_hub(allow=ANN, tls_cert=str(tls.cert_file), tls_key=str(tls.key_file),
                             auth_user="mta", auth_password="s3cret")
    message = mail(ANN, f"agent@{DOMAIN}", "over tls")
    with pytest.raises(aiosmtplib.SMTPException):
        await served.send(message, start_tls=False)  # AUTH is wanted, and only over TLS
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await served.send(message, start_tls=True, tls_context=tls.client, username="mta",
                          password="wrong")
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent") as a:
        await served.send(message, start_tls=True, tls_context=tls.client, username="mta",
                          password="s3cret")
        assert (await collect(a, 1))[0]["text"].endswith("over tls")


async def test_no_relay_means_a_clear_dead_delivery(email_hub, tmp_path):
    served = await email_hub(allow=ANN, relay="")
    async with served.owner.client(served.url) as owner:
        await served.send(mail(ANN, f"owner@{DOMAIN}", "hello owner"))
        got = (await collect(owner, 1))[0]
        sent = await owner.send(None, "thanks", reply_to=got["id"])

        async def dead() -> Any:
            status = await owner.call("message_status", id=sent["id"])
            return [r for r in status["recipients"] if r["state"] == "dead"]

        reasons = await eventually(dead)
        assert "no relay" in reasons[0]["reason"]


async def test_mail_out_over_starttls_with_a_login_and_a_refusing_or_lossy_relay(email_hub,
                                                                                 tmp_path):
    from .fakes.smtp_relay import FakeRelay
    from .fakes.tls import make_tls

    tls = make_tls(tmp_path / "tls")
    async with FakeRelay(starttls=tls.server, users={"hub": "relay-pass"}) as secure:
        served = await email_hub(allow=ANN, relay_ca=str(tls.ca_file), **secure.settings())
        carl = make_identity(tmp_path, "carl")
        async with carl.client(served.url) as c:
            await served.send(mail(ANN, f"carl@{DOMAIN}", "hi"))  # Ann is a peer from now on
            await collect(c, 1)
            secure.lose_next()  # taken, but the answer never comes: it is sent again
            await c.send("ann", "first")
            copies = [await secure.wait_for("mail", lambda m: "first" in str(
                m["captured"].text()), count=n) for n in (1, 2)]
            assert copies[0]["message"]["Message-ID"] == copies[1]["message"]["Message-ID"]
            assert [a for a in secure.calls if a["method"] == "auth"][0]["ok"]

            secure.refuse_recipient(ANN, 550, "5.1.1 mailbox gone")
            refused = await c.send("ann", "second")

            async def dead() -> Any:
                status = await c.call("message_status", id=refused["id"])
                return [r for r in status["recipients"] if r["state"] == "dead"]

            reasons = await eventually(dead)
            assert "550 5.1.1 mailbox gone" in reasons[0]["reason"]


async def test_a_busy_listen_port_is_a_clear_failure(email_hub, tmp_path):
    import socket

    from meshhub.config import init_home, load_config
    from meshhub.hub import Hub
    from meshhub.server import serve

    from .helpers import HOST, free_port

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        home = tmp_path / "busy"
        init_home(home, "owner")
        cfg = load_config(home)
        cfg.raw["email"] = {"domain": DOMAIN, "listen": f"{HOST}:{taken.getsockname()[1]}"}
        hub = Hub(cfg)
        runner, _port = await serve(hub, HOST, free_port())
        try:
            state = hub.connector_states.get("email")
            assert state is not None
            assert state.state == "failed" and "cannot listen for mail" in state.detail
        finally:
            await runner.cleanup()


async def test_forged_allow_listed_senders_leave_no_trace(email_hub, tmp_path):
    served = await email_hub(allow="@example.com", trusted_authserv="mx.mesh.test")
    book = PairingBook.of(served.hub)
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent") as a:
        for i in range(3):  # no verdict of the trusted MTA: refused at DATA, nothing made
            refused = await served.refused(mail(f"forged{i}@example.com", f"agent@{DOMAIN}"))
            assert refused.startswith("550 5.7.23") and "could not be verified" in refused
        # nor does RCPT tell such a sender which names exist, or who is paired: every address
        # is taken until DATA, where the MTA's verdict is read
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=served.smtp_port) as smtp:
            await smtp.mail("eve@evil.example")
            for address in (f"agent@{DOMAIN}", f"nobody@{DOMAIN}"):
                assert (await smtp.rcpt(address)).code == 250
            with pytest.raises(aiosmtplib.SMTPDataError) as refused_data:
                await smtp.data(bytes(mail("eve@evil.example", f"nobody@{DOMAIN}")))
            assert "could not be verified" in refused_data.value.message
        assert await no_message(a)
    assert not [p for p in served.hub.directory.peers.values() if p.connector == "email"]
    assert not await book.listing("email")


async def test_an_allow_listed_newcomer_writing_to_nobody_leaves_nothing(email_hub, tmp_path):
    served = await email_hub(allow="@example.com")
    refused = await served.refused(mail("newbie@example.com", f"nobody@{DOMAIN}"))
    assert refused.startswith("550 5.1.1") and "named 'nobody'" in refused
    assert "email:newbie@example.com" not in served.hub.directory.by_identity
    assert not await PairingBook.of(served.hub).listing("email")


async def test_pair_mail_is_closed_without_a_code_and_spam_spends_nothing(email_hub, tmp_path):
    served = await email_hub()
    closed = await served.refused(mail(ANN, f"pair@{DOMAIN}", "hello", subject="join?"))
    assert closed.startswith("550") and "no pairing is open" in closed
    async with served.owner.client(served.url, receive=False) as owner:
        code = (await owner.call("pair_create", connector="email", new_person=True))["code"]
    for _ in range(6):  # more than a code's attempts: words are never taken for a code
        spam = await served.refused(mail("spam@evil.example", f"pair@{DOMAIN}",
                                         "QUESTION ABOUTYOU", subject="Business proposal"))
        assert "no pairing code" in spam
    served.relay.refuse_next(1, 554, "5.7.1 not now")  # no confirmation: the code is given back
    down = await served.refused(mail(ANN, f"pair@{DOMAIN}", "please", subject=f"code {code}"))
    assert down.startswith("554") and "still works" in down
    await served.send(mail(ANN, f"pair@{DOMAIN}", "please", subject=f"my code: {code.lower()}"))
    confirm = await served.relay.wait_for("mail", lambda c: "Confirm" in str(c["subject"]))
    await served.send(mail(ANN, str(confirm["message"]["Reply-To"]), "yes"))
    await served.relay.wait_for("mail", lambda c: "You are" in str(c["subject"]))
    assert PairingBook.of(served.hub).peer_for("email:" + ANN) is not None


async def test_threads_resends_and_answered_approvals(email_hub, tmp_path):
    served = await email_hub(allow=ANN)
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent") as a:
        await served.send(mail(ANN, f"agent@{DOMAIN}", "start", subject="Build"))
        root = (await collect(a, 1))[0]
        first = await a.send(None, "one", reply_to=root["id"])
        await a.send(None, "two", reply_to=root["id"])
        out = await served.relay.wait_for("mail", lambda c: "two" in c["captured"].text())
        assert str(out["message"]["Subject"]) == "Re: Build"
        # a client answering the second reply names it: the answer lands in the thread
        answer = mail(ANN, f"agent@{DOMAIN}", "thanks", In_Reply_To=str(
            out["message"]["Message-ID"]))
        await served.send(answer)
        assert (await collect(a, 1))[0]["reply_to"] == root["id"]
        assert first["id"] != root["id"]
        # a mail without a Message-ID, sent twice by a server that lost the 250: stored once
        bare = (f"From: {ANN}\r\nTo: agent@{DOMAIN}\r\nSubject: x\r\n\r\nno id here\r\n"
                ).encode()
        await served.send(bare, sender=ANN, to=[f"agent@{DOMAIN}"])
        await served.send(bare, sender=ANN, to=[f"agent@{DOMAIN}"])
        assert "no id here" in (await collect(a, 1))[0]["text"]
        assert await no_message(a)
        # an approval answered by mail, the answer sent again: told, not bounced
        request = await a.call("approval_request", to="ann", question="merge?")
        card = await served.relay.wait_for("mail", lambda c: "merge?" in str(c["subject"]))
        yes = reply_to(card["captured"], ANN, "approve")
        await served.send(yes)
        again = await served.send(yes)
        assert "answered already: approve" in again[1]
        late = await served.refused(reply_to(card["captured"], ANN, "deny"))
        assert late.startswith("550") and "your deny was not applied" in late
        assert (await a.call("approval_get", id=request["id"]))["answer"] == "approve"


async def test_a_revoked_person_gets_no_digest(email_hub, tmp_path):
    served = await email_hub(allow=ANN, digest_minutes=0.02)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await served.send(mail(ANN, f"carl@{DOMAIN}", "hi carl"))
        await collect(c, 1)
        served.connector.settings.digest_minutes = 60.0  # hold the digest back for now
        sent = await c.send("ann", "for your digest")

        async def queued() -> bool:  # the delivery is acked once the digest holds it
            status = await c.call("message_status", id=sent["id"])
            return status["recipients"][0]["state"] == "delivered"

        await eventually(queued)
        async with served.owner.client(served.url, receive=False) as owner:
            await owner.call("pair_revoke", who="email:" + ANN)
        served.connector.settings.digest_minutes = 0.0001
        await served.connector.send_digests()
        status = await c.call("message_status", id=sent["id"])
        assert status["recipients"][0]["state"] == "dead"
        assert "revoked" in status["recipients"][0]["reason"]
    assert not [m for m in served.relay.of("mail") if "for your digest" in m["captured"].text()]


def _report(message_id: str, recipient: str, action: str) -> bytes:
    """A delivery report (RFC 3464) as a relay writes one about a mail the gateway sent."""
    return (f"From: MAILER-DAEMON@relay.example\r\nTo: meshhub@{DOMAIN}\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;"
            " boundary=r\r\n\r\n--r\r\nContent-Type: text/plain\r\n\r\nIt did not work.\r\n"
            "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay\r\n"
            f"\r\nFinal-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 mailbox gone\r\n--r\r\n"
            f"Content-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n"
            f"To: {recipient}\r\n--r--\r\n").encode()


async def test_a_bounce_marks_the_delivery_dead_and_a_delay_does_not(email_hub, tmp_path):
    served = await email_hub(allow=ANN)
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await served.send(mail(ANN, f"carl@{DOMAIN}", "hi"))
        await collect(c, 1)
        sent = await c.send("ann", "to a mailbox that is gone")
        out = await served.relay.wait_for("mail", lambda m: "gone" in m["captured"].text())
        message_id = str(out["message"]["Message-ID"])

        async def state() -> str:
            status = await c.call("message_status", id=sent["id"])
            return str(status["recipients"][0]["state"])

        await eventually(lambda: _is(state, "delivered"))
        delayed = await served.report(_report(message_id, ANN, "delayed"), f"meshhub@{DOMAIN}")
        assert "0 deliveries" in delayed.message and await state() == "delivered"
        await served.report(_report(message_id, ANN, "failed"), f"meshhub@{DOMAIN}")
        status = await c.call("message_status", id=sent["id"])
        assert status["recipients"][0]["state"] == "dead"
        assert "bounced: 550 5.1.1 mailbox gone" in status["recipients"][0]["reason"]
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as elsewhere:
            await served.report(_report(message_id, ANN, "failed"), f"carl@{DOMAIN}")
        assert elsewhere.value.code == 550 and "delivery reports" in elsewhere.value.message


async def _is(read: Any, wanted: str) -> bool:
    return bool(await read() == wanted)


@pytest.mark.parametrize("limits, refusal", [((3, 2), "too many connections from your"),
                                              ((2, 5), "the gateway is busy")])
async def test_the_listener_serves_a_bounded_number_of_sessions(email_hub, tmp_path, limits,
                                                                refusal):
    served = await email_hub(allow=ANN, max_sessions=limits[0],
                             max_sessions_per_address=limits[1])
    held = [aiosmtplib.SMTP(hostname="127.0.0.1", port=served.smtp_port) for _ in range(2)]
    for client in held:
        await client.connect()
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as third:
        await aiosmtplib.SMTP(hostname="127.0.0.1", port=served.smtp_port).connect()
    assert third.value.code == 421 and refusal in third.value.message
    await held[0].quit()  # one leaves: room again, and mail goes through
    await eventually(lambda: _gate_below(served, 2))
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent") as a:
        await served.send(mail(ANN, f"agent@{DOMAIN}", "made it"))
        assert "made it" in (await collect(a, 1))[0]["text"]
    await held[1].quit()


async def _gate_below(served: Any, n: int) -> bool:
    return bool(served.connector.gate.total < n)


async def test_pair_create_says_where_to_mail_the_code(email_hub, tmp_path):
    served = await email_hub()
    async with served.owner.client(served.url, receive=False) as owner:
        made = await owner.call("pair_create", connector="email")
    assert f"mail the code {made['code']} (in the subject) to pair@{DOMAIN}" in made["how"]
    assert "warning" not in made


async def test_threading_holds_for_every_reader_and_reports_need_the_right_tag(email_hub,
                                                                              tmp_path):
    served = await email_hub(allow="@example.com")
    relay = served.relay
    carl = make_identity(tmp_path, "carl")
    async with carl.client(served.url) as c:
        await c.call("conversation_join", name="#general")
        bob = mail("bob@example.com", f"general@{DOMAIN}", "bob here", subject="")
        await served.send(bob)  # Bob joins the mesh (and #general) by writing to it
        await collect(c, 1)
        first = mail(ANN, f"general@{DOMAIN}", "numbers?", subject="Re: Budget 2027")
        await served.send(first)
        root = (await collect(c, 1))[0]
        await c.send(None, "here they are", reply_to=root["id"])
        to_ann = await relay.wait_for("mail", lambda m: m["to"] == [ANN] and "here they" in
                                      m["captured"].text())
        to_bob = await relay.wait_for("mail", lambda m: m["to"] == ["bob@example.com"] and
                                      "here they" in m["captured"].text())
        assert to_ann["message"]["In-Reply-To"] == str(first["Message-ID"])
        assert str(to_ann["message"]["Subject"]) == "Re: Budget 2027"
        assert str(to_bob["message"]["In-Reply-To"]).startswith("<mesh." + root["id"] + ".")
        assert str(to_bob["message"]["Subject"]).startswith("Re: [#general] ")
        assert to_ann["message"]["Message-ID"] != to_bob["message"]["Message-ID"]

        # a report about Bob's copy, naming the root in References, marks only that copy;
        # one with another person's tag, or about a mail never sent to them, marks nothing
        reply_id = str(to_bob["message"]["Message-ID"])
        root_to_bob = str(to_bob["message"]["In-Reply-To"])

        async def states() -> dict[str, str]:
            status = await c.call("message_status", id=reply_id.split(".")[1])
            return {r["name"]: r["state"] for r in status["recipients"]}

        await eventually(lambda: _all_delivered(states))
        forged = reply_id.replace(reply_id.split(".")[2].split("@")[0], "0" * 20)
        at = f"meshhub@{DOMAIN}"
        for wrong in (_report(forged, "bob@example.com", "failed"),
                      _report(reply_id, ANN, "failed")):
            assert "0 deliveries" in (await served.report(wrong, at)).message
        report = _report(reply_id, "bob@example.com", "failed").replace(
            b"Message-ID:", b"References: " + root_to_bob.encode() + b"\r\nMessage-ID:")
        assert "1 deliveries" in (await served.report(report, at)).message
        assert await states() == {"ann": "delivered", "bob": "dead"}
        assert all(d.state != "dead" for d in await served.hub.store.deliveries_of(root["id"]))


async def test_two_from_headers_and_long_utf8_senders(email_hub, tmp_path):
    served = await email_hub(allow="@example.com")
    agent = make_identity(tmp_path, "agent")
    async with agent.client(served.url, kind="agent") as a:
        twice = (f"From: {ANN}\r\nFrom: eve@example.com\r\nTo: agent@{DOMAIN}\r\n"
                 "Subject: x\r\n\r\nwho am I\r\n").encode()
        refused = await served.refused(twice, sender=ANN, to=[f"agent@{DOMAIN}"])
        assert refused.startswith("550") and "From header (none)" in refused
        long_mail = mail("jörg@example.com", f"agent@{DOMAIN}", "lang " * 5000)
        await served.send(long_mail)  # over the size whose headers are read first
        got = (await collect(a, 1))[0]
        assert got["text"].startswith("**hi**\n\nlang lang")
        assert served.hub.directory.by_identity["email:jörg@example.com"] == got["from_key"]


async def _all_delivered(states: Any) -> bool:
    found = await states()
    return bool(found) and all(state == "delivered" for state in found.values())


@pytest.mark.parametrize("settings, says", [
    ({"digest_minutes": "soon"}, "digest_minutes must be a number"),
    ({"max_sessions": 0}, "max_sessions and max_sessions_per_address must be at least 1"),
    ({"listen": "nowhere:port"}, "listen must be host:port"),
    ({"auth_user": "mta", "auth_password": "x"}, "auth_user needs tls_cert"),
    ({"relay_tls": "maybe"}, "relay_tls must be one of starttls, tls, none"),
])
def test_a_wrong_setting_says_what_to_fix(tmp_path, settings, says):
    from meshhub.config import load_config
    from meshhub_email.settings import EmailSettings, SettingsError

    from .helpers import owner_home

    config = load_config(owner_home(tmp_path))
    config.raw["email"] = {"domain": DOMAIN, **settings}
    with pytest.raises(SettingsError, match=says):
        EmailSettings.load(config)


async def test_racing_first_uses_agree_on_one_token_and_one_secret(inproc):
    from meshhub_email.state import SECRET, SECRET_KEY, EmailState

    records = (await inproc()).hub.records
    state = EmailState(records)
    tokens = await asyncio.gather(*(state.token_for("ann", "m-root") for _ in range(5)))
    assert len(set(tokens)) == 1
    assert await state.thread_of(tokens[0]) == ("ann", "m-root")
    assert await records.count("email_tokens") == 1
    await records.delete(SECRET.name, SECRET_KEY)
    secrets = await asyncio.gather(*(state.secret() for _ in range(3)))
    assert len(set(secrets)) == 1 and len(secrets[0]) == 32
