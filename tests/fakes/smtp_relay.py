"""A fake SMTP relay on 127.0.0.1, for the email gateway's outgoing mail and the real aiosmtplib.

It is aiosmtpd's ``SMTP`` protocol served by ``loop.create_server`` in the test's own event loop
(no thread), so a test can script it and wait on it like the other fakes. It keeps every mail it
accepts, records each connection, AUTH attempt and DATA as a call, and can be scripted to refuse
a mail (``refuse_next``), a recipient (``refuse_recipient``), or to keep a mail and drop the
connection before answering (``lose_next``), the case where a sender cannot know the outcome.

    async with FakeRelay(starttls=tls.server, users={"hub": "secret"}) as relay:
        config["email"] = relay.settings()
        call = await relay.wait_for("mail", lambda c: "ada@example.com" in c["to"])
        assert relay.mails[0].text() == "hello\\n"
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .calls import CallLog

__all__ = ["Captured", "FakeRelay"]

HOST = "127.0.0.1"


def parse(raw: bytes) -> EmailMessage:
    """``raw`` as the modern ``EmailMessage`` (policy default), whose headers are decoded, with
    the wire's CRLF line ends read as the "\\n" a reader of the text expects."""
    message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), _class=EmailMessage,
                                       policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@dataclass
class Captured:
    """One mail the relay kept: its envelope and its bytes as sent."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage = field(init=False)

    def __post_init__(self) -> None:
        self.message = parse(self.raw)

    def text(self) -> str:
        """The text/plain body ("" when the mail has none)."""
        body = self.message.get_body(preferencelist=("plain",))
        return "" if body is None else str(body.get_content())


@dataclass
class Answer:
    """A scripted refusal: ``code text`` as one SMTP reply line."""

    code: int
    text: str

    def line(self) -> str:
        return f"{self.code} {self.text}"


class _Connection(SMTP):
    """aiosmtpd's protocol for one client, reporting its start and AUTH attempts to the relay:
    both happen outside the handler hooks, which are the only places aiosmtpd awaits."""

    def __init__(self, relay: FakeRelay) -> None:
        with warnings.catch_warnings():  # AUTH without TLS is on purpose when TLS is not offered
            warnings.simplefilter("ignore")
            super().__init__(
                relay, hostname="relay.test", enable_SMTPUTF8=True,
                tls_context=relay.starttls, require_starttls=bool(relay.users),
                auth_required=bool(relay.users), auth_require_tls=relay.starttls is not None,
                authenticator=relay.authenticate, loop=asyncio.get_running_loop())
        self.relay = relay

    async def _handle_client(self) -> None:
        await self.relay.record({"method": "connect", "ok": True})
        self.relay.connections.add(self)
        try:
            await super()._handle_client()
        finally:
            self.relay.connections.discard(self)

    async def smtp_AUTH(self, arg: str) -> None:
        await super().smtp_AUTH(arg)
        await self.relay._notify()

    def drop(self) -> None:
        """Close the connection now; a reply pushed after this is never sent."""
        assert self.transport is not None
        self.transport.close()


class FakeRelay(CallLog):
    """The relay on a free port of 127.0.0.1, started and stopped with ``async with``.

    ``starttls`` offers STARTTLS with that server context, and requires it when ``users`` is
    set; ``implicit_tls`` speaks TLS from the first byte (SMTPS); ``users`` (name: password)
    makes AUTH PLAIN/LOGIN required before a mail."""

    def __init__(self, *, starttls: ssl.SSLContext | None = None,
                 implicit_tls: ssl.SSLContext | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.users = dict(users or {})
        self.host = HOST
        self.port = 0
        self.calls: list[dict[str, Any]] = []
        self.mails: list[Captured] = []
        self.connections: set[_Connection] = set()
        self._changed = asyncio.Condition()
        self._refusals: list[Answer] = []
        self._refused_recipients: dict[str, Answer] = {}
        self._losses = 0
        self._server: asyncio.Server | None = None

    # -- server -------------------------------------------------------------------------------
    async def start(self) -> FakeRelay:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), HOST, 0,
                                                ssl=self.implicit_tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.drop()
        await self._server.wait_closed()

    async def __aenter__(self) -> FakeRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def settings(self, tls: str | None = None) -> dict[str, Any]:
        """The gateway's ``[email]`` keys for this relay. ``tls`` defaults to what the relay
        speaks; the user and password (the first of ``users``) only when AUTH is required."""
        keys: dict[str, Any] = {"relay": f"{self.host}:{self.port}",
                                "relay_tls": tls or self._tls()}
        for user, password in list(self.users.items())[:1]:
            keys.update(relay_user=user, relay_password=password)
        return keys

    def _tls(self) -> str:
        if self.implicit_tls is not None:
            return "tls"
        return "none" if self.starttls is None else "starttls"

    # -- scripting ------------------------------------------------------------------------------
    def refuse_next(self, n: int = 1, code: int = 451,
                    text: str = "4.3.0 try again later") -> None:
        """The next ``n`` DATA commands get ``code text``; nothing of them is kept."""
        self._refusals.extend(Answer(code, text) for _ in range(n))

    def refuse_recipient(self, address: str, code: int = 550,
                         text: str = "5.1.1 no such user") -> None:
        """RCPT TO ``address`` gets ``code text``, every time."""
        self._refused_recipients[address.lower()] = Answer(code, text)

    def lose_next(self, n: int = 1) -> None:
        """The next ``n`` mails are kept, then the connection closes without an answer."""
        self._losses += n

    # -- aiosmtpd's hooks ---------------------------------------------------------------------
    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        refusal = self._refused_recipients.get(address.lower())
        if refusal is not None:
            return refusal.line()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keeps the mail unless a refusal is scripted; a scripted loss drops the connection
        after keeping it, so the reply returned here goes nowhere."""
        raw = envelope.original_content or b""
        refusal = self._refusals.pop(0) if self._refusals else Answer(250, "2.0.0 OK queued")
        captured = None
        if refusal.code < 400:
            captured = Captured(str(envelope.mail_from), list(envelope.rcpt_tos), raw)
            self.mails.append(captured)
        if refusal.code < 400 and self._losses:
            self._losses -= 1
            assert isinstance(server, _Connection)
            server.drop()
        message = captured.message if captured is not None else parse(raw)
        await self.record({"method": "mail", "ok": refusal.code < 400, "code": refusal.code,
                           "to": list(envelope.rcpt_tos), "mail_from": envelope.mail_from,
                           "message": message, "subject": message["subject"],
                           "captured": captured})
        return refusal.line()

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        """aiosmtpd's authenticator: the login must be one of ``users`` with its password.
        The call is recorded here; ``_Connection.smtp_AUTH`` wakes the waiters."""
        assert isinstance(auth_data, LoginPassword)
        user = auth_data.login.decode("utf-8", "replace")
        ok = self.users.get(user) == auth_data.password.decode("utf-8", "replace")
        self.calls.append({"method": "auth", "ok": ok, "user": user, "mechanism": mechanism})
        return AuthResult(success=ok, handled=False)

    async def record(self, call: dict[str, Any]) -> None:
        self.calls.append(call)
        await self._notify()
