"""What a person wrote, found in a mail (meshhub_email.replies): quoted history and signatures
cut from replies written the way Gmail, Outlook and others write them, HTML read as Markdown, and
the fast search for where older mail starts checked against mail-parser-reply's own."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshhub_email.replies import html_to_text, strip_reply

from .test_email_mime import mail, read

# --- recorded-style replies -----------------------------------------------------------------------

GMAIL_REPLY = b"""\
MIME-Version: 1.0
References: <mesh.0a1b@mesh.example> <CAF=older@mail.gmail.com>
In-Reply-To: <CAF=older@mail.gmail.com>
From: Ann Example <Ann.Example@Gmail.com>
Date: Mon, 1 Jan 2024 10:05:00 +0100
Message-ID: <CAF=new123+x@mail.gmail.com>
Subject: Re: Build status
To: hub@mesh.example
Content-Type: multipart/alternative; boundary="000000000000abc"

--000000000000abc
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

Sounds good, ship it.

Could you also check the =E2=80=9Cdeploy=E2=80=9D step?

--=20
Ann Example
Platform team

On Mon, Jan 1, 2024 at 10:00 AM builder <hub@mesh.example>
wrote:

> The build is green.
>
> -- builder
>

--000000000000abc
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

<div dir=3D"ltr">Sounds good, ship it.<div><br></div></div>

--000000000000abc--
""".replace(b"\n", b"\r\n")

OUTLOOK_REPLY = b"""\
From: "Smith, Bob" <bob.smith@corp.example>
To: "hub@mesh.example" <hub@mesh.example>
Subject: RE: Build status
Thread-Topic: Build status
Date: Mon, 1 Jan 2024 09:10:00 +0000
Message-ID: <DB9PR01MB1234@DB9PR01MB1234.eurprd01.prod.outlook.com>
In-Reply-To: <mesh.0a1b@mesh.example>
References: <mesh.0a1b@mesh.example>
Content-Type: multipart/alternative;
\tboundary="_000_DB9PR01MB1234_"
MIME-Version: 1.0

--_000_DB9PR01MB1234_
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

Agreed, let's roll back first.

Best regards,
Bob Smith
Senior Engineer | Corp Ltd.

________________________________
From: builder <hub@mesh.example>
Sent: Monday, January 1, 2024 10:00 AM
To: Smith, Bob <bob.smith@corp.example>
Subject: Build status

The build is red.

--_000_DB9PR01MB1234_
Content-Type: text/html; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Agreed, let's roll back first.</p></body></html>

