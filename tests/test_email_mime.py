"""The email gateway's pure mail functions (meshhub_email.mime) on built and recorded mails."""

from __future__ import annotations

import base64
import email.policy
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshhub_email.authresults import auth_verdict
from meshhub_email.mime import (
    Attachment,
    MailError,
    Outgoing,
    address_of,
    build_mail,
    mesh_id_of,
    message_id_for,
    one_line,
    read_mail,
)

LIMIT = 1_000_000


def mail(headers: str, body: bytes | str = b"hello\r\n") -> bytes:
    """Raw mail bytes from header lines (LF is fine) and a body."""
    head = headers.strip("\n").replace("\n", "\r\n").encode()
    data = body.encode() if isinstance(body, str) else body
    return head + b"\r\n\r\n" + data


def read(raw: bytes, **limits: int):
    return read_mail(raw, max_attachment_bytes=limits.get("max_bytes", LIMIT),
                     max_attachments=limits.get("max_count", 20))


# --- charsets and encodings -----------------------------------------------------------------------

@pytest.mark.parametrize("charset, text", [
    ("iso-8859-1", "Grüße aus Köln, ça va?"),
    ("koi8-r", "Привет, мир"),
    ("shift_jis", "こんにちは世界"),
])
def test_a_declared_charset_is_decoded(charset, text):
    raw = mail(f"From: a@example.com\nContent-Type: text/plain; charset={charset}\n"
               "Content-Transfer-Encoding: 8bit", text.encode(charset))
    assert read(raw).text == text


def test_an_unknown_charset_falls_back_to_utf8():
    raw = mail("From: a@example.com\nContent-Type: text/plain; charset=x-no-such-charset",
               "Grüße".encode())
    got = read(raw)
    assert got.text == "Grüße"
    assert any("charset" in defect for defect in got.defects)


def test_a_wrong_charset_falls_back_to_utf8_with_replacement():
    raw = mail("From: a@example.com\nContent-Type: text/plain; charset=utf-8", b"caf\xe9 ok")
    assert read(raw).text == "caf\ufffd ok"


def test_eight_bit_bytes_without_a_charset_are_read_as_utf8():
    raw = mail("From: a@example.com\nContent-Type: text/plain", "naïve ☃".encode())
    assert read(raw).text == "naïve ☃"


def test_quoted_printable_and_base64_bodies_are_decoded():
    qp = mail("From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
              "Content-Transfer-Encoding: quoted-printable", b"caf=C3=A9 =\r\nsoft break")
    assert read(qp).text == "café soft break"
    body = base64.encodebytes("Zürich ☃".encode())
    b64 = mail("From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
               "Content-Transfer-Encoding: base64", body)
    assert read(b64).text == "Zürich ☃"


def test_encoded_words_in_subject_and_name_are_decoded():
    raw = mail("From: =?iso-8859-1?q?J=F6rg?= =?utf-8?b?TcO8bGxlcg==?= <j@example.de>\n"
               "Subject: =?koi8-r?b?8NLJ18XU?= and =?utf-8?q?caf=C3=A9?=")
    got = read(raw)
    assert got.from_name == "JörgMüller"
    assert got.subject == "Привет and café"


def test_raw_utf8_headers_are_read():
    raw = mail("From: Zoë <zoe@example.com>\nSubject: Grüße ☃".encode().decode("latin-1"))
    raw = raw.decode().encode("latin-1")
    got = read(raw)
    assert got.from_name == "Zoë" and got.subject == "Grüße ☃"


def test_controls_leave_the_text_and_one_line_values():
    raw = mail("From: =?utf-8?q?Ann=1B[31m_=E2=80=AEevil?= <a@example.com>\n"
               "Subject: =?utf-8?q?two=0D=0Alines=00?=",
               "red \x1b[31mtext\x00\r\nnext\tline\x85\r\n".encode())
    got = read(raw)
    assert got.text == "red [31mtext\nnext\tline"
    assert got.from_name == "Ann[31m evil"
    assert got.subject == "two lines"



def test_a_from_that_breaks_the_stdlib_parser_is_no_address():
    """The stdlib's address parser raises UnboundLocalError on an unclosed domain literal."""
    got = read(mail("From: Ann <@[ \nSubject: hi"))
    assert got.from_address is None and got.text == "hello"
    assert address_of("a <@[ ") is None

