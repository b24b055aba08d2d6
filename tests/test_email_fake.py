"""The fake SMTP relay speaks SMTP as the real aiosmtplib client expects it: kept mails,
scripted refusals and losses, STARTTLS with AUTH, implicit TLS and reused connections."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from .fakes.smtp_relay import FakeRelay
from .fakes.tls import TestTLS, make_tls

SENDER = "hub@mesh.test"
ADA = "ada@example.com"


def mail(body: str = "hello\n", to: str = ADA, subject: str = "greeting") -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def plain(relay: FakeRelay, **options: Any) -> aiosmtplib.SMTP:
    """A client of ``relay`` that does not upgrade to TLS."""
    return aiosmtplib.SMTP(hostname=relay.host, port=relay.port, start_tls=False, **options)


@pytest.fixture
async def relay() -> AsyncIterator[FakeRelay]:
    async with FakeRelay() as fake:
        yield fake


@pytest.fixture
def tls(tmp_path: Path) -> TestTLS:
    return make_tls(tmp_path / "tls")


async def test_a_sent_mail_is_captured(relay: FakeRelay) -> None:
    errors, reply = await aiosmtplib.send(mail("hello ada\n"), hostname=relay.host,
                                          port=relay.port, start_tls=False)

    assert errors == {} and reply.startswith("2.0.0")
    [kept] = relay.mails
    assert (kept.mail_from, kept.rcpt_tos) == (SENDER, [ADA])
    assert kept.text() == "hello ada\n" and kept.message["Subject"] == "greeting"
    call = await relay.wait_for("mail")
    assert (call["code"], call["to"], call["mail_from"]) == (250, [ADA], SENDER)
    assert call["subject"] == "greeting" and call["message"]["To"] == ADA
    assert relay.settings() == {"relay": f"127.0.0.1:{relay.port}", "relay_tls": "none"}


async def test_refused_mails_are_not_kept_until_the_refusals_run_out(relay: FakeRelay) -> None:
    relay.refuse_next(2)
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await aiosmtplib.send(mail(), hostname=relay.host, port=relay.port, start_tls=False)
        assert refused.value.code == 451 and "try again later" in refused.value.message

    await aiosmtplib.send(mail(), hostname=relay.host, port=relay.port, start_tls=False)

    assert len(relay.mails) == 1
    assert [(c["ok"], c["code"]) for c in relay.calls if c["method"] == "mail"] == [
        (False, 451), (False, 451), (True, 250)]


async def test_a_refused_recipient_is_refused_every_time(relay: FakeRelay) -> None:
    relay.refuse_recipient("nobody@example.com")
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await aiosmtplib.send(mail(to="nobody@example.com"), hostname=relay.host,
                                  port=relay.port, start_tls=False)
        [error] = refused.value.recipients
        assert error.code == 550 and "no such user" in error.message

    errors, _ = await aiosmtplib.send(mail(), hostname=relay.host, port=relay.port,
                                      start_tls=False,
                                      recipients=[ADA, "nobody@example.com"])

    assert errors["nobody@example.com"].code == 550
    assert [m.rcpt_tos for m in relay.mails] == [[ADA]]


async def test_a_lost_answer_still_keeps_the_mail(relay: FakeRelay) -> None:
    relay.lose_next()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await aiosmtplib.send(mail("maybe\n"), hostname=relay.host, port=relay.port,
                              start_tls=False)

    await aiosmtplib.send(mail("surely\n"), hostname=relay.host, port=relay.port,
                          start_tls=False)

    assert [m.text() for m in relay.mails] == ["maybe\n", "surely\n"]
    assert [c["ok"] for c in relay.calls if c["method"] == "mail"] == [True, True]


async def test_starttls_and_auth(tls: TestTLS) -> None:
    async with FakeRelay(starttls=tls.server, users={"hub": "secret"}) as relay:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await aiosmtplib.send(mail(), hostname=relay.host, port=relay.port,
                                  tls_context=tls.client, username="hub", password="wrong")
        await aiosmtplib.send(mail("secret\n"), hostname=relay.host, port=relay.port,
                              tls_context=tls.client, username="hub", password="secret")

        attempts = [(c["ok"], c["user"]) for c in relay.calls if c["method"] == "auth"]
        assert attempts[0] == (False, "hub") and attempts[-1] == (True, "hub")
        assert len(relay.of("auth")) == 1
        assert [m.text() for m in relay.mails] == ["secret\n"]
        assert relay.settings() == {"relay": f"127.0.0.1:{relay.port}", "relay_tls": "starttls",
                                    "relay_user": "hub", "relay_password": "secret"}


async def test_auth_and_mail_without_tls_are_refused(tls: TestTLS) -> None:
    async with FakeRelay(starttls=tls.server, users={"hub": "secret"}) as relay:
        with pytest.raises(aiosmtplib.SMTPException, match="AUTH extension is not supported"):
            await aiosmtplib.send(mail(), hostname=relay.host, port=relay.port,
                                  start_tls=False, username="hub", password="secret")
        async with plain(relay) as client:
            login = base64.b64encode(b"\0hub\0secret")
            reply = await client.execute_command(b"AUTH", b"PLAIN", login)
            assert reply.code == 530
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await client.send_message(mail())
            assert refused.value.code == 530

        assert relay.mails == [] and relay.of("auth") == []


async def test_implicit_tls(tls: TestTLS) -> None:
    async with FakeRelay(implicit_tls=tls.server, users={"hub": "secret"}) as relay:
        await aiosmtplib.send(mail("sealed\n"), hostname=relay.host, port=relay.port,
                              use_tls=True, tls_context=tls.client,
                              username="hub", password="secret")

        assert [m.text() for m in relay.mails] == ["sealed\n"]
        assert relay.settings()["relay_tls"] == "tls"


async def test_one_connection_carries_several_mails(relay: FakeRelay) -> None:
    async with plain(relay) as client:
        for index in range(3):
            await client.send_message(mail(f"mail {index}\n"))

    assert [m.text() for m in relay.mails] == [f"mail {i}\n" for i in range(3)]
    assert len(relay.of("connect")) == 1 and len(relay.of("mail")) == 3
