"""Mail out: what the mesh delivers to an email person, through the configured SMTP relay.

A delivery is acked only once the relay answered ``250`` for it. A ``4xx``, a refused connection
or a dropped one is tried again with backoff (on a new connection); a ``5xx`` refusal makes the
delivery ``dead`` with the relay's words. Each mail's ``Message-ID`` comes from the mesh message,
so the rare mail sent twice (the relay took it, its answer was lost) is one mail to the reader's
client. In digest mode a person's messages wait in ``email_digest`` (the delivery is acked once
they are stored there) and go out together every N minutes; approval requests never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import ssl
import time
from typing import TYPE_CHECKING

import aiosmtplib

from meshhub.bridge.chat import describe, give_up, may_post
from meshhub.bridge.markdown import escape
from meshhub.bridge.pairing import PairingBook
from meshhub.bridge.retry import ErrorKinds, GiveUp, RetryPolicy, call_with_retries
from meshhub.render import to_html, to_text
from meshhub.store import StateChange

from . import mime
from .inbound import CONNECTOR

if TYPE_CHECKING:
    from email.message import EmailMessage

    from meshhub.files import FileStore
    from meshhub.hub import Hub
    from meshhub.models import Message, Peer

    from .settings import EmailSettings
    from .state import EmailState

log = logging.getLogger(__name__)
SUBJECT_CHARS = 78
URGENT_KINDS = frozenset({"approval"})  # never held for a digest
# delivery reports, read line by line (every pattern stays on one line: linear time)
_FAILED = re.compile(r"^Action:[ \t]*failed\b", re.I | re.M)
_FINAL_RECIPIENT = re.compile(r"^(?:Final|Original)-Recipient:[ \t]*(?:rfc822|utf-8);[ \t]*"
                              r"<?([^\s<>;]+@[^\s<>;]+)", re.I | re.M)
_DIAGNOSTIC = re.compile(r"^Diagnostic-Code:[ \t]*[^;\n]*;[ \t]*([^\n]+)$", re.I | re.M)
_RETURNED_ID = re.compile(r"^Message-ID:[ \t]*(<[^<>\n]{1,300}>)", re.I | re.M)
SILENT_KINDS = frozenset({"reaction"})  # a mail per emoji would be noise: acked, not mailed


class RelayRefused(Exception):
    """The relay refused a mail for good (a 5xx); the message says what it answered."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(400 <= r.code < 500 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return False
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 400 <= exc.code < 500 or exc.code < 0
    return isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError)


RELAY_ERRORS = ErrorKinds(retry_after=lambda exc: None, transient=_transient)