# --- malformed MIME -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, readable", [
    (mail("From: a@example.com\nContent-Type: multipart/mixed",
          "no boundary here\n--x\nstill text\n"), "no boundary here"),
    (mail('From: a@example.com\nContent-Type: multipart/mixed; boundary="x"',
          "--x\nContent-Type: text/plain\n\ntruncated part with no end"),
     "truncated part with no end"),
    (mail('From: a@example.com\n\x01\x02 garbage ::: header\nnot a header at all\n'
          'Content-Type: text/plain', "body after garbage"), None),
    (mail('From: a@example.com\nContent-Type: multipart/mixed; boundary="x"',
          "--x\nContent-Type: text/plain\n\nfine text\n--x\nContent-Type: application/pdf\n"
          "Content-Disposition: attachment; filename=a.pdf\nContent-Transfer-Encoding: base64\n"
          "\n!!!not base64@@@==x\n--x--\n"), "fine text"),
    (mail("From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
          "Content-Transfer-Encoding: base64", "SGVsbG8gd29ybGQ=!!%%broken"), None),
    (mail("From: a@example.com\nContent-Type: ;;;/// charset==\n"
          "Content-Transfer-Encoding: x-unheard-of", "odd headers"), "odd headers"),
])
def test_malformed_mime_gives_what_can_be_read(raw, readable):
    try:
        got = read(raw)
    except MailError:
        assert readable is None
        return
    if readable is not None:
        assert readable in got.text


def test_mime_nested_too_deep_is_refused_or_cut():
    def nested(depth: int) -> bytes:
        return b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n'
                        % (i, i) for i in range(depth)) + b"Content-Type: text/plain\r\n\r\nx"

    with pytest.raises(MailError, match="nested too deep"):
        read(b"From: a@example.com\r\n" + nested(5000))
    with pytest.raises(MailError, match="no readable text"):
        read(b"From: a@example.com\r\n" + nested(50))
    assert read(b"From: a@example.com\r\n" + nested(5)).text == "x"


def test_malformed_mime_is_reported_as_defects():
    raw = mail('From: a@example.com\nContent-Type: multipart/mixed; boundary="x"',
               "--x\nContent-Type: text/plain\n\ntruncated")
    assert read(raw).defects


# --- attachments ----------------------------------------------------------------------------------

def with_parts(*parts: str) -> bytes:
    body = "".join(f"--b\n{part}\n" for part in parts) + "--b--\n"
    return mail('From: a@example.com\nContent-Type: multipart/mixed; boundary="b"', body)


TEXT_PART = "Content-Type: text/plain\n\nsee attached"


def png(filename: str, size: int = 4, disposition: str = "attachment") -> str:
    data = base64.b64encode(b"\x89PNG" + b"\0" * (size - 4)).decode()
    return (f"Content-Type: image/png\nContent-Disposition: {disposition}; "
            f'filename="{filename}"\nContent-Transfer-Encoding: base64\n\n{data}')


def test_attachments_are_read_with_safe_names():
    raw = with_parts(TEXT_PART, png("../../etc/passwd.png"), png("logo.png", disposition="inline"),
                     "Content-Type: application/octet-stream\nContent-Disposition: attachment\n"
                     "\nabc")
    got = read(raw)
    assert got.text == "see attached"
    assert [(a.name, a.mime) for a in got.attachments] == [
        ("passwd.png", "image/png"), ("logo.png", "image/png"),
        ("attachment-3", "application/octet-stream")]
    assert got.attachments[0].data == b"\x89PNG"


def test_a_forwarded_message_is_an_eml_attachment():
    raw = with_parts(TEXT_PART, "Content-Type: message/rfc822\n\nFrom: old@example.com\n"
                                "Subject: old\n\nold body")
    [forwarded] = read(raw).attachments
    assert (forwarded.name, forwarded.mime) == ("forwarded.eml", "message/rfc822")
    assert b"Subject: old" in forwarded.data and b"old body" in forwarded.data


def test_a_mail_with_only_an_attachment_is_taken():
    got = read(with_parts(png("a.png")))
    assert got.text == "" and len(got.attachments) == 1


def test_an_attachment_over_the_size_limit_is_refused_by_name():
    with pytest.raises(MailError, match=r"big\.png.*100 bytes"):
        read(with_parts(TEXT_PART, png("big.png", size=200)), max_bytes=100)


def test_too_many_attachments_are_refused():
    with pytest.raises(MailError, match="more than 2 attachments"):
        read(with_parts(TEXT_PART, png("1.png"), png("2.png"), png("3.png")), max_count=2)


def test_a_mail_without_text_or_attachment_is_refused():
    with pytest.raises(MailError, match="no readable text"):
        read(mail("From: a@example.com\nSubject: empty", b"   \r\n"))
    with pytest.raises(MailError, match="no readable text"):
        read(mail("From: a@example.com\nContent-Type: image/svg+xml", b"<svg/>"))


