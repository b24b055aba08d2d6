"""The email gateway: an aiosmtpd SMTP listener served in the hub's own event loop (mail in,
:mod:`.inbound`), a relay client (mail out, :mod:`.outbound`), pairing by mail, and the digest
timer."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from meshhub.bridge.pairing import PairingBook, find_code
from meshhub.bridge.retry import GiveUp, every
from meshhub.bridge.slot import Lifecycle, cancel_all
from meshhub.errors import TooLarge
from meshhub.files import FileStore
from meshhub.ids import new_id

from . import mime
from .inbound import CONNECTOR, Refused, SmtpHandler, identity_of
from .outbound import EmailOutbound, Relay, RelayRefused
from .sessions import Session, SessionGate
from .settings import IDLE_REASON, EmailSettings
from .state import EmailState

if TYPE_CHECKING:
    from email.message import EmailMessage

    from meshhub.hub import Hub
    from meshhub.models import Peer

log = logging.getLogger(__name__)
SMTP_LOG = logging.getLogger("mail.log")  # aiosmtpd's: a line per SMTP command at INFO
DIGEST_TICK = 60.0  # seconds between looks at the digests due
NOTICE_BUDGET = 300.0  # seconds a welcome mail keeps being tried
CONFIRM_BUDGET = 20.0  # seconds a confirmation mail is tried while the sender waits


class EmailConnector(EmailOutbound, Lifecycle):
    """Registered as connector ``email``; idle until a mail domain is configured."""

    name = CONNECTOR

    def __init__(self) -> None:
        super().__init__()
        self.settings = EmailSettings()
        self.files: FileStore | None = None
        self.relay: Relay | None = None
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.handler = SmtpHandler(self)
        self.gate = SessionGate(0, 0)
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, hub: Hub) -> None:
        self.hub = hub
        self.settings = settings = EmailSettings.load(hub.config)
        if not settings.enabled:
            self._enter("idle", IDLE_REASON)
            return
        self._enter("starting", "opening the SMTP listener")
        if SMTP_LOG.getEffectiveLevel() < logging.WARNING:
            SMTP_LOG.setLevel(logging.WARNING)  # the gateway logs what matters itself
        self.email_state = EmailState(hub.records)
        self.secret = await self.email_state.secret()
        self.files = FileStore(hub.config.home / "files", min(
            settings.max_file_bytes, FileStore.for_config(hub.config).max_bytes))
        try:
            tls = self._tls_context()
            if settings.relay_at is not None:
                trust = (ssl.create_default_context(cafile=str(settings.relay_ca))
                         if settings.relay_ca else None)
                self.relay = Relay(settings, trust)
        except (OSError, ssl.SSLError) as exc:
            self._enter("failed", f"cannot read the TLS files: {exc}; check [email] tls_cert, "
                                  "tls_key and relay_ca")
            log.error("email: %s", self.error)
            return
        host, port = settings.listen_at
        loop = asyncio.get_running_loop()
        self.gate = SessionGate(settings.max_sessions, settings.max_sessions_per_address)
        try:
            self.server = await loop.create_server(
                self.gate.factory(lambda gate: self._protocol(gate, tls)), host, port)
        except OSError as exc:
            self._enter("failed", f"cannot listen for mail on {host}:{port}: {exc.strerror}; "
                                  "set MESHHUB_EMAIL_LISTEN to a free host:port")
            log.error("email: %s", self.error)
            return
        self.port = self.server.sockets[0].getsockname()[1]
        if settings.digest_minutes and self.relay is not None:
            self._tasks.append(asyncio.create_task(self._digest_timer(), name="email-digest"))
        out = f"mail out via {self.relay.describe()}" if self.relay else "no mail out (no relay)"
        self._enter("running", f"SMTP on {host}:{self.port} for @{settings.domain}; {out}")

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.settings.tls_cert or not self.settings.tls_key:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        return context

    def _protocol(self, gate: SessionGate, tls: ssl.SSLContext | None) -> Session:
        settings = self.settings
        return Session(
            gate, self.handler, data_size_limit=settings.max_message_bytes, enable_SMTPUTF8=True,
            hostname=settings.domain, ident="meshhub", tls_context=tls,
            auth_required=bool(settings.auth_user), auth_require_tls=True,
            authenticator=self._authenticate if settings.auth_user else None, timeout=120)

    def _authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        settings = self.settings
        if not isinstance(auth_data, LoginPassword) or not settings.auth_user:
            return AuthResult(success=False, handled=False)
        ok = hmac.compare_digest(auth_data.login, settings.auth_user.encode()) & \
            hmac.compare_digest(auth_data.password, str(settings.auth_password).encode())
        return AuthResult(success=ok, handled=False)

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None
        if self.relay is not None:
            await self.relay.close()
        if self.state != "idle":
            self._enter("stopped")

    async def _digest_timer(self) -> None:
        tick = min(DIGEST_TICK, max(1.0, self.settings.digest_minutes * 15))
        await every(tick, self.send_digests, log,
                    "email: the digests could not be sent; trying again")

    # -- who writes ----------------------------------------------------------------------------
    @property
    def pair_how(self) -> str:
        """Where a person mails a pairing code (see ``ConnectorSlot.how_to_pair``)."""
        return (f"mail the code {{code}} (in the subject) to pair@{self.settings.domain}, then "
                "answer the confirmation mail")

    @property
    def hub_(self) -> Hub:
        """The hub, once started (the listener runs only then)."""
        assert self.hub is not None
        return self.hub

    def may_write(self, address: str) -> str | None:
        """Whether ``address`` may write here, changing nothing (asked at RCPT, before the
        mail is checked): its peer's key when paired, its identity when the allow-list lets it
        in (it is paired once a mail of it passed every check), else ``None``."""
        book = PairingBook.of(self.hub_)
        identity = identity_of(address)
        peer = book.peer_for(identity)
        if peer is not None:
            return peer.key
        if self.settings.allows(address) and identity not in book.revoked:
            return identity
        return None

    async def sender_peer(self, address: str) -> Peer | None:
        """The peer of a paired address, or of one the allow-list names (paired on first
        sight, unless its pairing was revoked)."""
        assert self.hub is not None
        address = address.lower()
        book = PairingBook.of(self.hub)
        peer = book.peer_for(identity_of(address))
        if peer is None and self.settings.allows(address):
            peer = await book.admit(CONNECTOR, address, address.partition("@")[0])
        return peer

    async def fit(self, body: str, files: list[mime.Attachment]
                  ) -> tuple[str, list[dict[str, Any]]]:
        """A mail's text and files as a mesh message's body and attachments: the files go to
        the file store, and a text over the hub's message limit is cut, whole as a file."""
        assert self.hub is not None and self.files is not None
        store = self.files
        limit = self.hub.config.max_body_bytes
        if len(body.encode()) > limit:
            files = [*files, mime.Attachment(name="message.txt", mime="text/plain",
                                             data=body.encode())]
            cut = body.encode()[:limit - 200].decode(errors="ignore")
            body = cut + "\n\n… (the whole text is attached as message.txt)"
        stored = []
        for item in files:
            if len(item.data) > store.max_bytes:
                raise TooLarge(f"the attachment {item.name!r} is over the limit of "
                               f"{store.max_bytes} bytes")
            kept = await asyncio.to_thread(store.put, item.data, item.name, item.mime)
            stored.append(kept.attachment())
        return body, stored

    # -- pairing by mail -----------------------------------------------------------------------
    async def start_pairing(self, sender: str, mail: mime.Incoming) -> str:
        """A code mailed to ``pair@``: spend it and mail a confirmation that the person
        answers; only a mailbox's owner can, so nobody pairs an address not theirs."""
        assert self.hub is not None
        book = PairingBook.of(self.hub)
        accepted = f"code accepted; answer the confirmation mail sent to {sender}"
        code = find_code(mail.subject) or find_code(mail.text)
        if code is None:
            raise Refused("550 5.7.1 no pairing code in the mail: put the code from `hub pair "
                          "email` (like K7MX-4QPA) in the subject")
        if book.peer_for(identity_of(sender)) is not None:  # the answers a stranger would get
            if not await book.is_live(CONNECTOR, code):
                raise Refused("550 5.7.1 that pairing code is wrong, used or expired; ask the "
                              "hub's owner for a new one (`hub pair email`)")
            return accepted  # nothing is sent, nothing spent: the address is paired already
        if self.relay is None:
            raise Refused("550 5.7.1 this hub sends no mail (no relay), so it cannot confirm "
                          "your address; ask its owner to allow-list it (MESHHUB_EMAIL_ALLOW)")
        identity = identity_of(sender)
        await book.claim(CONNECTOR, identity, code)
        name = mail.from_name or sender.partition("@")[0]
        token = await self.email_state.confirmation(sender, name)
        domain = self.settings.domain
        confirmation = self._notice_mail(sender, "Confirm your address for meshhub", (
            f"Someone (we hope you) mailed a pairing code for {sender} to the meshhub at "
            f"{domain}.\n\nTo join the mesh as {name}, reply to this mail (any text will do) "
            "within an hour. If it was not you, ignore this mail: nothing happens."),
            reply_to=f"confirm+{token}@{domain}")
        try:  # before the answer: a code is spent only once its confirmation is on its way
            await self.relay.send(confirmation, sender, budget=CONFIRM_BUDGET)
        except (RelayRefused, GiveUp) as exc:
            await book.unclaim(CONNECTOR, identity, code)
            await self.email_state.confirmed(token)
            log.warning("email: the confirmation to %s could not be sent: %s", sender, exc)
            if isinstance(exc, RelayRefused):  # trying again will not help
                raise Refused(f"554 5.7.1 the relay refused the confirmation mail to this "
                              f"address ({exc}); the code still works") from exc
            raise Refused("451 4.3.0 the confirmation mail could not be sent now; the code "
                          "still works, try again later") from exc
        return accepted

    async def finish_pairing(self, token: str, sender: str) -> str:
        assert self.hub is not None
        pending = await self.email_state.pending_confirmation(token)
        if pending is None or pending[0] != sender:
            raise Refused("550 5.1.1 this confirmation is unknown, used or expired")
        address, name = pending
        peer = await PairingBook.of(self.hub).pair(CONNECTOR, address, name)
        await self.email_state.confirmed(token)
        domain = self.settings.domain
        self._notice(address, f"You are {peer.name} on meshhub", (
            f"You are paired: the mesh knows you as {peer.name}.\n\n"
            f"- write to a peer: name@{domain}\n"
            f"- post to a conversation: conversation@{domain} (or conv+name@{domain})\n"
            f"- write to a group: group+name@{domain}\n"
            "- answer a mail from the mesh: reply to it; it lands in the same thread"))
        return f"paired as {peer.name}"

    def _notice_mail(self, to: str, subject: str, text: str, *, reply_to: str | None = None
                     ) -> EmailMessage:
        """A mail of the gateway's own (a confirmation, a welcome)."""
        domain = str(self.settings.domain)
        return mime.build_mail(mime.Outgoing(
            from_name="meshhub", from_address=self.settings.from_address, to=to,
            reply_to=reply_to, subject=subject, text=text + "\n", html=None,
            message_id=f"<notice.{new_id()}@{domain}>", in_reply_to=None,
            references=[], headers={"Auto-Submitted": "auto-replied"}))

    def _notice(self, to: str, subject: str, text: str) -> None:
        """A notice sent in the background, tried for a while (the welcome after pairing)."""
        assert self.relay is not None
        relay = self.relay
        mail = self._notice_mail(to, subject, text)

        async def send() -> None:
            try:
                await relay.send(mail, to, budget=NOTICE_BUDGET)
            except (RelayRefused, GiveUp) as exc:
                log.error("email: the mail %r to %s could not be sent: %s", subject, to, exc)

        self.hub_.spawn(send())
