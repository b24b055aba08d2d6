"""Mail in and mail out for the email gateway, as pure functions: no I/O, no hub, no asyncio.

:func:`read_mail` turns the raw bytes an SMTP client sent into an :class:`Incoming`: the sender,
the readable text of the newest reply (HTML turned into Markdown, quoted history and signature
removed), the ids it refers to, its attachments and whether a machine sent it. Mail is hostile
input, so nothing in it may raise anything but :class:`MailError`, whose text is the reason a
person reads in the SMTP answer: bad charsets fall back to UTF-8, broken MIME parts become
defects for the log. :func:`build_mail` turns a mesh message into an ``EmailMessage`` in which
every header value is one line, so no field can add a header. What a person wrote is found by
:mod:`.replies`; the MTA's verdict on the sender, by :mod:`.authresults`.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import HeaderParseError, MessageError
from email.header import decode_header, make_header
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses
from typing import Any

from meshhub.files import safe_name
from meshhub.sanitize import one_line

from .replies import html_to_text, strip_reply


class MailError(ValueError):
    """A mail the gateway cannot take; str(exc) is the reason a person reads in the SMTP answer."""


@dataclass
class Attachment:
    name: str  # meshhub.files.safe_name(...) of the filename (or "attachment-N")
    mime: str  # content type, e.g. "image/png"
    data: bytes


@dataclass
class Incoming:
    message_id: str | None  # Message-ID without <>, None if missing/invalid
    from_address: str | None  # lower-cased; None if missing, unparseable or several
    from_name: str  # display name, one line, may be ""
    subject: str  # decoded, one line, as written (Re:/Fwd: kept)
    text: str  # newest reply's readable text, quoted history and signature removed
    references: list[str]  # In-Reply-To, then References last to first, without <>, <= 20
    attachments: list[Attachment]
    automatic: bool  # sent by a machine (auto-reply, bounce, bulk, report)
    defects: list[str]  # what the parser found wrong, for the log
    headers: list[tuple[str, str]] = field(default_factory=list)  # (name, raw value), in order


@dataclass
class Outgoing:
    from_name: str
    from_address: str
    to: str
    reply_to: str | None
    subject: str
    text: str
    html: str | None
    message_id: str
    in_reply_to: str | None
    references: list[str]
    attachments: list[Attachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # extra, e.g. List-Id, Auto-Submitted



# --- clean text ---------------------------------------------------------------------------------

_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_SURROGATES = "\ud800-\udfff"
_NOT_IN_TEXT = re.compile(f"[{_CONTROLS}{_SURROGATES}]")


def _clean_text(text: str) -> str:
    """Text with \\n line ends and no controls but \\n and \\t (ESC sequences could repaint a
    terminal that shows the message)."""
    return _NOT_IN_TEXT.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _unescape(value: str) -> str:
    """A header value as real text: the parser keeps 8-bit header bytes as surrogate escapes,
    which are usually UTF-8 (RFC 6532); anything else becomes U+FFFD."""
    if not re.search(f"[{_SURROGATES}]", value):
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def header_text(value: object) -> str:
    """A raw header value as the parser kept it (8-bit bytes as surrogate escapes), as text."""
    return _unescape(str(value))


# --- addresses and message ids ----------------------------------------------------------------

_MSG_ID = re.compile(r"<([!-;=?-~]{1,250}@[!-;=?-~]{1,250})>")
_MAX_REFERENCES = 20


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_LOCAL = f"{_ATOM}(?:\\.{_ATOM})*"
_PLAIN_ADDRESS = re.compile(
    rf"[ \t]*(?:(?:(?P<name>[A-Za-z0-9'_-]+(?: [A-Za-z0-9'_-]+)*)[ \t]*)?"
    rf"<(?P<user>{_LOCAL})@(?P<domain>{_DOMAIN})>|(?P<bare_user>{_LOCAL})@(?P<bare_domain>{_DOMAIN}))"
    rf"[ \t]*")


def _single_address(value: str) -> Address | None:
    """The one address in a From/To-like value (unfolded), or None when there is not exactly
    one; a line break or control character makes it none rather than something rejoined. The
    usual plain ASCII forms ("Ann Smith <ann@example.com>", "ann@example.com"), without an
    encoded word (which the stdlib's parser decodes even in a local part), are read by
    :data:`_PLAIN_ADDRESS`, which gives what that parser gives in a tenth of its time (the
    parser was most of what reading a short mail cost)."""
    if re.search(f"[{_CONTROLS}\n]", value):
        return None
    plain = "=?" not in value and _PLAIN_ADDRESS.fullmatch(value)
    if plain:
        return Address(plain["name"] or "", plain["user"] or plain["bare_user"],
                       plain["domain"] or plain["bare_domain"])
    try:
        header = email.policy.default.header_factory("From", value)
        addresses = header.addresses
    except ValueError:
        return _address_only(value)
    except (HeaderParseError, IndexError, TypeError, AttributeError, UnboundLocalError):
        return None  # UnboundLocalError: the stdlib's parser fails so on "a <@[ "
    if len(addresses) != 1:
        return None
    address: Address = addresses[0]
    if not address.username or not address.domain or re.search(r"\s", address.addr_spec):
        return None
    return address


def _address_only(value: str) -> Address | None:
    """The address of a value whose display name decodes to a line break (an injection
    attempt, refused by the stdlib's parser): read from the raw value, where the name is still
    encoded; the name is decoded apart and made one line (:func:`_display_name`)."""
    pairs = getaddresses([value])
    if len(pairs) != 1 or "@" not in pairs[0][1]:
        return None
    try:
        address = Address(addr_spec=pairs[0][1])
    except (HeaderParseError, IndexError, ValueError, UnboundLocalError):
        return None
    return address if address.username and address.domain else None


def address_of(text: str) -> str | None:
    """``"Ann <Ann@Ex.com>"`` -> ``"ann@ex.com"``; None if not exactly one valid address."""
    address = _single_address(text)
    return _unescape(address.addr_spec).lower() if address else None


def message_id_for(mesh_id: str, domain: str, tag: str = "") -> str:
    """The Message-ID of the mail that carries mesh message ``mesh_id`` (to one person, when
    ``tag`` says whom: a delivery report naming it is then believed only with the right tag)."""
    return f"<mesh.{mesh_id}{'.' + tag if tag else ''}@{domain}>"


_OUR_ID = re.compile(r"<?mesh\.([0-9a-f]+)(?:\.([0-9a-z]+))?@([^<>@\s]+)>?")


def mesh_id_and_tag(message_id: str, domain: str) -> tuple[str, str] | None:
    """(mesh message id, tag) back from one of our Message-IDs; None if it is not ours."""
    match = _OUR_ID.fullmatch(message_id.strip())
    if not match or match[3].lower() != domain.lower():
        return None
    return match[1], match[2] or ""


def mesh_id_of(message_id: str, domain: str) -> str | None:
    """The mesh message id back from one of our Message-IDs; None if it is not ours."""
    found = mesh_id_and_tag(message_id, domain)
    return found[0] if found else None


def _ids(value: str) -> list[str]:
    return _MSG_ID.findall(value)


# --- reading a mail -----------------------------------------------------------------------------

# The legacy policy: its Message answers get_content_type, get_param and the like with string
# operations, where policy.default builds (and for each call re-parses) a header object,
# ten times the cost of a short mail. Only From and Subject need decoding, done below.
_PARSER = BytesParser(policy=email.policy.compat32)
_MAX_DEPTH = 20
_MAX_DEFECTS = 50
_AUTOMATIC_PRECEDENCE = {"bulk", "junk", "list"}


@dataclass
class _Reading:
    """What read_mail gathers while it walks the parts."""

    plain: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    def defect(self, text: str) -> None:
        if text not in self.defects and len(self.defects) < _MAX_DEFECTS:
            self.defects.append(text)


_CHARSET_END = re.compile(r"[\s()]")  # a folded or commented parameter ends at the space or "("


def _decode(part: Message, reading: _Reading) -> str:
    """A text part's body as str: its declared charset, else UTF-8 with replacement."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = _CHARSET_END.split(part.get_content_charset() or "", maxsplit=1)[0] or "utf-8"
    try:
        return data.decode(charset)
    except (LookupError, ValueError):
        reading.defect(f"text not in its charset {one_line(charset, 40)}, read as UTF-8")
        return data.decode("utf-8", "replace")


def _filename(part: Message) -> str | None:
    """The part's filename, RFC 2231 or RFC 2047 encoded (as mail programs still write it)."""
    try:
        name = part.get_filename()
    except (HeaderParseError, IndexError, ValueError, TypeError, AttributeError):
        return None
    return _decoded(name) if name else name


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except (HeaderParseError, IndexError, ValueError, TypeError, AttributeError):
        return None


def _parts(part: Message, reading: _Reading, depth: int = 0) -> Iterator[tuple[Message, str]]:
    """The leaf parts in order with their content type (parsing it costs, so once); a forwarded
    message (message/rfc822) is a leaf."""
    if depth > _MAX_DEPTH:
        reading.defect("MIME nested too deep, inner parts ignored")
        return
    reading.defects.extend(type(d).__name__ for d in part.defects
                           if len(reading.defects) < _MAX_DEFECTS)
    payload = part.get_payload()
    kind = part.get_content_type()
    if kind == "message/rfc822" or not isinstance(payload, list):
        yield part, kind
        return
    for child in payload:
        if isinstance(child, Message):
            yield from _parts(child, reading, depth + 1)


def _attachment(part: Message, kind: str, reading: _Reading) -> Attachment:
    number = len(reading.attachments) + 1
    if kind == "message/rfc822":
        inner = part.get_payload()
        forwarded = inner[0] if isinstance(inner, list) and inner else None
        data = (forwarded.as_bytes(policy=email.policy.compat32)
                if isinstance(forwarded, Message) else b"")
        return Attachment("forwarded.eml", "message/rfc822", data)
    payload = part.get_payload(decode=True)
    name = safe_name(_unescape(_filename(part) or ""), default=f"attachment-{number}")
    return Attachment(name, kind, payload if isinstance(payload, bytes) else b"")


def _take(part: Message, kind: str, reading: _Reading, max_bytes: int, max_count: int) -> None:
    """File one leaf part as the text, the HTML or an attachment."""
    if kind.startswith("multipart/"):
        kind = "text/plain"  # a multipart without a usable boundary: its body is all there is
    if kind == "message/rfc822" or _filename(part) or _disposition(part) == "attachment":
        attachment = _attachment(part, kind, reading)
        if len(reading.attachments) >= max_count:
            raise MailError(f"the mail has more than {max_count} attachments")
        if len(attachment.data) > max_bytes:
            raise MailError(f"the attachment {attachment.name} is over the limit of "
                            f"{max_bytes} bytes")
        reading.attachments.append(attachment)
    elif kind == "text/plain" and reading.plain is None:
        text = _decode(part, reading)
        reading.plain = text if text.strip() else None
    elif kind == "text/html" and reading.html is None:
        reading.html = _decode(part, reading)


def _raw_headers(message: Message) -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in message.raw_items()]


def _first_values(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Each header's first value, unfolded, by its lower-case name (one pass for all the
    headers read_mail looks at)."""
    first: dict[str, str] = {}
    for name, value in reversed(headers):
        first[name.lower()] = value
    return {name: value.replace("\r\n", "").replace("\n", "") for name, value in first.items()}


def _decoded(value: str) -> str:
    """An unstructured header value with its RFC 2047 words decoded (a value without any is
    as it is, which spares the header parser)."""
    if "=?" not in value:
        return value
    try:
        return str(email.policy.default.header_factory("Subject", value))
    except (HeaderParseError, IndexError, ValueError, TypeError, AttributeError):
        return value


def _display_name(address: Address, raw: str) -> str:
    """The sender's name. The stdlib's address parser keeps the space between two encoded words
    ("=?utf-8?q?J=C3=B6?= =?utf-8?q?rg?=" reads "Jö rg"), which RFC 2047 says to drop, and mail
    programs split long names that way; such a name is decoded from the raw phrase instead."""
    phrase = raw.rpartition("<")[0].strip()
    if "=?" not in phrase:
        return address.display_name
    if len(phrase) > 1 and phrase[0] == phrase[-1] == '"':
        phrase = re.sub(r"\\(.)", r"\1", phrase[1:-1])
    try:
        return str(make_header(decode_header(phrase))).strip()
    except (HeaderParseError, LookupError, ValueError):
        return address.display_name


def _is_automatic(first: dict[str, str], message: Message, sender: str | None) -> bool:
    """Whether a machine sent the mail (RFC 3834), so that answering it could start a loop."""
    auto = re.split(r"[;(\s]", first.get("auto-submitted", "").strip().lower(), maxsplit=1)[0]
    precedence = first.get("precedence", "").strip().lower()
    from_value = first.get("from", "").strip()
    return (auto not in ("", "no") or precedence in _AUTOMATIC_PRECEDENCE
            or "x-autoreply" in first or "x-autorespond" in first
            or from_value == "<>"
            or (sender or "").startswith("mailer-daemon@")
            or message.get_content_type() == "multipart/report")


def _references(first: dict[str, str]) -> list[str]:
    ids = _ids(first.get("in-reply-to", "")) + _ids(first.get("references", ""))[::-1]
    return list(dict.fromkeys(ids))[:_MAX_REFERENCES]


def read_mail(raw: bytes, *, max_attachment_bytes: int, max_attachments: int = 20) -> Incoming:
    """What the mesh needs from a raw RFC 5322 mail. Raises MailError when the mail has neither
    text nor attachment, or its attachments are over the limits; never anything else."""
    try:
        message = _PARSER.parsebytes(raw)
    except RecursionError:  # the stdlib parser recurses once per nested part
        raise MailError("the mail's MIME parts are nested too deep") from None
    headers = _raw_headers(message)
    reading = _Reading()
    for part, kind in _parts(message, reading):
        try:
            _take(part, kind, reading, max_attachment_bytes, max_attachments)
        except (MessageError, LookupError, ValueError, TypeError, AttributeError, IndexError,
                RecursionError) as exc:
            if isinstance(exc, MailError):
                raise
            reading.defect(f"unreadable part {kind}: {type(exc).__name__}")
    text = reading.plain if reading.plain is not None else html_to_text(reading.html or "")
    text = strip_reply(_clean_text(text)) if text.strip() else ""
    if not text and not reading.attachments:
        raise MailError("the mail has no readable text")
    first = _first_values(headers)
    froms = sum(1 for name, _value in headers if name.lower() == "from")
    sender = _single_address(first.get("from", "")) if froms == 1 else None  # RFC 5322: one
    from_address = _unescape(sender.addr_spec).lower() if sender else None
    ids = _ids(first.get("message-id", ""))
    return Incoming(
        message_id=ids[0] if ids else None,
        from_address=from_address,
        from_name=one_line(_unescape(_display_name(sender, first["from"]))) if sender else "",
        subject=one_line(_unescape(_decoded(first.get("subject", "")))),
        text=text,
        references=_references(first),
        attachments=reading.attachments,
        automatic=_is_automatic(first, message, from_address),
        defects=reading.defects,
        headers=headers,
    )


# --- writing a mail -----------------------------------------------------------------------------

_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
_OWN_HEADERS = {"from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
                "in-reply-to", "references", "mime-version", "content-type",
                "content-transfer-encoding", "content-disposition", "sender"}


def _address(name: str, address: str) -> Address:
    """An Address the policy quotes or RFC 2047-encodes itself; MailError if ``address`` is not
    one plain ASCII address."""
    parsed = _single_address(address)
    if parsed is None or not parsed.addr_spec.isascii():
        raise MailError(f"not a usable mail address: {one_line(address, 80)!r}")
    return Address(display_name=one_line(name), username=parsed.username, domain=parsed.domain)


def _bracketed(message_id: str) -> str | None:
    ids = _ids(message_id if message_id.strip().startswith("<") else f"<{message_id.strip()}>")
    return f"<{ids[0]}>" if ids else None


def _extra_headers(mail: EmailMessage, headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _OWN_HEADERS:
            raise MailError(f"build_mail cannot set the header {one_line(name, 80)!r}")
        mail[name] = one_line(value, 900)


def _transfer_encoding(text: str) -> str | None:
    """Quoted-printable for non-ASCII text, which the policy would send as 8bit: not every relay
    takes 8BITMIME. ASCII is left to the policy (7bit, or quoted-printable for long lines)."""
    return None if text.isascii() else "quoted-printable"


def _body(mail: EmailMessage, out: Outgoing) -> None:
    text = _clean_text(out.text)
    mail.set_content(text, subtype="plain", charset="utf-8", cte=_transfer_encoding(text))
    if out.html is not None:
        html = _clean_text(out.html)
        mail.add_alternative(html, subtype="html", charset="utf-8", cte=_transfer_encoding(html))
    for attachment in out.attachments:
        maintype, slash, subtype = attachment.mime.partition("/")
        if not (slash and _HEADER_NAME.fullmatch(maintype) and _HEADER_NAME.fullmatch(subtype)):
            maintype, subtype = "application", "octet-stream"
        mail.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                            filename=safe_name(attachment.name))


class _IdsHeader(BaseHeader):
    """In-Reply-To and References: message ids a client must read as written. The policy would
    RFC 2047-encode such a value once it is longer than a line (an Outlook Message-ID is), and
    no client decodes it there; this folds between the ids and never encodes."""

    max_count = 1

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["decoded"] = " ".join(value.split())
        kwds["parse_tree"] = None  # not used: fold() below writes the value

    def fold(self, *, policy: email.policy.Policy) -> str:
        return f"{self.name}: " + f"{policy.linesep} ".join(str(self).split()) + policy.linesep


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("in-reply-to", _IdsHeader)
_HEADERS.map_to_type("references", _IdsHeader)
_WRITE_POLICY = email.policy.SMTP.clone(header_factory=_HEADERS)


def build_mail(out: Outgoing) -> EmailMessage:
    """The mail for a mesh message, for policy SMTP (CRLF). Every header value is one line and
    addresses go through Address, so no field can add a header or a recipient."""
    mail = EmailMessage(policy=_WRITE_POLICY)
    mail["From"] = _address(out.from_name, out.from_address)
    mail["To"] = _address("", out.to)
    if out.reply_to:
        mail["Reply-To"] = _address("", out.reply_to)
    mail["Subject"] = one_line(out.subject)
    mail["Date"] = format_datetime(datetime.now(UTC))
    message_id = _bracketed(out.message_id)
    if message_id is None:
        raise MailError(f"not a Message-ID: {one_line(out.message_id, 80)!r}")
    mail["Message-ID"] = message_id
    in_reply_to = _bracketed(out.in_reply_to or "")
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
    references = [ref for ref in map(_bracketed, out.references) if ref]
    if references:
        mail["References"] = " ".join(references)
    _extra_headers(mail, out.headers)
    _body(mail, out)
    return mail
