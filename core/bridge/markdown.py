"""Markdown (as agents write it) to the small HTML subset chat platforms accept, and splitting.

Telegram's HTML parse mode accepts ``b i u s code pre a blockquote`` and the entities ``&lt;``,
``&gt;``, ``&amp;``, ``&quot;``. :func:`markdown_to_html` escapes every piece of text and only
ever emits balanced tags from that list, so whatever an agent writes (unbalanced ``*``, raw
``<``, half a link) renders instead of failing with "can't parse entities". HTML was picked over
MarkdownV2 because its escaping rule is three characters, not eighteen context-dependent ones.

:func:`split_html` cuts a long text into chunks of at most ``limit`` visible characters
(UTF-16 code units, which is how Telegram counts its 4096 limit), preferring line then word
boundaries, closing the tags open at a cut and reopening them in the next chunk.
"""

from __future__ import annotations

import html
import re

ALLOWED_SCHEMES = ("http://", "https://", "mailto:", "tg://")

_INLINE = re.compile(
    r"(?P<code>`+)(?P<code_body>.+?)(?P=code)"
    r"|\[(?P<link_text>[^\]\n]+)\]\((?P<link_url>[^)\s]+)\)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|__(?P<bold2>.+?)__"
    r"|~~(?P<strike>.+?)~~"
    r"|(?<![\w*])\*(?![\s*])(?P<italic>.+?)(?<![\s*])\*(?![\w*])"
    r"|(?<![\w_])_(?![\s_])(?P<italic2>.+?)(?<![\s_])_(?![\w_])"
)
_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")


def escape(text: str) -> str:
    """Escape text for HTML parse mode (``&``, ``<``, ``>`` and ``"``)."""
    return html.escape(text, quote=True).replace("&#x27;", "'")


def inline(text: str) -> str:
    """Inline Markdown of one line to HTML; anything unmatched stays literal (escaped)."""
    out: list[str] = []
    pos = 0
    for match in _INLINE.finditer(text):
        out.append(escape(text[pos:match.start()]))
        pos = match.end()
        groups = match.groupdict()
        if groups["code_body"] is not None:
            out.append(f"<code>{escape(groups['code_body'].strip())}</code>")
        elif groups["link_text"] is not None:
            url = groups["link_url"]
            label = inline(groups["link_text"])
            if url.lower().startswith(ALLOWED_SCHEMES):
                out.append(f'<a href="{escape(url)}">{label}</a>')
            else:
                out.append(f"{label} ({escape(url)})")
        elif groups["bold"] is not None or groups["bold2"] is not None:
            out.append(f"<b>{inline(groups['bold'] or groups['bold2'])}</b>")
        elif groups["strike"] is not None:
            out.append(f"<s>{inline(groups['strike'])}</s>")
        else:
            out.append(f"<i>{inline(groups['italic'] or groups['italic2'])}</i>")
    out.append(escape(text[pos:]))
    return "".join(out)


def markdown_to_html(text: str) -> str:
    """Markdown to Telegram-style HTML: fences, headings, quotes, bullets and inline marks."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    quote: list[str] = []
    i = 0

    def flush_quote() -> None:
        if quote:
            out.append("<blockquote>" + "\n".join(quote) + "</blockquote>")
            quote.clear()

    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush_quote()
            marker, lang = fence.group(1), fence.group(2)
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            i += 1  # the closing fence (or the end of an unclosed block)
            attr = f' class="language-{escape(lang)}"' if lang else ""
            out.append(f"<pre><code{attr}>{escape(chr(10).join(body))}</code></pre>")
            continue
        quoted = _QUOTE.match(line)
        if quoted:
            quote.append(inline(quoted.group(1)))
            i += 1
            continue
        flush_quote()
        heading = _HEADING.match(line)
        bullet = _BULLET.match(line)
        if heading:
            out.append(f"<b>{inline(heading.group(1))}</b>")
        elif bullet:
            out.append(f"{bullet.group(1)}• {inline(bullet.group(2))}")
        else:
            out.append(inline(line))
        i += 1
    flush_quote()
    return "\n".join(out)


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
