"""Markdown (as agents write it) to the small HTML subset chat platforms accept, and splitting.

:func:`markdown_to_html` writes Telegram's HTML from the same CommonMark parse as every other
surface (:mod:`meshhub.render`), so a message reads the same here as on the web page: what is
emphasis, code, a list or a link there is the same here, and what stays text there (raw HTML, a
``javascript:`` link) stays text here. Telegram's HTML parse mode accepts ``b i u s code pre a
blockquote`` and the entities ``&lt;``, ``&gt;``, ``&amp;``, ``&quot;``; every piece of text is
escaped and only balanced tags from that list are written, so whatever an agent writes
(unbalanced ``*``, raw ``<``, half a link) renders instead of failing with "can't parse
entities". What Telegram has no tag for is written as text: headings as a bold line, lists as
``• `` and ``1. `` lines indented by nesting, tables as aligned columns in ``<pre>``, a rule as a
line, an image as a link, a quote inside a quote as ``> `` lines (Telegram cannot nest quotes).
Links keep ``tg://`` as well, which Telegram needs to mention a user. HTML was picked over
MarkdownV2 because its escaping rule is three characters, not eighteen context-dependent ones.

:func:`split_html` cuts a long text into chunks of at most ``limit`` visible characters
(UTF-16 code units, which is how Telegram counts its 4096 limit), preferring line then word
boundaries, closing the tags open at a cut and reopening them in the next chunk.
"""

from __future__ import annotations

import html
import re

from ..render import LINK_SCHEMES, Writer

ALLOWED_SCHEMES = (*LINK_SCHEMES, "tg://")
_LANG = re.compile(r"[\w+-]+")


def escape(text: str) -> str:
    """Escape text for HTML parse mode (``&``, ``<``, ``>`` and ``"``)."""
    return html.escape(text, quote=True).replace("&#x27;", "'")


class Telegram(Writer):
    """Telegram's HTML: only ``b i s code pre a blockquote``, every piece of text escaped."""

    schemes = ALLOWED_SCHEMES
    bullet = "• "

    def escape(self, text: str) -> str:
        return escape(text)

    def strong(self, inner: str) -> str:
        return f"<b>{inner}</b>"

    def em(self, inner: str) -> str:
        return f"<i>{inner}</i>"

    def strike(self, inner: str) -> str:
        return f"<s>{inner}</s>"

    def code(self, text: str) -> str:
        return f"<code>{escape(text)}</code>"

    def link(self, url: str, label: str) -> str:
        return f'<a href="{escape(url)}">{label}</a>'

    def heading(self, inner: str) -> str:
        return f"<b>{inner}</b>"

    def quote(self, inner: str) -> str:
        return super().quote(inner) if self.quotes else f"<blockquote>{inner}</blockquote>"

    def fence(self, code: str, lang: str) -> str:
        if not _LANG.fullmatch(lang):
            return self.preformatted(code)
        return f'<pre><code class="language-{lang}">{escape(code)}</code></pre>'

    def preformatted(self, text: str) -> str:
        return f"<pre>{escape(text)}</pre>"


def markdown_to_html(text: str) -> str:
    """Markdown to Telegram's HTML, from the same parse as every other surface."""
    return Telegram(text).render()


# -- splitting ------------------------------------------------------------------------------------
_TOKEN = re.compile(r"<[^>]*>|&#?\w+;|[^<&]", re.DOTALL)
_TAG_NAME = re.compile(r"</?\s*([a-zA-Z][\w-]*)")


def visible_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units of the text after entity parsing."""
    plain = html.unescape(re.sub(r"<[^>]*>", "", text))
    return len(plain.encode("utf-16-le")) // 2


def _weight(token: str) -> int:
    if token.startswith("&") and len(token) > 1:
        return 1
    return len(token.encode("utf-16-le")) // 2


def split_html(text: str, limit: int = 4096) -> list[str]:
    """Cut HTML into chunks of at most ``limit`` visible characters, tags balanced in each."""
    if visible_length(text) <= limit:
        return [text] if text.strip() else []
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    stack: list[tuple[str, str]] = []  # (name, opening tag as written)
    # (index, stack, length) just after the last line or word break
    cut: tuple[int, list[tuple[str, str]], int] | None = None

    def close(tags: list[tuple[str, str]]) -> str:
        return "".join(f"</{name}>" for name, _ in reversed(tags))

    def reopen(tags: list[tuple[str, str]]) -> str:
        return "".join(raw for _, raw in tags)

    for token in _TOKEN.findall(text):
        if token.startswith("<"):
            name_match = _TAG_NAME.match(token)
            name = name_match.group(1).lower() if name_match else ""
            if token.startswith("</"):
                if stack and stack[-1][0] == name:
                    stack.pop()
            elif not token.endswith("/>"):
                stack.append((name, token))
            current.append(token)
            continue
        weight = _weight(token)
        if length + weight > limit and length > 0:
            if cut is not None and cut[2] > limit // 2:
                index, cut_stack, cut_length = cut
            else:
                index, cut_stack, cut_length = len(current), list(stack), length
            head, tail = current[:index], current[index:]
            chunks.append("".join(head) + close(cut_stack))
            current = [reopen(cut_stack), *tail]
            length -= cut_length
            cut = None
        current.append(token)
        length += weight
        if token in ("\n", " "):
            cut = (len(current), list(stack), length)
    chunks.append("".join(current))
    return [c for c in chunks if html.unescape(re.sub(r"<[^>]*>", "", c)).strip()]
