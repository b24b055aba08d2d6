"""Shared set-up of the email gateway's tests: an in-process hub (all plugins loaded) whose
gateway listens on a free 127.0.0.1 port and sends through :class:`tests.fakes.smtp_relay.
FakeRelay`; people mail it with the real aiosmtplib client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from meshhub.config import load_config
from meshhub.hub import Hub
from meshhub.server import serve

from .fakes.smtp_relay import Captured, FakeRelay
from .helpers import HOST, ConnectorHub, Identity, free_port, owner_home

DOMAIN = "mesh.test"


def mail(sender: str, to: str | list[str], text: str = "hello", *, subject: str = "hi",
         name: str | None = None, **headers: str) -> EmailMessage:
    """A plain mail from ``sender`` (with a unique Message-ID)."""
    message = EmailMessage()
    message["From"] = f"{name} <{sender}>" if name else sender
    message["To"] = ", ".join([to] if isinstance(to, str) else to)
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="example.com")
    for key, value in headers.items():
        message[key.replace("_", "-")] = value
    message.set_content(text)
    return message


def reply_to(captured: Captured, sender: str, text: str, *, keep_headers: bool = True,
             to: str | None = None) -> EmailMessage:
    """``sender``'s answer to a mail the gateway sent them, as a client writes it: to its
    Reply-To, the quoted original below; ``keep_headers=False`` drops In-Reply-To and
    References, as some clients do."""
    original = captured.message
    quoted = "\n".join("> " + line for line in captured.text().splitlines())
    answer = mail(sender, to or str(original["Reply-To"]),
                  f"{text}\n\nOn Sat, 5 Dec 2026 at 10:00, meshhub wrote:\n{quoted}\n",
                  subject="Re: " + str(original["Subject"]))
    if keep_headers:
        answer["In-Reply-To"] = str(original["Message-ID"])
        answer["References"] = str(original["Message-ID"])
    return answer


@dataclass
class EmailHub(ConnectorHub):
    smtp_port: int
    relay: FakeRelay
    connector_name = "email"

    async def send(self, message: EmailMessage | bytes, *, sender: str | None = None,
                   to: list[str] | None = None, **options: Any) -> Any:
        """Mail ``message`` to the gateway (one connection); the gateway's answer, or the
        aiosmtplib error it refused with."""
        if isinstance(message, bytes):
            assert sender and to
            return await aiosmtplib.send(message, sender=sender, recipients=to, hostname=HOST,
                                         port=self.smtp_port, **options)
        return await aiosmtplib.send(message, sender=sender, recipients=to, hostname=HOST,
                                     port=self.smtp_port, **options)

    async def report(self, raw: bytes, to: str) -> Any:
        """Mail ``raw`` from the null sender (``MAIL FROM:<>``), as a delivery report comes;
        the gateway's answer to DATA, or the error it refused with."""
        async with aiosmtplib.SMTP(hostname=HOST, port=self.smtp_port) as smtp:
            await smtp.mail("")
            await smtp.rcpt(to)
            return await smtp.data(raw)

    async def refused(self, message: EmailMessage | bytes, **options: Any) -> str:
        """The refusal ``message`` gets (code and text); fails if it is taken."""
        try:
            await self.send(message, **options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return " ".join(f"{r.code} {r.message}" for r in exc.recipients)
        except aiosmtplib.SMTPResponseException as exc:
            return f"{exc.code} {exc.message}"
        raise AssertionError("the gateway took the mail")

    async def pair(self, address: str, name: str = "ann", *, new_person: bool = True
                   ) -> Captured:
        """Pair ``address`` the way a person does (``new_person=False``: the owner links its
        own address); returns the welcome mail."""
        async with self.owner.client(self.url, receive=False) as owner:
            code = (await owner.call("pair_create", connector="email",
                                     new_person=new_person))["code"]
        await self.send(mail(address, f"pair@{DOMAIN}", "please", subject=f"code {code}",
                             name=name))
        confirm = await self.relay.wait_for(
            "mail", lambda c: address in c["to"] and "Confirm" in str(c["subject"]))
        await self.send(mail(address, str(confirm["message"]["Reply-To"]), "yes"))
        welcome = await self.relay.wait_for(
            "mail", lambda c: address in c["to"] and "You are" in str(c["subject"]))
        captured: Captured = welcome["captured"]
        return captured


@pytest.fixture
async def relay() -> AsyncIterator[FakeRelay]:
    async with FakeRelay() as fake:
        yield fake


@pytest.fixture
async def email_hub(tmp_path: Path, relay: FakeRelay) -> AsyncIterator[Any]:
    started: list[EmailHub] = []

    async def make(name: str = "hub", **settings: Any) -> EmailHub:
        home = owner_home(tmp_path, name)
        cfg = load_config(home)
        smtp_port = free_port()
        cfg.raw["email"] = {"domain": DOMAIN, "listen": f"{HOST}:{smtp_port}",
                            **relay.settings(), **settings}
        hub = Hub(cfg)
        runner, port = await serve(hub, HOST, free_port())
        item = EmailHub(hub, runner, port, Identity(home, "owner"), smtp_port, relay)
        started.append(item)
        assert item.connector is not None and item.connector.state == "running", (
            hub.connector_states.get("email"))
        return item

    yield make
    for item in started:
        with contextlib.suppress(Exception):
            await item.runner.cleanup()