# --- automatic mail -------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, automatic", [
    ("From: a@example.com", False),
    ("From: a@example.com\nAuto-Submitted: no", False),
    ("From: a@example.com\nAuto-Submitted: auto-replied", True),
    ("From: a@example.com\nAuto-Submitted: Auto-Generated (vacation)", True),
    ("From: a@example.com\nPrecedence: bulk", True),
    ("From: a@example.com\nPrecedence: junk", True),
    ("From: a@example.com\nPrecedence: list", True),
    ("From: a@example.com\nX-Autoreply: yes", True),
    ("From: a@example.com\nX-Autorespond: vacation", True),
    ("From: <>", True),
    ("From: Mail Delivery System <MAILER-DAEMON@mx.example.com>", True),
    ('From: a@example.com\nContent-Type: multipart/report; report-type=delivery-status; '
     'boundary="r"', True),
])
def test_automatic_mail_is_recognised(headers, automatic):
    body = "--r\nContent-Type: text/plain\n\nbounce\n--r--\n" if "report" in headers else "hi"
    assert read(mail(headers, body)).automatic is automatic


# --- ids and addresses ----------------------------------------------------------------------------

def test_message_ids_round_trip():
    message_id = message_id_for("0a1b2c", "mesh.example")
    assert message_id == "<mesh.0a1b2c@mesh.example>"
    assert mesh_id_of(message_id, "mesh.example") == "0a1b2c"
    assert mesh_id_of("mesh.0a1b2c@MESH.Example", "mesh.example") == "0a1b2c"
    assert mesh_id_of("<mesh.0a1b2c@other.example>", "mesh.example") is None
    assert mesh_id_of("<mesh.xyz@mesh.example>", "mesh.example") is None
    assert mesh_id_of("<CAF123@mail.gmail.com>", "mesh.example") is None


def test_references_are_newest_first_deduplicated_and_capped():
    refs = " ".join(f"<r{i}@x>" for i in range(30))
    got = read(mail(f"From: a@example.com\nIn-Reply-To: <r29@x>\nReferences: {refs}"))
    assert got.references[:3] == ["r29@x", "r28@x", "r27@x"]
    assert len(got.references) == 20 and len(set(got.references)) == 20


def test_a_missing_or_broken_message_id_is_none():
    assert read(mail("From: a@example.com")).message_id is None
    assert read(mail("From: a@example.com\nMessage-ID: no brackets")).message_id is None


@pytest.mark.parametrize("text, address", [
    ("Ann <Ann@Ex.com>", "ann@ex.com"),
    ("ann@ex.com", "ann@ex.com"),
    ('"Smith, Bob" <bob@corp.example>', "bob@corp.example"),
    ("a@ex.com, b@ex.com", None),
    ("not an address", None),
    ("", None),
    ("<>", None),
])
def test_address_of(text, address):
    assert address_of(text) == address


def test_several_from_addresses_give_no_sender():
    got = read(mail("From: a@example.com, b@example.com"))
    assert got.from_address is None


# --- one_line -------------------------------------------------------------------------------------

def test_one_line():
    assert one_line("  a\r\nb\tc\u2028d\u2029e  ") == "a b c d e"
    assert one_line("x\x00\x1b[1m\u202eevil\u2066") == "x[1mevil"
    assert one_line("abcdef", limit=4) == "abc…"
    assert one_line("abcd", limit=4) == "abcd"


# --- building mail --------------------------------------------------------------------------------

def outgoing(**fields) -> Outgoing:
    base = dict(from_name="builder", from_address="hub@mesh.example", to="ann@example.com",
                reply_to=None, subject="Build status", text="The build is green.", html=None,
                message_id=message_id_for("0a1b", "mesh.example"), in_reply_to=None,
                references=[])
    return Outgoing(**(base | fields))


def parsed(out: Outgoing):
    return BytesParser(policy=email.policy.default).parsebytes(build_mail(out).as_bytes())


def test_header_injection_is_impossible():
    out = outgoing(from_name="Eve\r\nBcc: evil@x", subject="Hi\r\nBcc: evil@x\nX-Evil: 1",
                   headers={"List-Id": "mesh\r\nBcc: evil@x"})
    raw = build_mail(out).as_bytes()
    back = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert back["Bcc"] is None and back["X-Evil"] is None
    assert raw.count(b"\r\nSubject:") == 1
    assert back["Subject"] == "Hi Bcc: evil@x X-Evil: 1"
    assert back["List-Id"] == "mesh Bcc: evil@x"


