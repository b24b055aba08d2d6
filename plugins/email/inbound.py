"""Mail in: the aiosmtpd handler of the gateway's SMTP listener.

Everything that can be refused is refused during the SMTP conversation, so the sending server
bounces it with the reason and nothing is stored:

- ``RCPT``: the address must be on the gateway's domain and name something (a peer, a
  conversation, a group, a reply address of the sender's, ``pair@``, a confirmation); the sender
  must be paired or allow-listed (except for ``pair@``, confirmations and delivery reports). A
  stranger learns nothing about who is on the mesh: their sender is refused before any name is
  looked up. While the sender is not known to be who it says (a trusted MTA's verdict comes
  only with the headers; an allow-listed address is not a peer yet), addresses are looked up at
  ``DATA`` instead, all before anything is stored.
- ``DATA``: the From header must be the envelope sender; with a trusted MTA in front, its
  SPF/DKIM/DMARC verdict must pass; the MIME must give text or a file. Then the mail is sent on the
  mesh, and ``250`` is answered only once the mesh stored it: a lost answer makes the sending
  server try again, and the mail's Message-ID makes that second try store nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import weakref
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING, Any

from meshhub.actions import ActionContext
from meshhub.bridge.pairing import PairingBook
from meshhub.errors import MeshError, QuotaExceeded, RateLimited, TooLarge

from . import mime
from .authresults import auth_verdict
from .mime import MailError

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    from meshhub.models import Message, Peer

    from .connector import EmailConnector

log = logging.getLogger(__name__)
CONNECTOR = "email"
MAX_RECIPIENTS = 20
PARSE_IN_THREAD = 64 * 1024  # bytes; a bigger mail is parsed off the event loop
CHECK_HEADERS_FIRST = 16 * 1024  # bytes; a bigger mail's sender is checked before its body
_FOLD = re.compile(r"\r?\n(?=[ \t])")
PAIRING_MAIL_BYTES = 64 * 1024
BOUNCE_BYTES = 256 * 1024  # a delivery report's part worth reading
NULL_SENDER = "<>"  # MAIL FROM:<>, as aiosmtpd passes it
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_{}\[\]<>()#+!|~-]")
_REPLY_WORD = re.compile(r"^\s*([A-Za-z]+)\b[\s.,:;!-]*(.*)$", re.S)


@dataclass(frozen=True)
class Route:
    """Where one recipient address leads."""

    kind: str  # peer | conversation | group | reply | pair | confirm | bounce | later
    value: str  # a peer key, "#conv", "@group", a reply token or a confirmation token
    address: str  # as written in RCPT


def identity_of(address: str) -> str:
    return f"{CONNECTOR}:{address.lower()}"


class SmtpHandler:
    """aiosmtpd's handler: ``handle_MAIL``, ``handle_RCPT`` and ``handle_DATA``."""

    def __init__(self, connector: EmailConnector) -> None:
        self.connector = connector
        self.routes: weakref.WeakKeyDictionary[Envelope, list[Route]] = (
            weakref.WeakKeyDictionary())
        self.parsing = asyncio.Semaphore(1)

    @property
    def domain(self) -> str:
        return str(self.connector.settings.domain)

    # -- MAIL FROM -----------------------------------------------------------------------------
    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        local, at, domain = address.rpartition("@")  # aiosmtpd checked its syntax
        if address != NULL_SENDER and not (local and at and domain):
            return "550 5.7.1 an unreadable sender address is not taken here"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.routes[envelope] = []
        return "250 OK"

    # -- RCPT TO -------------------------------------------------------------------------------
    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        routes = self.routes.setdefault(envelope, [])
        if len(routes) >= MAX_RECIPIENTS:
            return f"452 4.5.3 at most {MAX_RECIPIENTS} recipients per mail"
        try:
            route = await self.route(str(envelope.mail_from), address)
        except Refused as exc:
            log.info("email: refused %s -> %s: %s", envelope.mail_from, address, exc.reply)
            return exc.reply
        except Exception:
            log.exception("email: cannot look up %s; the sender retries", address)
            return "451 4.3.0 the hub cannot look up this address now; try again later"
        routes.append(route)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def route(self, sender: str, address: str, *, at_data: bool = False) -> Route:
        """Where ``address`` leads for mail from ``sender``; :class:`Refused` with the reply
        to give when it leads nowhere or ``sender`` may not use it.

        At ``RCPT`` (``at_data`` false) an address is only taken, looked up later (a ``later``
        route), while the sender is not known to be who it says: when a trusted MTA vouches
        (its verdict comes with the headers, at DATA), and for an allow-listed sender that is
        not a peer yet. So a forged sender learns nothing about who is on the mesh."""
        local, _, domain = address.strip().rpartition("@")
        if domain.lower().rstrip(".") != self.domain or not local:
            raise Refused(f"550 5.7.1 this gateway takes mail for @{self.domain} only")
        local = local.lower()
        connector = self.connector
        if sender == NULL_SENDER:  # a delivery report: only about the mail the gateway sent
            if address.lower() != connector.settings.from_address.lower():
                raise Refused("550 5.7.1 delivery reports are taken only at "
                              f"{connector.settings.from_address}")
            return Route("bounce", "", address)
        if local == "pair":
            if not await PairingBook.of(connector.hub_).is_live(CONNECTOR):
                raise Refused("550 5.7.1 no pairing is open on this hub: ask its owner for a "
                              "code (hub pair email) first")
            return Route("pair", "", address)
        tag, plus, token = local.partition("+")
        if plus and tag == "confirm":
            pending = await connector.email_state.pending_confirmation(token)
            if pending is None or pending[0] != sender.lower():
                raise Refused("550 5.1.1 this confirmation address is unknown, used or "
                              "expired; mail your code to pair@" + self.domain + " again")
            return Route("confirm", token, address)
        if not at_data and connector.settings.trusted_authserv:
            return Route("later", "", address)
        key = connector.may_write(sender)
        if key is None:
            raise Refused(f"550 5.7.1 {sender} may not write here: it is not paired with this "
                          "hub. Ask the hub's owner for a code (hub pair email) and mail it "
                          f"to pair@{self.domain}")
        if key == identity_of(sender) and not at_data:
            return Route("later", "", address)
        hub = connector.hub_
        if plus and tag == "reply":
            thread = await connector.email_state.thread_of(token)
            if thread is None or thread[0] != key:
                raise Refused("550 5.1.1 this reply address is unknown here, or was made for "
                              "someone else")
            return Route("reply", token, address)
        if plus and tag in ("conv", "group"):
            name = token
        elif plus:
            raise Refused(f"550 5.1.1 {address}: unknown address form; write to "
                          f"name@{self.domain}, conv+name@ or group+name@")
        else:
            name = local
            found = hub.directory.find(name)
            if found is not None:
                return Route("peer", found.key, address)
        if tag != "group" and name in hub.directory.conversations:
            return Route("conversation", "#" + name, address)
        if tag != "conv" and any(name == g or g.startswith(name + "/")
                                 for p in hub.directory.peers.values() for g in p.groups):
            return Route("group", "@" + name, address)
        raise Refused(f"550 5.1.1 {address}: no peer, conversation or group named {name!r} "
                      "on this hub")

    # -- DATA ----------------------------------------------------------------------------------
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        routes = list(self.routes.pop(envelope, []))
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not raw:
            raw = envelope.content
        sender = str(envelope.mail_from).lower()
        if sender == NULL_SENDER:
            return await self._bounce(raw)
        try:
            if len(raw) > PAIRING_MAIL_BYTES and any(r.kind in ("pair", "confirm")
                                                     for r in routes):
                raise Refused(f"552 5.3.4 a pairing mail is short: at most {PAIRING_MAIL_BYTES} "
                              "bytes")
            if len(raw) > CHECK_HEADERS_FIRST:  # before any time goes into a long body
                headers = header_list(raw)
                froms = [value for name, value in headers if name.lower() == "from"]
                self._check_sender(sender, mime.address_of(froms[0]) if len(froms) == 1
                                   else None, headers)
            mail = await self._read(raw)
            self._check_sender(sender, mail.from_address, mail.headers)
            if mail.automatic:
                log.info("email: an automatic mail from %s was dropped", sender)
                return "250 2.0.0 automatic mail (auto-reply, bounce, list) dropped"
            # a mail without a Message-ID is keyed by its bytes: a resend stores nothing twice
            key_id = mail.message_id or "sha256:" + hashlib.sha256(raw).hexdigest()
            results = await self._take_all(sender, routes, mail, key_id)
        except Refused as exc:
            log.info("email: mail from %s refused: %s", sender, exc.reply)
            return exc.reply
        except MailError as exc:
            return f"550 5.6.0 {mime.one_line(str(exc))}"
        except TooLarge as exc:
            return f"552 5.3.4 {mime.one_line(exc.message)}"
        except RateLimited as exc:  # for now: the sending server tries again later
            return f"451 4.7.1 {mime.one_line(exc.message)}"
        except QuotaExceeded as exc:
            return f"452 4.3.1 {mime.one_line(exc.message)}"
        except MeshError as exc:
            return f"550 5.7.1 {mime.one_line(exc.message)}"
        except Exception:
            log.exception("email: a mail from %s could not be taken; the sender retries", sender)
            return "451 4.3.0 the hub could not store the mail; try again later"
        return "250 2.0.0 " + mime.one_line("; ".join(results), 400)

    async def _bounce(self, raw: bytes) -> str:
        """A delivery report: when it says a mail of the gateway's failed for good, that
        mail's deliveries to the people it names turn ``dead`` with the report's reason."""
        try:
            marked = await self.connector.take_bounce(raw[:BOUNCE_BYTES])
        except Exception:
            log.exception("email: a delivery report could not be read")
            return "451 4.3.0 the report could not be read now; try again later"
        return f"250 2.0.0 report taken: {marked} deliveries marked failed"

    async def _read(self, raw: bytes) -> mime.Incoming:
        """``raw`` read; a long mail off the event loop, one at a time (a flood of big mails
        waits its turn rather than taking every thread)."""
        assert self.connector.files is not None
        limit = self.connector.files.max_bytes
        if len(raw) <= PARSE_IN_THREAD:
            return mime.read_mail(raw, max_attachment_bytes=limit)
        async with self.parsing:
            return await asyncio.to_thread(mime.read_mail, raw, max_attachment_bytes=limit)

    def _check_sender(self, sender: str, found: str | None,
                      headers: list[tuple[str, str]]) -> None:
        """The From header's address (``found``) is the envelope's sender, and the trusted MTA
        (if any) vouches for it in ``headers``."""
        if found != sender:
            raise Refused(f"550 5.7.1 the From header ({found or 'none'}) is not "
                          f"the sender ({sender}); send from your own address")
        authserv = self.connector.settings.trusted_authserv
        if authserv:
            unfolded = [(name, _FOLD.sub(" ", value)) for name, value in headers]
            verdict = auth_verdict(unfolded, authserv, sender.rpartition("@")[2])
            if not verdict.passed:
                raise Refused(f"550 5.7.23 the sender could not be verified: {verdict.reason}")

    async def _take_all(self, sender: str, routes: list[Route], mail: mime.Incoming,
                        key_id: str) -> list[str]:
        """Take ``mail`` for each recipient; a refusal after some were served says which
        were (the sending server bounces the mail, and its Message-ID keeps a resend of it
        from storing those twice)."""
        resolved = [await self.route(sender, r.address, at_data=True) if r.kind == "later"
                    else r for r in routes]  # every address, before anything is made
        done: list[str] = []
        for index, route in enumerate(resolved):
            try:
                done.append(await self._take(sender, route, mail, key_id=key_id,
                                             first=index == 0))
            except (MeshError, Refused) as exc:
                if not done or isinstance(exc, RateLimited | QuotaExceeded):
                    raise  # a retry of the whole mail stores the done ones no second time
                why = exc.message if isinstance(exc, MeshError) else exc.reply
                raise Refused(f"550 5.7.1 {'; '.join(done)}; but not to {route.address}: "
                              f"{why}") from exc
        return done

    async def _take(self, sender: str, route: Route, mail: mime.Incoming, *, key_id: str,
                    first: bool) -> str:
        """Put ``mail`` where ``route`` leads; what was done, for the SMTP answer."""
        connector = self.connector
        if route.kind == "pair":
            return await connector.start_pairing(sender, mail)
        if route.kind == "confirm":
            return await connector.finish_pairing(route.value, sender)
        peer = await connector.sender_peer(sender)  # an allow-listed sender is paired now
        if peer is None:  # revoked between RCPT and DATA
            raise Refused(f"550 5.7.1 {sender} may no longer write here")
        thread = await self._thread(peer, route, mail)
        if thread is None and route.kind == "reply":
            raise Refused("550 5.1.1 the thread this address answers is gone from the hub; "
                          f"write to the peer or conversation (name@{self.domain}) instead")
        if thread is not None and thread.kind == "approval" and peer.key in thread.recipients:
            answered = await self._approval_reply(peer, thread, mail.text)
            if answered is not None:
                return answered
        return await self._send(peer, route, mail, thread, key_id=key_id, first=first)

    async def _thread(self, peer: Peer, route: Route, mail: mime.Incoming) -> Message | None:
        """The mesh message ``mail`` answers, if it answers one ``peer`` can see and ``route``
        leads to its thread: by the reply address, else by In-Reply-To/References."""
        hub = self.connector.hub
        assert hub is not None
        if route.kind == "reply":
            found = await self.connector.email_state.thread_of(route.value)
            message = await hub.store.get_message(found[1]) if found else None
            return await self._root(message) if message is not None else None
        for ref in mail.references:
            mesh_id = mime.mesh_id_of(ref, self.domain)
            if mesh_id is not None:  # a mail the gateway sent
                message = await hub.store.get_message(mesh_id)
            else:  # perhaps a mail of the sender's that the gateway took
                message = await hub.store.find_by_client_id(peer.key, mail_key(ref))
            if message is None or not (message.sender == peer.key
                                       or peer.key in message.recipients):
                continue
            if self._leads_to(route, message):
                return await self._root(message)
        return None

    async def _root(self, message: Message) -> Message | None:
        """The thread ``message`` is in (threads are flat: a reply's root)."""
        if message.reply_to is None:
            return message
        hub = self.connector.hub_
        return await hub.store.get_message(message.reply_to)

    @staticmethod
    def _leads_to(route: Route, message: Message) -> bool:
        if route.kind == "peer":
            return route.value == message.sender or route.value in message.recipients
        return message.conversation == route.value

    async def _approval_reply(self, peer: Peer, approval: Message, text: str) -> str | None:
        """A reply to an approval request whose first word is one of its answers answers it
        (the rest is the reason); otherwise ``None`` and the reply goes on as a message."""
        data = approval.data if isinstance(approval.data, dict) else {}
        options = [str(o).lower() for o in data.get("options") or []]
        match = _REPLY_WORD.match(text)
        if not match or match.group(1).lower() not in options:
            return None
        hub = self.connector.hub_
        context = ActionContext(hub=hub, peer=peer, surface=CONNECTOR)
        approval_id = data.get("approval_id")
        current = await hub.actions.call(context, "approval_get", {"id": approval_id})
        if current["state"] != "pending":
            if str(current["answer"]).lower() == match.group(1).lower():  # a resend of it
                return f"approval {approval_id} was answered already: {current['answer']}"
            raise Refused(f"550 5.7.1 approval {approval_id} was answered already "
                          f"({current['answer']}); your {match.group(1).lower()} was not applied")
        reason = mime.one_line(match.group(2), 500) or None
        result = await hub.actions.call(context, "approval_answer", {
            "id": approval_id, "answer": match.group(1), "reason": reason})
        return f"approval {approval_id} answered {result['answer']}"

    async def _send(self, peer: Peer, route: Route, mail: mime.Incoming,
                    thread: Message | None, *, key_id: str, first: bool) -> str:
        connector = self.connector
        hub = connector.hub
        assert hub is not None
        body = mail.text
        if thread is None and mail.subject:
            body = f"**{escape_markdown(mime.one_line(mail.subject))}**\n\n{body}".rstrip()
        body, attachments = await connector.fit(body, mail.attachments)
        to = None if thread is not None else route.value
        # the mail's first recipient is keyed by the mail itself (a later mail names it)
        client_id = mail_key(key_id if first else f"{key_id}|{route.kind}:{route.value}")
        about = {"message_id": mail.message_id, "subject": mime.one_line(mail.subject)}
        data: dict[str, Any] = {"email": {k: v for k, v in about.items() if v}}
        sent = await hub.send(peer, to, body, reply_to=thread.id if thread else None,
                              client_id=client_id, data=data, attachments=attachments or None)
        where = "its thread" if thread is not None else route.address
        return f"sent to {where} as {sent['id']}"


def header_list(raw: bytes) -> list[tuple[str, str]]:
    """The headers of a mail (name, unfolded raw value), in order, read without its body and
    without decoding anything: cheap, for the checks made before a body costs time."""
    head = BytesHeaderParser(policy=compat32).parsebytes(raw)
    return [(name, _FOLD.sub(" ", mime.header_text(value))) for name, value in head.raw_items()]


def mail_key(message_id: str) -> str:
    """The ``client_id`` of the mesh message a mail became: a resend of the mail stores
    nothing twice, and a later mail naming it in ``References`` finds it."""
    return "email:" + hashlib.sha256(message_id.encode()).hexdigest()[:40]


class Refused(Exception):
    """A refusal during the SMTP conversation; ``reply`` is the whole SMTP answer."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = mime.one_line(reply, 500)  # one SMTP line, whatever a message held


def escape_markdown(text: str) -> str:
    """``text`` shown as written inside Markdown (a subject made the bold first line)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", text)