def refusal(exc: BaseException) -> str:
    """What the relay said, for a dead delivery's reason."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        return f"{first.code} {first.message}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return str(exc)


class Relay:
    """One connection to the relay, kept open between mails and opened again after any
    error, one mail at a time."""

    def __init__(self, settings: EmailSettings, tls_context: ssl.SSLContext | None = None
                 ) -> None:
        at = settings.relay_at
        assert at is not None
        self.host, self.port = at
        self.settings = settings
        self.tls_context = tls_context
        self.sent = 0
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.settings.relay_tls})"

    async def send(self, message: EmailMessage, to: str, *, budget: float) -> None:
        """Send ``message`` to ``to``; returns once the relay said ``250``. Raises
        :class:`RelayRefused` on a refusal, :class:`GiveUp` when tries ran out."""
        try:
            await call_with_retries(lambda: self._send_once(message, to), RELAY_ERRORS,
                                    RetryPolicy(attempts=8, budget=budget, max_delay=5.0))
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise GiveUp(f"the relay refused the login ({exc.code} {exc.message}); check "
                         "MESHHUB_EMAIL_RELAY_USER and _PASSWORD") from exc
        except aiosmtplib.SMTPException as exc:
            raise RelayRefused(refusal(exc)) from exc

    async def _send_once(self, message: EmailMessage, to: str) -> None:
        async with self._lock:
            client = await self._connected()
            try:
                await client.send_message(message, sender=self.settings.from_address,
                                          recipients=[to])
            except BaseException:
                await self.close()
                raise
            self.sent += 1

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        mode = self.settings.relay_tls
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.settings.relay_timeout,
            use_tls=mode == "tls", start_tls=True if mode == "starttls" else False,
            username=self.settings.relay_user, password=self.settings.relay_password,
            tls_context=self.tls_context, local_hostname=self.settings.domain)
        await client.connect()
        self._client = client
        return client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), 2)
            with contextlib.suppress(Exception):
                client.close()


class EmailOutbound:
    """Mailing half of :class:`~meshhub_email.connector.EmailConnector` (which sets these)."""

    hub: Hub | None
    settings: EmailSettings
    email_state: EmailState
    files: FileStore | None
    relay: Relay | None
    secret: bytes  # signs the Message-IDs of mail out (see tag_for)

    @property
    def budget(self) -> float:
        """How long one delivery may keep trying: under the delivery's lease."""
        assert self.hub is not None
        return max(1.0, min(60.0, self.hub.config.lease_seconds * 0.8))

    async def deliver(self, hub: Hub, peer: Peer, message: Message) -> bool:
        """Mail ``message`` to ``peer``; ``True`` once the relay took it (or it waits for a
        digest, or it is a notice not worth a mail)."""
        verdict = await may_post(hub, peer, message, connector=CONNECTOR, chat="",
                                 platform="email", place="address")
        if verdict is not None:
            return verdict
        if self.relay is None:
            await give_up(hub, peer, message, "this hub sends no mail: no relay is configured "
                                              "(MESHHUB_EMAIL_RELAY)")
            return False
        if message.kind in SILENT_KINDS:
            return True
        if self.settings.digest_minutes and message.kind not in URGENT_KINDS:
            await self.email_state.queue_digest(peer.key, message.id)
            return True
        address = address_of_peer(peer)
        try:
            mail = await self.compose(peer, address, message)
            await self.relay.send(mail, address, budget=self.budget)
        except RelayRefused as exc:
            await give_up(hub, peer, message, f"the mail relay refused it: {exc}")
            return False
        except mime.MailError as exc:  # an address or a header no mail can carry
            await give_up(hub, peer, message, f"it cannot be written as a mail: {exc}")
            return False
        except GiveUp as exc:
            log.warning("email: mail of %s to %s postponed: %s", message.id, peer.name, exc)
            return False
        return True

    # -- composing -----------------------------------------------------------------------------
    async def compose(self, peer: Peer, address: str, message: Message) -> EmailMessage:
        """One message as a mail to ``address``, threaded and with a reply address."""
        assert self.hub is not None
        hub, domain = self.hub, str(self.settings.domain)
        root_id = message.reply_to or message.id
        root = message if root_id == message.id else await hub.store.get_message(root_id)
        subject = subject_of(root or message, peer.key)
        in_reply_to = None
        if message.reply_to is not None:
            if not subject.lower().startswith("re:"):
                subject = "Re: " + subject
            # the person's own mail when they began the thread, else the root as mailed to them
            own = mail_id_of(root) if root is not None and root.sender == peer.key else None
            in_reply_to = own or mime.message_id_for(root_id, domain,
                                                     self.tag_for(root_id, peer.key))
        token = await self.email_state.token_for(peer.key, root_id)
        sender = hub.directory.peers.get(message.sender)
        name = sender.name if sender is not None else "meshhub"
        footer = self._footer(hub, message)
        body = message.body
        if message.kind == "approval":
            body += "\n\n" + approval_hint(message)
        attachments, missing = await self._attachments(message)
        text = to_text(body) + "".join(f"\n\n({m} is no longer on the hub)" for m in missing)
        out = mime.Outgoing(
            from_name=f"{name} via meshhub", from_address=self.settings.from_address,
            to=address, reply_to=f"reply+{token}@{domain}", subject=subject,
            text=f"{text}\n\n-- \n{footer}\n",
            html=f"<div>{to_html(body)}</div><hr><p><small>{escape(footer)}</small></p>",
            message_id=mime.message_id_for(message.id, domain,
                                           self.tag_for(message.id, peer.key)),
            in_reply_to=in_reply_to,
            references=[in_reply_to] if in_reply_to else [], attachments=attachments,
            headers=self._headers(message))
        return mime.build_mail(out)

    def _footer(self, hub: Hub, message: Message) -> str:
        return (f"{describe(hub, message)} on meshhub. Reply to this mail to answer in the "
                "thread.")

    def _headers(self, message: Message) -> dict[str, str]:
        headers = {"X-Meshhub-Message": message.id}
        if message.conversation.startswith("#"):
            conv = message.conversation.lstrip("#")
            headers["List-Id"] = f"#{conv} <{conv}.{self.settings.domain}>"
        return headers

    async def _attachments(self, message: Message) -> tuple[list[mime.Attachment], list[str]]:
        """The message's files, read from the file store; names of those gone."""
        assert self.files is not None
        found: list[mime.Attachment] = []
        missing: list[str] = []
        for item in message.attachments:
            if not isinstance(item, dict):
                continue
            name = str(item.get("name") or "file")
            try:
                data = await asyncio.to_thread(self.files.get, str(item.get("file", "")))
            except Exception:
                missing.append(name)
                continue
            found.append(mime.Attachment(name=name, data=data, mime=str(
                item.get("mime") or "application/octet-stream")))
        return found, missing

    async def compose_digest(self, peer: Peer, address: str, messages: list[Message]
                             ) -> EmailMessage:
        """Several messages in one mail; each says how to answer it, and answering the mail
        itself answers the newest one's thread."""
        assert self.hub is not None
        hub, domain = self.hub, str(self.settings.domain)
        parts: list[str] = []
        html: list[str] = []
        token = ""
        for message in messages:
            root_id = message.reply_to or message.id
            token = await self.email_state.token_for(peer.key, root_id)
            when = time.strftime("%H:%M", time.gmtime(message.created_at))
            head = f"{describe(hub, message)}, {when} UTC"
            reply = f"reply+{token}@{domain}"
            parts.append(f"{head}\n\n{to_text(message.body)}\n\n(answer: {reply})")
            html.append(f"<h3>{escape(head)}</h3><div>{to_html(message.body)}</div>"
                        f"<p><small>answer: <a href=\"mailto:{reply}\">{reply}</a></small></p>")
        count = len(messages)
        out = mime.Outgoing(
            from_name="meshhub digest", from_address=self.settings.from_address, to=address,
            reply_to=f"reply+{token}@{domain}",
            subject=f"meshhub: {count} new message{'s' if count != 1 else ''}",
            text="\n\n----\n\n".join(parts) + "\n",
            html="<hr>".join(html),
            message_id=f"<digest.{messages[-1].id}.{peer.key}@{domain}>", in_reply_to=None,
            references=[], headers={"X-Meshhub-Digest": str(count)})
        return mime.build_mail(out)

    async def send_digests(self) -> None:
        """Mail every person whose oldest waiting message waited a digest period."""
        assert self.hub is not None and self.relay is not None
        hub = self.hub
        due = await self.email_state.digests_due(time.time() - self.settings.digest_minutes * 60)
        book = PairingBook.of(hub)
        for key, ids in due.items():
            peer = hub.directory.peers.get(key)
            found = [m for m in [await hub.store.get_message(i) for i in ids] if m is not None]
            if peer is None or not book.is_paired(peer):
                await self._digest_dead(key, ids, "the email pairing was revoked")
                continue
            if not found:  # gone from the store: nothing left to mail
                await self.email_state.digest_sent(key, ids)
                continue
            try:
                mail = await self.compose_digest(peer, address_of_peer(peer), found)
                await self.relay.send(mail, address_of_peer(peer), budget=self.budget)
            except RelayRefused as exc:
                await self._digest_dead(key, ids, f"the mail relay refused the digest: {exc}")
                continue
            except mime.MailError as exc:
                await self._digest_dead(key, ids, f"it cannot be written as a mail: {exc}")
                continue
            except GiveUp as exc:
                log.warning("email: the digest for %s is postponed: %s", peer.name, exc)
                continue
            except Exception:  # one person's trouble never holds back the others' digests
                log.exception("email: the digest for %s failed; tried again later", peer.name)
                continue
            await self.email_state.digest_sent(key, ids)

    def tag_for(self, mesh_id: str, peer_key: str) -> str:
        """What signs the Message-ID of ``mesh_id`` mailed to ``peer_key``."""
        mac = hmac.new(self.secret, f"{mesh_id}|{peer_key}".encode(), hashlib.sha256)
        return mac.hexdigest()[:20]

    async def take_bounce(self, raw: bytes) -> int:
        """Mark dead what a delivery report (RFC 3464) says failed for good: the mail whose
        ``Message-ID`` it returns, for the people it lists as failed recipients, and only when
        that Message-ID's tag is the one the gateway signed for that person (nobody can report
        a failure of a mail they did not get) and the delivery is ``pushed`` or ``delivered``
        (never one still queued, nor read). A report of a delay marks nothing. Returns how many
        were marked."""
        assert self.hub is not None
        text = raw.decode("latin-1")
        if not _FAILED.search(text):
            return 0
        domain = str(self.settings.domain)
        returned = [found for found in (mime.mesh_id_and_tag(m, domain)
                                        for m in _RETURNED_ID.findall(text)[:5]) if found]
        why = _DIAGNOSTIC.search(text)
        reason = "the mail bounced: " + mime.one_line(why.group(1) if why else "no reason given",
                                                      300)
        store, marked = self.hub.store, 0
        for address in {m.lower() for m in _FINAL_RECIPIENT.findall(text)[:20]}:
            key = self.hub.directory.by_identity.get(f"{CONNECTOR}:{address}")
            for mesh_id, tag in returned if key else []:
                if not hmac.compare_digest(tag, self.tag_for(mesh_id, str(key))):
                    continue
                states = {d.recipient: d.state for d in await store.deliveries_of(mesh_id)}
                if states.get(str(key)) in ("pushed", "delivered"):  # a report may beat the ack
                    done = await store.change_states([StateChange(mesh_id, str(key), "dead",
                                                                  reason=reason)])
                    marked += sum(done)
        return marked

    async def _digest_dead(self, key: str, ids: list[str], reason: str) -> None:
        """Messages waiting for a digest that will never go: their deliveries turn ``dead``
        with ``reason`` (acked when queued, they said ``delivered`` until now)."""
        assert self.hub is not None
        await self.hub.store.change_states([StateChange(i, key, "dead", reason=reason)
                                            for i in ids])
        await self.email_state.digest_sent(key, ids)