def test_a_bad_address_or_header_name_is_refused():
    with pytest.raises(MailError):
        build_mail(outgoing(to="ann@example.com\r\nBcc: evil@x"))
    with pytest.raises(MailError):
        build_mail(outgoing(to="a@example.com, b@example.com"))
    with pytest.raises(MailError):
        build_mail(outgoing(headers={"Bcc": "evil@x"}))
    with pytest.raises(MailError):
        build_mail(outgoing(headers={"X-Bad\r\nBcc": "x"}))


def test_the_built_mail_has_its_threading_headers_and_parts():
    out = outgoing(reply_to="reply+0a1b@mesh.example", html="<p>The build is <b>green</b>.</p>",
                   in_reply_to="CAF=older@mail.gmail.com",
                   references=["first@x", "CAF=older@mail.gmail.com", "bad id with spaces"],
                   attachments=[Attachment("log.txt", "text/plain", b"line\n"),
                                Attachment("x.bin", "nonsense", b"\0\1")],
                   headers={"Auto-Submitted": "auto-generated", "List-Id": "<general.mesh>"})
    raw = build_mail(out).as_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    back = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert back["Message-ID"] == "<mesh.0a1b@mesh.example>"
    assert back["In-Reply-To"] == "<CAF=older@mail.gmail.com>"
    assert back["References"] == "<first@x> <CAF=older@mail.gmail.com>"
    assert back["Reply-To"] == "reply+0a1b@mesh.example"
    assert back["Date"].datetime.utcoffset().total_seconds() == 0
    assert back["Auto-Submitted"] == "auto-generated"
    assert back.get_body(("plain",)).get_content().rstrip() == "The build is green."
    assert "<b>green</b>" in back.get_body(("html",)).get_content()
    files = [(p.get_filename(), p.get_content_type()) for p in back.iter_attachments()]
    assert files == [("log.txt", "text/plain"), ("x.bin", "application/octet-stream")]


def test_non_ascii_names_and_subjects_round_trip():
    out = outgoing(from_name='Jörg "the builder", Müller', subject="Grüße ☃ — привет",
                   text="Grüße ☃")
    raw = build_mail(out).as_bytes()
    assert raw.isascii()
    got = read(raw)
    assert got.from_name == 'Jörg "the builder", Müller'
    assert got.from_address == "hub@mesh.example"
    assert got.subject == "Grüße ☃ — привет"
    assert got.text == "Grüße ☃"


# --- Authentication-Results -----------------------------------------------------------------------

MX = "mx.mesh.example"


def ar(value: str) -> tuple[str, str]:
    return ("Authentication-Results", value)


@pytest.mark.parametrize("headers, passed, reason", [
    ([ar(f"{MX}; dmarc=pass header.from=example.com")], True, "dmarc=pass"),
    ([ar(f"{MX}; dkim=pass header.d=example.com; dmarc=fail header.from=example.com")],
     False, "dmarc=fail for example.com"),
    ([("Received", "from x")], False, f"no Authentication-Results from {MX}"),
    ([ar(f"{MX}; dmarc=fail header.from=example.com"),
      ar(f"{MX}; dmarc=pass header.from=example.com")], False, "dmarc=fail for example.com"),
    ([ar("evil.example; dmarc=pass header.from=example.com")], False,
     f"no Authentication-Results from {MX}"),
    ([ar("evil.example; dmarc=pass"), ar(f"{MX.upper()}; dmarc=pass header.from=example.com")],
     True, "dmarc=pass"),
    ([ar(f"{MX}; dkim=pass header.d=mail.example.com")], True, "dkim=pass for mail.example.com"),
    ([ar(f"{MX}; dkim=pass header.i=@example.com")], True, "dkim=pass for example.com"),
    ([ar(f"{MX}; dkim=pass header.d=other.example")], False,
     "no dmarc, aligned dkim or spf pass for example.com"),
    ([ar(f"{MX}; spf=pass smtp.mailfrom=bounce@bounces.example.com")], True,
     "spf=pass for bounces.example.com"),
    ([ar(f"{MX}; spf=pass smtp.mailfrom=bounce@example.com.evil.net")], False,
     "no dmarc, aligned dkim or spf pass for example.com"),
    ([ar(f"{MX}; dmarc=none header.from=example.com; dkim=pass header.d=example.com")], True,
     "dkim=pass for example.com"),
    ([ar(f"{MX}; dmarc=pass header.from=other.example")], False,
     "dmarc=pass for other.example, not example.com"),
    ([ar(f"{MX}; dkim=pass header.d=com")], False,
     "no dmarc, aligned dkim or spf pass for example.com"),
    ([ar(f"{MX}; dmarc=pass (( unbalanced")], False,
     f"the Authentication-Results from {MX} do not parse"),
])
def test_auth_verdict(headers, passed, reason):
    verdict = auth_verdict(headers, MX, "example.com")
    assert (verdict.passed, verdict.reason) == (passed, reason)


