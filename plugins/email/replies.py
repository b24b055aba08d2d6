"""What a person wrote in a mail: HTML turned into Markdown, and quoted history and signatures
cut from a reply (mail-parser-reply's patterns, tried only where they can start). Pure functions,
used by :func:`meshhub_email.mime.read_mail`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from bs4 import BeautifulSoup
from mailparser_reply.parser import EmailMessage as ReplyText
from markdownify import MarkdownConverter

# --- HTML to text -------------------------------------------------------------------------------

_HIDDEN_TAGS = ["script", "style", "head", "title", "noscript", "template"]
_LINK_SCHEMES = ("http://", "https://", "mailto:")
_MARKDOWN = MarkdownConverter(heading_style="ATX")


def html_to_text(html: str) -> str:
    """Markdown for an HTML mail. Images become their alt text, so nothing remote is fetched and
    a tracking pixel leaves no trace; links keep their target only for http(s) and mailto."""
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(_HIDDEN_TAGS):
        tag.decompose()
    for image in soup("img"):
        image.replace_with(str(image.get("alt") or ""))
    for link in soup("a"):
        if not str(link.get("href") or "").strip().lower().startswith(_LINK_SCHEMES):
            link.unwrap()
    try:
        text = _MARKDOWN.convert_soup(soup)
    except RecursionError:  # markdownify recurses per nesting level; hostile HTML nests deep
        text = soup.get_text("\n")
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- quoted history and signatures ------------------------------------------------------------

# mail-parser-reply has no Portuguese. Its patterns are compiled once, here.
_REPLY_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "sv", "pl", "ja"]
_TRAILING_QUOTE = re.compile(r"(?:\n(?:[ \t]*>[^\n]*)?[ \t]*)+\Z")
_HISTORY_START = re.compile(r"\n\n[ \t]*[_-]{32,}[ \t]*$|^-{5,} ?Original Message ?-{5,}$",
                            re.MULTILINE | re.IGNORECASE)
_SENT_FROM = re.compile(
    r"\n[ \t]*(?:sent from my|sent from (?:mail|outlook) for|get outlook for|envoy[ée] de mon"
    r"|von meinem .{1,40} gesendet|enviado desde mi|inviato da|verzonden (?:met|vanaf) mijn"
    r"|skickat från min|wysłane z)[^\n]{0,80}\s*\Z", re.IGNORECASE)
_SIGN_OFF_TAIL = re.compile(r"(?:\s*[A-ZÀ-Þ][\w.'-]*){0,4}[.!]?")
_PATTERNS = ReplyText(text="", languages=list(_REPLY_LANGUAGES), keep_hyphen_lists=True)
_HEADER = _PATTERNS.HEADER_REGEX
_SIGNATURE = _PATTERNS.SIGNATURE_REGEX


def _without_history(text: str) -> str:
    """``text`` cut where older mail surely starts: the trailing block of ">" lines, an Outlook
    rule line, "-----Original Message-----". The reply parser would drop all of it anyway; it
    only saves it the scan, whose cost grows with the length of the text and the languages."""
    head = _TRAILING_QUOTE.sub("", "\n" + text)[1:]
    start = _HISTORY_START.search(head)
    if start and head[: start.start()].strip():
        head = head[: start.start()]
    return head if head.strip() else text


def _is_sign_off(line: str) -> bool:
    """Whether a line the parser takes for the start of a signature is a sign-off ("Thanks,",
    "Best regards, Ann Smith") rather than a sentence that starts like one ("Thanks, that
    fixed it."), which is the message itself and must stay."""
    head, comma, tail = line.strip().lstrip("> ").partition(",")
    if len(head.split()) > 4 or re.search(r"[.?!:;]", head):
        return False
    return not comma or bool(_SIGN_OFF_TAIL.fullmatch(tail))


def _without_signature(body: str) -> str:
    """``body`` (lines stripped) up to the first signature that starts with a real sign-off."""
    for start in _line_starts(body):
        match = _SIGNATURE.match(body, start) or (
            start > 0 and body.startswith("\n", start) and _SIGNATURE.match(body, start - 1))
        if match:
            first = match.start() + len(match[0]) - len(match[0].lstrip())
            if _is_sign_off(body[first:].split("\n", 1)[0]):
                return body[:first]
    return body


def _indented(body: str, text: str) -> str:
    """``body`` with the indentation it had in ``text``: the parser strips every line, which
    would flatten code. Works when body is the first lines of text (the newest reply on top);
    otherwise body stays as the parser gave it."""
    lines, kept = text.split("\n"), body.split("\n")
    head = lines[: len(kept)]
    if len(head) < len(kept) or any(a.strip() != b.strip()
                                    for a, b in zip(head, kept, strict=True)):
        return body
    return "\n".join(head)


def _line_starts(text: str) -> Iterator[int]:
    yield 0
    start = text.find("\n")
    while start >= 0:
        yield start + 1
        start = text.find("\n", start + 1)


def _first_header(text: str) -> int | None:
    """Where the first header of older mail ("On ... wrote:", "From: ... Sent: ...") starts in
    ``text`` (lines stripped, as the parser has them). The parser's own read() tries its
    patterns at every character, about 1.5 ms per 2 KB with nine languages; they all start at
    a line, or for a quoted line (">") at the line break before it, so only those are tried.
    The same holds for its signature patterns, or the blank line before an Outlook rule."""
    for start in _line_starts(text):
        if _HEADER.match(text, start) or (
                start > 0 and text.startswith(">", start) and _HEADER.match(text, start - 1)):
            return max(start - 1, 0)
    return None


def strip_reply(text: str) -> str:
    """The newest reply of a mail's text, without the quoted history, the signature and a
    "Sent from my iPhone" line. A mail that is nothing but a quote is kept whole rather than
    becoming empty."""
    whole = text.replace("\r\n", "\n").strip()
    head = _without_history(whole)
    flat = "\n".join(line.strip() for line in head.split("\n"))
    newest = flat[: _first_header(flat)].strip()
    if not newest:  # older mail on top, the answers below it or between its quotes
        newest = ReplyText(text=head, languages=list(_REPLY_LANGUAGES),
                           keep_hyphen_lists=True).read().replies[0].full_body
    body = _without_signature(newest).rstrip()
    body = _SENT_FROM.sub("", "\n" + _indented(body, head)).strip("\n").rstrip()
    return body or whole