def address_of_peer(peer: Peer) -> str:
    return peer.identity.partition(":")[2]


def mail_id_of(message: Message | None) -> str | None:
    """The Message-ID of the mail ``message`` came in as, if it came by mail (a thread begun
    by mail is answered as a reply to that mail, so the person's client threads it)."""
    data = message.data if message is not None and isinstance(message.data, dict) else {}
    found = data.get("email")
    return str(found["message_id"]) if isinstance(found, dict) and found.get(
        "message_id") else None


def subject_of(message: Message, reader: str) -> str:
    """A thread's subject for ``reader``: where it is and its first line, or, when the reader
    began the thread by mail, that mail's subject as they wrote it (every mail of a thread has
    the same subject for its reader, ``Re:`` in front, as Gmail wants)."""
    data = message.data if isinstance(message.data, dict) else {}
    begun = data.get("email") if isinstance(data.get("email"), dict) else None
    subject = str(begun.get("subject") or "").strip() if begun else ""
    if subject and message.sender == reader:
        return mime.one_line(subject)
    first = next((line for line in to_text(message.body).splitlines() if line.strip()), "")
    where = message.conversation
    prefix = f"[{where}] " if where.startswith(("#", "@")) else ""
    if message.kind == "approval":
        prefix = "[approval] " + prefix
    return mime.one_line(prefix + (first or "(no text)"), SUBJECT_CHARS)


def approval_hint(message: Message) -> str:
    data = message.data if isinstance(message.data, dict) else {}
    options = [str(o) for o in data.get("options") or []]
    words = " or ".join(f"**{o}**" for o in options) or "your answer"
    return (f"Reply to this mail with one word, {words}, as the first line; anything after "
            "it is your reason.")