def test_auth_verdict_reads_read_mails_headers():
    raw = mail(f"Authentication-Results: {MX};\n dkim=pass header.d=example.com;\n"
               " dmarc=pass header.from=example.com\nFrom: a@example.com")
    got = read(raw)
    assert got.headers[0][0] == "Authentication-Results"
    assert auth_verdict(got.headers, MX, "example.com").passed


# --- properties -----------------------------------------------------------------------------------

MIME_PIECES = [
    b"From: a@example.com\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: text/plain; charset=x-bad\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%FF%FE\r\n", b"\r\n", b"--b\r\n",
    b"--b--\r\n", b"Content-Type: message/rfc822\r\n", b"=?utf-8?b?////?=", b"\xff\xfe\x00",
    b"Subject: =?x-unknown?q?=FF?=\r\n", b"Message-ID: <a@b>\r\n", b"\t folded\r\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000),
                 st.lists(st.one_of(st.sampled_from(MIME_PIECES), st.binary(max_size=40)),
                          max_size=40).map(b"".join)))
def test_read_mail_raises_nothing_but_mail_error(raw):
    try:
        got = read_mail(raw, max_attachment_bytes=500, max_attachments=3)
    except MailError:
        return
    assert "\r" not in got.text and "\n" not in got.subject + got.from_name


header_text = st.text(max_size=300)


@settings(max_examples=200, deadline=None)
@given(name=header_text, subject=header_text, text=st.text(max_size=2000),
       html=st.none() | st.text(max_size=500),
       extra=st.dictionaries(st.sampled_from(["List-Id", "Auto-Submitted", "X-Mesh-Id"]),
                             header_text, max_size=3),
       filename=header_text)
def test_build_mail_never_raises_and_has_one_of_each_address_header(name, subject, text, html,
                                                                    extra, filename):
    out = outgoing(from_name=name, subject=subject, text=text, html=html, headers=extra,
                   attachments=[Attachment(filename, "application/pdf", b"%PDF")])
    raw = build_mail(out).as_bytes()
    back = BytesParser(policy=email.policy.default).parsebytes(raw)
    for header in ("Subject", "From", "To"):
        assert len(back.get_all(header, [])) == 1
    assert back["Bcc"] is None
    assert back["To"].addresses[0].addr_spec == "ann@example.com"


@settings(max_examples=150, deadline=None)
@given(name=header_text, subject=header_text, text=st.text(max_size=500))
def test_what_build_mail_writes_read_mail_reads_back(name, subject, text):
    raw = build_mail(outgoing(from_name=name, subject=subject, text=text + "\nend")).as_bytes()
    got = read(raw)
    assert got.subject == one_line(subject)
    # the stdlib folds a long non-ASCII name into encoded words at a space, and RFC 2047 drops
    # the space between encoded words: a space may go missing, nothing else
    assert got.from_name.replace(" ", "") == one_line(name).replace(" ", "")
    assert got.from_address == "hub@mesh.example"
    assert got.message_id == "mesh.0a1b@mesh.example"


def test_long_message_ids_are_written_as_ids_never_encoded():
    from aiosmtplib.email import flatten_message

    outlook = ("<AM0PR07MB1234567890ABCDEF1234567890ABCDEF12345678@AM0PR07MB1234.eurprd07.prod"
               ".outlook.com>")
    ours = message_id_for("01a2442fb38a000000fbf908", "mail.example-company.co.uk", "f" * 20)
    built = build_mail(Outgoing(
        from_name="carl", from_address="hub@mail.example-company.co.uk", to="ann@example.com",
        reply_to=None, subject="Re: hi", text="hi", html=None, message_id=ours,
        in_reply_to=outlook, references=[outlook, ours]))
    raw = flatten_message(built)  # as aiosmtplib writes it to the relay
    assert f"In-Reply-To: {outlook}\r\n".encode() in raw
    assert f"References: {outlook}\r\n {ours}\r\n".encode() in raw
    assert b"=?" not in raw
    assert read(raw).references == [outlook.strip("<>"), ours.strip("<>")]
