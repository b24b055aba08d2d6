"""A message body (Markdown, as agents and people write it) parsed once, safely, and written for
each surface: :func:`to_html` for the web page, :func:`to_text` for mail and terminals,
:func:`to_mrkdwn` for Slack, and (through :class:`Writer`) Telegram's HTML in
:mod:`meshhub.bridge.markdown`. Every surface reads the same parse, so a message shows the same
words, emphasis, code, lists and link targets wherever it is read.

The parse (:func:`parser`) decides what a peer's text may become:

* markdown-it-py's CommonMark parser with raw HTML **off**: ``<img onerror=...>`` or
  ``<script>`` in a message is shown as the text it is;
* links only to ``http``, ``https`` and ``mailto`` (a surface may add a scheme it needs, as
  Telegram adds ``tg``); any other link, ``javascript:`` or ``data:``, stays its source text;
* no images: ``![x](url)`` would make every reader fetch a URL of the sender's choice (a
  tracking pixel), so each surface writes it as a link;
* control and bidi characters become visible escapes (:mod:`meshhub.sanitize`), both as written
  and, in what each surface writes, as decoded from entities (``&#x202e;``), so U+202E cannot
  turn the rest of a line around.

Strikethrough and tables (GFM) are on; single newlines are kept as line breaks, which is how
people write chat messages. The web page's links open in a new tab with
``rel="noopener noreferrer nofollow"``, so the target learns nothing of the page and cannot reach
back into it.
"""

from __future__ import annotations

import functools
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.tree import SyntaxTreeNode

from .sanitize import for_terminal

LINK_SCHEMES = ("http://", "https://", "mailto:")
MAX_CACHED = 2048
RULE = "─" * 10


def _link_allowed(url: str, schemes: tuple[str, ...] = LINK_SCHEMES) -> bool:
    return url.strip().lower().startswith(schemes)


def _image_as_link(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env) or src
    if not _link_allowed(src):
        return escapeHtml(alt)
    return (f'<a href="{escapeHtml(src)}" target="_blank" rel="noopener noreferrer nofollow">'
            f"{escapeHtml(alt)}</a>")


def _link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    token.attrSet("target", "_blank")
    token.attrSet("rel", "noopener noreferrer nofollow")
    return str(self.renderToken(tokens, idx, options, env))


def _cell_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    """A table cell's alignment as a class (``align-right``): the page's Content-Security-Policy
    refuses inline styles, and a refused style is a console error in every reader's page."""
    token = tokens[idx]
    style = token.attrGet("style") or ""
    if style.startswith("text-align:"):
        token.attrs.pop("style")
        token.attrSet("class", "align-" + style.removeprefix("text-align:"))
    return str(self.renderToken(tokens, idx, options, env))


@functools.cache
def parser(schemes: tuple[str, ...] = LINK_SCHEMES) -> MarkdownIt:
    """The one Markdown parser every surface reads; ``schemes`` are the link schemes it keeps.
    Its HTML render rules are the web page's."""
    md = MarkdownIt("commonmark", {"html": False, "breaks": True})
    md.enable(["strikethrough", "table"])
    md.validateLink = functools.partial(_link_allowed, schemes=schemes)  # type: ignore[method-assign]
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("image", _image_as_link)
    md.add_render_rule("th_open", _cell_open)
    md.add_render_rule("td_open", _cell_open)
    return md


@functools.lru_cache(maxsize=MAX_CACHED)
def to_html(text: str) -> str:
    """``text`` as safe HTML for a web page (see the module docstring for what is allowed).
    Control characters are made visible before the parse and again after it, for those an
    entity decodes to. Cached: a message pushed to many browser tabs is rendered once."""
    return for_terminal(parser().render(for_terminal(text)))


def _plain(node: SyntaxTreeNode) -> str:
    """The words of an inline node without marks, links as ``label (url)``: a table cell or an
    image's description, where no surface allows marks."""
    if node.type in ("text", "code_inline"):
        return node.content
    if node.type in ("softbreak", "hardbreak"):
        return " "
    label = "".join(_plain(child) for child in node.children)
    if node.type == "link":
        return _labelled(label, str(node.attrs.get("href", "")))
    return label


def _labelled(label: str, url: str) -> str:
    return label if label in (url, url.removeprefix("mailto:")) else f"{label} ({url})"