--_000_DB9PR01MB1234_--
""".replace(b"\n", b"\r\n")


def test_a_gmail_reply_loses_its_quote_and_signature():
    got = read(GMAIL_REPLY)
    assert got.text == "Sounds good, ship it.\n\nCould you also check the \u201cdeploy\u201d step?"
    assert got.from_address == "ann.example@gmail.com"
    assert got.from_name == "Ann Example"
    assert got.subject == "Re: Build status"
    assert got.message_id == "CAF=new123+x@mail.gmail.com"
    assert got.references == ["CAF=older@mail.gmail.com", "mesh.0a1b@mesh.example"]
    assert not got.automatic and got.attachments == []


def test_an_outlook_reply_loses_its_quote_and_signature():
    got = read(OUTLOOK_REPLY)
    assert got.text == "Agreed, let's roll back first."
    assert got.from_address == "bob.smith@corp.example"
    assert got.from_name == "Smith, Bob"
    assert got.references == ["mesh.0a1b@mesh.example"]


@pytest.mark.parametrize("text, expected", [
    ("Fine.\n\nSent from my iPhone\n\n> On Monday, Bob wrote:\n> hi", "Fine."),
    ("Passt.\n\nViele Grüße\nJörg\n\nAm 01.01.2024 um 10:00 schrieb Bob <b@x.de>:\n> alt",
     "Passt."),
    ("Merci !\n\nCordialement,\nMarie\n\nLe lun. 1 janv. 2024 à 10:00, Bob <b@x.fr> a écrit :"
     "\n> vieux", "Merci !"),
    ("On top\n-----Original Message-----\nFrom: x\nSent: y\nold", "On top"),
    ("> only a quote\n> nothing else", "> only a quote\n> nothing else"),
    ("Thanks, that fixed it.\nCan we deploy?\n\nBest,\nAnn",
     "Thanks, that fixed it.\nCan we deploy?"),
    ("Steps:\n- build\n- test\n\nAnn", "Steps:\n- build\n- test\n\nAnn"),
    ("The fix:\n\n    def f(x):\n        return x\n\n-- \nAnn",
     "The fix:\n\n    def f(x):\n        return x"),
])
def test_strip_reply(text, expected):
    assert strip_reply(text) == expected


# --- HTML -----------------------------------------------------------------------------------------

HTML_ONLY = """\
<html><head><title>Secret title</title><style>p { color: red; }</style>
<script>alert("x")</script></head>
<body><h1>Release notes</h1>
<p>Version <b>2.0</b> is out, see <a href="https://docs.example/release">the notes</a>.</p>
<p>Do not <a href="javascript:alert(1)">click here</a> or <a href="file:///etc/passwd">here</a>.</p>
<p><img src="https://cdn.example/logo.png" alt="ACME logo"></p>
<img src="https://track.example/open.gif?u=42" width="1" height="1" alt="">
<p>Mail <a href="mailto:ops@example.com">ops</a>.</p>
<noscript>enable scripts</noscript>
</body></html>
"""


def test_html_to_text_keeps_the_reading_and_drops_the_rest():
    text = html_to_text(HTML_ONLY)
    assert text.startswith("# Release notes")
    assert "[the notes](https://docs.example/release)" in text
    assert "[ops](mailto:ops@example.com)" in text
    assert "click here" in text and "javascript" not in text and "file:" not in text
    assert "ACME logo" in text and "cdn.example" not in text
    for hidden in ("Secret title", "color", "alert", "track.example", "enable scripts"):
        assert hidden not in text
    assert "\n\n\n" not in text and all(line == line.rstrip() for line in text.splitlines())


def test_deeply_nested_html_still_gives_its_text():
    assert html_to_text("<div>" * 5000 + "deep" + "</div>" * 5000) == "deep"


def test_an_html_only_mail_reads_as_markdown():
    raw = mail("From: a@example.com\nSubject: notes\nContent-Type: text/html; charset=utf-8",
               HTML_ONLY)
    got = read(raw)
    assert got.text.startswith("# Release notes") and "track.example" not in got.text


def test_an_empty_plain_part_gives_way_to_the_html():
    raw = mail('From: a@example.com\nContent-Type: multipart/alternative; boundary="b"',
               "--b\nContent-Type: text/plain\n\n \n--b\nContent-Type: text/html\n\n"
               "<p>from html</p>\n--b--\n")
    assert read(raw).text == "from html"


REPLY_LINES = ["hello there", "", "On Mon, Jan 1, 2024 at 10:00 AM Bob <b@x.com> wrote:",
               "On Mon, Jan 1, 2024 at 10:00 AM Bob <b@x.com>", "wrote:", "From: Bob",
               "Sent: Monday", "To: Ann", "Subject: hi", "> quoted", "> > deeper",
               "Am 01.01.2024 um 10:00 schrieb Bob <b@x.de>:", "Von: Bob", "Gesendet: Mo",
               "-----Original Message-----", "Best regards,", "On time: yes", "  indented: x",
               "> From: Bob", "> Sent: Monday", ">> To: Ann", "> On Sunday Bob <b@x.com> wrote:",
               "*From:* Bob", "**Sent:** Monday"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(REPLY_LINES), max_size=14).map("\n".join))
def test_the_fast_header_search_finds_what_the_parsers_read_finds(text):
    from mailparser_reply.parser import EmailMessage

    from meshhub_email.replies import _REPLY_LANGUAGES, _first_header

    flat = "\n".join(line.strip() for line in text.split("\n"))
    cut = _first_header(flat)
    replies = EmailMessage(text=flat, languages=list(_REPLY_LANGUAGES)).read().replies
    if cut is None or flat[:cut].strip():
        assert flat[:cut].strip() == replies[0].content