class Writer:
    """Writes one message's parse as plain text, and walks it for every non-HTML surface: a
    subclass changes how a mark or a block looks, never the walk, so each surface keeps the
    same words in the same places.

    Sibling blocks are separated by a blank line where the author left one, by a line break
    otherwise, so a heading directly over a list stays directly over it. ``quotes`` counts the
    quotes around the block being written (Telegram cannot nest them)."""

    schemes: tuple[str, ...] = LINK_SCHEMES
    bullet = "- "

    def __init__(self, text: str) -> None:
        source = for_terminal(text)
        self.lines = source.split("\n")
        self.root = SyntaxTreeNode(parser(self.schemes).parse(source))
        self.quotes = 0

    def render(self) -> str:
        """The message for this surface; control characters decoded from entities made visible
        like those written."""
        return for_terminal(self.blocks(self.root.children))

    # -- how each piece looks (plain text here) ----------------------------------------------
    def escape(self, text: str) -> str:
        return text

    def strong(self, inner: str) -> str:
        return inner

    def em(self, inner: str) -> str:
        return inner

    def strike(self, inner: str) -> str:
        return inner

    def code(self, text: str) -> str:
        return self.escape(text)

    def link(self, url: str, label: str) -> str:
        return _labelled(label, url)

    def heading(self, inner: str) -> str:
        return inner

    def quote(self, inner: str) -> str:
        return "\n".join(self.escape("> ") + line for line in inner.split("\n"))

    def fence(self, code: str, lang: str) -> str:
        return self.preformatted(code)

    def preformatted(self, text: str) -> str:
        return self.escape(text)

    def rule(self) -> str:
        return RULE

    # -- the walk ----------------------------------------------------------------------------
    def blocks(self, nodes: list[SyntaxTreeNode]) -> str:
        return self._stacked([(node, self.block(node)) for node in nodes])

    def _stacked(self, written: list[tuple[SyntaxTreeNode, str]]) -> str:
        out: list[str] = []
        for node, text in written:
            if out:
                out.append("\n\n" if self._after_blank_line(node) else "\n")
            out.append(text)
        return "".join(out)

    def _after_blank_line(self, node: SyntaxTreeNode) -> bool:
        start = node.map[0] if node.map else 0
        return start > 0 and not self.lines[start - 1].strip(" \t>")

    def block(self, node: SyntaxTreeNode) -> str:
        kind = node.type
        if kind == "paragraph":
            return self.inline(node.children[0])
        if kind == "heading":
            return self.heading(self.inline(node.children[0]))
        if kind == "blockquote":
            self.quotes += 1
            inner = self.blocks(node.children)
            self.quotes -= 1
            return self.quote(inner)
        if kind in ("bullet_list", "ordered_list"):
            return self.items(node)
        if kind in ("fence", "code_block"):
            lang = (node.info.split() or [""])[0]
            return self.fence(node.content.removesuffix("\n"), lang)
        if kind == "hr":
            return self.rule()
        if kind == "table":
            return self.preformatted(_table(node))
        return self.escape(node.content)

    def items(self, node: SyntaxTreeNode) -> str:
        """A list as marked lines; an item's further lines are indented under its first."""
        start = int(node.attrs.get("start", 1))
        ordered = node.type == "ordered_list"
        return self._stacked([
            (item, self._item(f"{number}. " if ordered else self.bullet, item))
            for number, item in enumerate(node.children, start)])

    def _item(self, marker: str, item: SyntaxTreeNode) -> str:
        first, *rest = self.blocks(item.children).split("\n")
        indent = " " * len(marker)
        return "\n".join([marker + first, *(indent + line if line else line for line in rest)])

    def inline(self, node: SyntaxTreeNode) -> str:
        return "".join(self.span(child) for child in node.children)

    def span(self, node: SyntaxTreeNode) -> str:
        kind = node.type
        if kind in ("softbreak", "hardbreak"):
            return "\n"
        if kind == "code_inline":
            return self.code(node.content)
        if kind == "strong":
            return self.strong(self.inline(node))
        if kind == "em":
            return self.em(self.inline(node))
        if kind == "s":
            return self.strike(self.inline(node))
        if kind == "link":
            return self.link(str(node.attrs.get("href", "")), self.inline(node))
        if kind == "image":
            src = str(node.attrs.get("src", ""))
            alt = self.escape(_plain(node) or src)
            return self.link(src, alt) if _link_allowed(src, self.schemes) else alt
        return self.escape(node.content)


def _table(node: SyntaxTreeNode) -> str:
    """A table as aligned columns of plain text, a rule under the header row."""
    rows = [[_plain(cell.children[0]) if cell.children else "" for cell in row.children]
            for section in node.children for row in section.children]
    header = rows[0]
    aligns = [str(cell.attrs.get("style", "")) for cell in node.children[0].children[0].children]
    widths = [max(len(row[col]) if col < len(row) else 0 for row in rows)
              for col in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [_align(row[col] if col < len(row) else "", widths[col], aligns[col])
                 for col in range(len(header))]
        return " | ".join(cells).rstrip()

    ruler = "-+-".join("-" * width for width in widths)
    return "\n".join([line(header), ruler, *(line(row) for row in rows[1:])])


def _align(text: str, width: int, style: str) -> str:
    if "right" in style:
        return text.rjust(width)
    if "center" in style:
        return text.center(width)
    return text.ljust(width)


class Mrkdwn(Writer):
    """Slack's mrkdwn. Slack has no escape for ``*``, ``_`` or ``~``; only ``&``, ``<`` and
    ``>`` are escaped, as Slack requires, so no text can become a link or a mention."""

    bullet = "• "

    def escape(self, text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def strong(self, inner: str) -> str:
        return f"*{inner}*"

    def em(self, inner: str) -> str:
        return f"_{inner}_"

    def strike(self, inner: str) -> str:
        return f"~{inner}~"

    def code(self, text: str) -> str:
        return f"`{self.escape(text)}`"

    def link(self, url: str, label: str) -> str:
        return f"<{self.escape(url)}|{label}>"

    def heading(self, inner: str) -> str:
        return f"*{inner}*"

    def quote(self, inner: str) -> str:
        return "\n".join("> " + line for line in inner.split("\n"))

    def preformatted(self, text: str) -> str:
        return f"```\n{self.escape(text)}\n```"


def to_text(text: str) -> str:
    """``text`` as plain text for mail and terminals: marks dropped, links as ``label (url)``,
    code as written, lists as ``- `` lines, control and bidi characters visible."""
    return Writer(text).render()


def to_mrkdwn(text: str) -> str:
    """``text`` as Slack mrkdwn: ``*bold*``, ``_italic_``, ``~strike~``, code, fences,
    ``<url|label>`` links, ``• `` lists, headings bold."""
    return Mrkdwn(text).render()
